// Package bundle packs a process function's folder into a .tar.gz and
// unpacks .tar.gz and .zip bundles safely: no entry lands outside the
// target folder, no link points out of it, and the size, the number of
// files and the compression ratio are bounded. A violation is an error
// that names the entry.
package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Limits bound what a bundle may unpack to.
type Limits struct {
	// MaxBytes bounds the files' total size.
	MaxBytes int64
	// MaxFiles bounds the entries.
	MaxFiles int
	// MaxRatio bounds the total size over the bundle's size, once the
	// total passes 1 MiB (a zip bomb expands a thousandfold).
	MaxRatio int64
}

// DefaultLimits are a process function's.
var DefaultLimits = Limits{MaxBytes: 512 << 20, MaxFiles: 20000, MaxRatio: 200}

// ratioFloor is the size below which the compression ratio is not checked.
const ratioFloor = 1 << 20

// Format is a bundle's kind, found from its first bytes.
type Format int

// Formats.
const (
	Unknown Format = iota
	TarGz
	Zip
)

// Detect returns the format of b.
func Detect(b []byte) Format {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return TarGz
	case bytes.HasPrefix(b, []byte("PK\x03\x04")), bytes.HasPrefix(b, []byte("PK\x05\x06")):
		return Zip
	}
	return Unknown
}

// Error is a bundle that cannot be unpacked.
type Error struct {
	Entry  string // empty for the bundle as a whole
	Reason string
}

func (e *Error) Error() string {
	if e.Entry == "" {
		return "bundle: " + e.Reason
	}
	return fmt.Sprintf("bundle entry %q: %s", e.Entry, e.Reason)
}

func entryErr(name, format string, args ...any) error {
	return &Error{Entry: strings.ToValidUTF8(name, "\uFFFD"), Reason: fmt.Sprintf(format, args...)}
}

// Unpack writes the bundle b into dir, which must exist and be empty.
func Unpack(b []byte, dir string, lim Limits) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	u := &unpacker{root: root, lim: lim, size: int64(len(b)), seen: map[string]bool{}, real: map[string]bool{}}
	switch Detect(b) {
	case TarGz:
		err = u.tarGz(b)
	case Zip:
		err = u.zip(b)
	default:
		return &Error{Reason: "not a .tar.gz or .zip file"}
	}
	if err != nil {
		// Leave nothing half-unpacked, least of all a link that points out.
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			root.RemoveAll(e.Name())
		}
	}
	return err
}

// cappedReader reads up to left bytes from r, and then fails, with left
// set to -1.
type cappedReader struct {
	r    io.Reader
	left int64
}

var errCapped = errors.New("the archive inflates too far")

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.left = -1
		return 0, errCapped
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

type unpacker struct {
	root  *os.Root
	lim   Limits
	size  int64 // of the bundle
	total int64 // bytes written
	files int
	seen  map[string]bool
	links [][2]string     // name, target
	real  map[string]bool // folders known to be real folders, not links
}

// Bounds of one entry's name: Linux takes paths of 4096 bytes, but a name
// of a thousand bytes or folders sixty-four deep is no program's layout,
// and each folder of a path costs a check.
const (
	maxNameBytes = 1024
	maxDepth     = 64
)

func (u *unpacker) tarGz(b []byte) error {
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return &Error{Reason: "not a valid gzip stream: " + err.Error()}
	}
	// Headers count too: records that hold only headers (PAX, global
	// ones) cost the reader as files do, and a few MiB of gzip once
	// inflated to gigabytes of them.
	streamCap := u.budget() + int64(u.lim.MaxFiles+1)*3*512
	zr := &cappedReader{r: gz, left: streamCap}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if zr.left < 0 {
			return &Error{Reason: fmt.Sprintf("the archive inflates to more than %s, files and headers together", sizeString(streamCap))}
		}
		if err == io.EOF {
			// Read to the gzip trailer: its checksum covers everything.
			// What follows the archive counts against the same budget.
			budget := u.budget()
			n, err := io.Copy(io.Discard, io.LimitReader(zr, budget+1))
			if err != nil {
				return &Error{Reason: "not a valid gzip stream: " + err.Error()}
			}
			if n > budget {
				return &Error{Reason: "the bundle holds too much data after the archive's end"}
			}
			return u.finish()
		}
		if err != nil {
			return &Error{Reason: "not a valid tar archive: " + err.Error()}
		}
		var kind entryKind
		switch h.Typeflag {
		case tar.TypeReg:
			kind = file
		case tar.TypeDir:
			kind = dir
		case tar.TypeSymlink:
			kind = symlink
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeLink:
			return entryErr(h.Name, "hard links are not allowed")
		default:
			return entryErr(h.Name, "only files, folders and symbolic links are allowed")
		}
		if err := u.entry(h.Name, kind, fs.FileMode(h.Mode), h.Linkname, tr); err != nil {
			return err
		}
	}
}

func (u *unpacker) zip(b []byte) error {
	// The reader takes the whole central directory into memory, some 260
	// bytes an entry: a 64 MiB zip of a million tiny records cost 380 MiB
	// before the entries were counted. Records the count skips ("./")
	// leave some slack; past it, the zip is refused unread.
	slack := 2*u.lim.MaxFiles + 100
	if n, ok := zipEntries(b, slack); ok && n > slack {
		return &Error{Reason: fmt.Sprintf("the bundle has more than %d entries, far more than the %d allowed", slack, u.lim.MaxFiles)}
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return &Error{Reason: "not a valid zip archive: " + err.Error()}
	}
	for _, f := range zr.File {
		mode := f.Mode()
		var (
			kind   entryKind
			target string
		)
		switch {
		case mode.IsDir():
			kind = dir
		case mode&fs.ModeSymlink != 0:
			kind = symlink
			t, err := readAllLimited(f, 4096)
			if err != nil {
				return entryErr(f.Name, "cannot read the link's target: %v", err)
			}
			target = string(t)
		case mode.IsRegular():
			kind = file
		default:
			return entryErr(f.Name, "only files, folders and symbolic links are allowed")
		}
		if err := u.zipEntry(f, kind, target); err != nil {
			return err
		}
	}
	return u.finish()
}

// zipEntries counts a zip's central directory records as archive/zip
// finds them (it reads records from where the end record points until one
// does not parse, whatever count the end record declares), stopping past
// limit; false if it finds no end record.
func zipEntries(b []byte, limit int) (int, bool) {
	const eocdLen, locatorLen, zip64EndLen, headerLen = 22, 20, 56, 46
	u16 := func(i uint64) uint64 { return uint64(binary.LittleEndian.Uint16(b[i:])) }
	u32 := func(i uint64) uint64 { return uint64(binary.LittleEndian.Uint32(b[i:])) }
	u64 := func(i uint64) uint64 { return binary.LittleEndian.Uint64(b[i:]) }
	size := uint64(len(b))
	end := -1
	for i := len(b) - eocdLen; i >= 0 && i >= len(b)-65*1024; i-- {
		if u32(uint64(i)) == 0x06054b50 {
			end = i
			break
		}
	}
	if end < 0 {
		return 0, false
	}
	// The directory the end record names, and the one its zip64 record
	// names, which the reader takes or not by fields of its own (the
	// disks'): both are counted, and the larger count holds, so that no
	// field the count overlooks can point it at an empty directory while
	// the reader takes a full one.
	type directory struct{ size, off, end uint64 }
	endOff := uint64(end)
	dirs := []directory{{u32(endOff + 12), u32(endOff + 16), endOff}}
	if endOff >= locatorLen && u32(endOff-locatorLen) == 0x07064b50 {
		if p := u64(endOff - locatorLen + 8); p <= size && size-p >= zip64EndLen && u32(p) == 0x06064b50 {
			dirs = append(dirs, directory{u64(p + 40), u64(p + 48), p})
		}
	}
	most, found := 0, false
	for _, d := range dirs {
		if d.size > d.end {
			continue // the reader refuses it
		}
		start := d.end - d.size // the directory, where the end record says it ends
		if start > d.off && d.off <= size-4 && u32(d.off) == 0x02014b50 {
			start = d.off // as the reader does, for a base offset that looks wrong
		}
		n := 0
		for p := start; p+headerLen <= size && u32(p) == 0x02014b50 && n <= limit; n++ {
			p += headerLen + u16(p+28) + u16(p+30) + u16(p+32)
		}
		most, found = max(most, n), true
	}
	return most, found
}

func (u *unpacker) zipEntry(f *zip.File, kind entryKind, target string) error {
	var r io.Reader
	if kind == file {
		rc, err := f.Open()
		if err != nil {
			return entryErr(f.Name, "cannot read: %v", err)
		}
		defer rc.Close()
		r = rc
	}
	return u.entry(f.Name, kind, f.Mode(), target, r)
}

func readAllLimited(f *zip.File, n int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, n+1))
	if err == nil && int64(len(b)) > n {
		err = errors.New("too long")
	}
	return b, err
}

type entryKind int

const (
	file entryKind = iota
	dir
	symlink
)

// cleanName returns name as a clean relative path, or an error if it is
// absolute or climbs out.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) || strings.Contains(name, `\`) {
		return "", errors.New("the name is empty or holds a NUL or backslash")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute paths are not allowed")
	}
	if len(name) > maxNameBytes {
		return "", fmt.Errorf("the name is longer than %d bytes", maxNameBytes)
	}
	parts := strings.Split(strings.TrimSuffix(name, "/"), "/")
	if len(parts) > maxDepth {
		return "", fmt.Errorf("the path is more than %d folders deep", maxDepth)
	}
	for _, part := range parts {
		if part == ".." {
			return "", errors.New("paths that climb out of the bundle (..) are not allowed")
		}
	}
	return path.Clean(name), nil
}

func (u *unpacker) entry(name string, kind entryKind, mode fs.FileMode, target string, r io.Reader) error {
	clean, err := cleanName(name)
	if err != nil {
		return entryErr(name, "%v", err)
	}
	if clean == "." {
		return nil // the root folder itself
	}
	if u.files++; u.files > u.lim.MaxFiles {
		return entryErr(name, "the bundle has more than %d entries", u.lim.MaxFiles)
	}
	if u.seen[clean] {
		return entryErr(name, "the entry appears twice")
	}
	u.seen[clean] = true
	link, missing := u.checkFolders(path.Dir(clean))
	if link != "" {
		return entryErr(name, "its folder %s is a symbolic link: entries must be unpacked in real folders", link)
	}
	// The folders an entry's path makes count as entries too.
	if u.files += missing; u.files > u.lim.MaxFiles {
		return entryErr(name, "the bundle has more than %d entries, counting the folders their paths make", u.lim.MaxFiles)
	}
	if parent := path.Dir(clean); parent != "." {
		if err := u.root.MkdirAll(parent, 0o755); err != nil {
			return entryErr(name, "cannot create its folder: %v", unwrapPath(err))
		}
	}
	switch kind {
	case dir:
		if err := u.root.MkdirAll(clean, 0o755); err != nil {
			return entryErr(name, "cannot create the folder: %v", unwrapPath(err))
		}
	case symlink:
		if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
			return entryErr(name, "the link's target %q must be a relative path inside the bundle", target)
		}
		if err := u.root.Symlink(target, clean); err != nil {
			return entryErr(name, "cannot create the link: %v", unwrapPath(err))
		}
		u.links = append(u.links, [2]string{clean, target})
	case file:
		perm := fs.FileMode(0o644)
		if mode&0o111 != 0 {
			perm = 0o755 // executable by all; never setuid, never writable by others
		}
		f, err := u.root.OpenFile(clean, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return entryErr(name, "cannot create the file: %v", unwrapPath(err))
		}
		err = u.copy(name, f, r)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := u.root.Chmod(clean, perm); err != nil { // umask may have narrowed it
			return entryErr(name, "cannot set its mode: %v", unwrapPath(err))
		}
	}
	return nil
}

// checkFolders returns the first folder of dir, a clean relative path,
// that is a symbolic link on disk, or "", and how many of dir's folders do
// not exist yet. Each folder is looked at once per bundle.
func (u *unpacker) checkFolders(dir string) (link string, missing int) {
	if dir == "." {
		return "", 0
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if u.real[p] {
			continue // once a real folder, always one: a link cannot replace it
		}
		fi, err := u.root.Lstat(p)
		if err != nil {
			return "", len(parts) - i // this folder and those below it are made
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return p, 0
		}
		u.real[p] = true
	}
	return "", 0
}

// finish ends an unpacking: every folder gets mode 0755, whatever the
// server's umask made of it (under 077 the sandbox's user could not enter
// one), and every link is checked.
func (u *unpacker) finish() error {
	err := fs.WalkDir(u.root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return u.root.Chmod(name, 0o755)
	})
	if err != nil {
		return fmt.Errorf("bundle: cannot set its folders' modes: %w", err)
	}
	return u.checkLinks()
}

// checkLinks makes sure, once every entry is on disk, that each link
// resolves inside the bundle: its target is walked a component at a time
// from the link's folder, and may neither climb above the bundle nor pass
// through another link (whose own target is checked on its own).
func (u *unpacker) checkLinks() error {
	for _, l := range u.links {
		name, target := l[0], l[1]
		var stack []string
		if dir := path.Dir(name); dir != "." {
			stack = strings.Split(dir, "/")
		}
		parts := strings.Split(target, "/")
		for i, part := range parts {
			switch part {
			case "", ".":
				continue
			case "..":
				if len(stack) == 0 {
					return entryErr(name, "the link's target %q points outside the bundle", target)
				}
				stack = stack[:len(stack)-1]
				continue
			}
			stack = append(stack, part)
			if i == len(parts)-1 {
				break
			}
			if fi, err := u.root.Lstat(strings.Join(stack, "/")); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return entryErr(name, "the link's target %q passes through another link (%s)", target, strings.Join(stack, "/"))
			}
		}
	}
	return nil
}

// budget is how many more bytes the bundle may unpack to.
func (u *unpacker) budget() int64 {
	return min(u.lim.MaxBytes, max(ratioFloor, u.lim.MaxRatio*u.size)) - u.total
}

func (u *unpacker) copy(name string, w io.Writer, r io.Reader) error {
	budget := u.budget()
	n, err := io.Copy(w, io.LimitReader(r, budget+1))
	u.total += n
	if err != nil {
		return entryErr(name, "cannot unpack: %v", err)
	}
	if n > budget {
		if u.total > u.lim.MaxBytes {
			return entryErr(name, "the bundle unpacks to more than %s", sizeString(u.lim.MaxBytes))
		}
		return entryErr(name, "the bundle expands more than %d times its size: a compression bomb?", u.lim.MaxRatio)
	}
	return nil
}

func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// unwrapPath drops the *PathError's operation and path: the entry's name
// is in the message already, and the host's folder must not be.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// Pack returns dir as a .tar.gz: its files, folders and symbolic links,
// without version-control folders, owners or times (the same files make
// the same bytes).
func Pack(dir string) ([]byte, error) {
	// A root that is a symbolic link is followed (the walk would not).
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".hg") {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("bundle: %s is not a file, folder or symbolic link", p)
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.Uname, h.Gname, h.Uid, h.Gid = "", "", 0, 0
		// No times: the same files make the same bundle, so that a deploy
		// of a folder whose files were only touched adds no version.
		h.ModTime, h.AccessTime, h.ChangeTime = time.Unix(0, 0), time.Time{}, time.Time{}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
