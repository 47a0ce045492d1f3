package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Building archives in memory.

// kind is an entry's type, common to both formats.
type kind int

const (
	kFile kind = iota
	kDir
	kSymlink
	kHardlink // tar only
	kChar
	kBlock
	kFifo
	kSocket // zip only
)

// ent is one archive entry. For a symlink or a hard link, body is the
// target.
type ent struct {
	name string
	kind kind
	mode int64 // permission bits (and setuid & co.); 0 means 0644 / 0755
	body string
}

func aFile(name, body string) ent   { return ent{name: name, kind: kFile, body: body} }
func aDir(name string) ent          { return ent{name: name, kind: kDir} }
func aLink(name, target string) ent { return ent{name: name, kind: kSymlink, body: target} }

func (e ent) perm() int64 {
	if e.mode != 0 {
		return e.mode
	}
	if e.kind == kDir {
		return 0o755
	}
	return 0o644
}

// tarGz builds a .tar.gz holding ents, in order.
func tarGz(tb testing.TB, ents ...ent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Mode: e.perm(), Format: tar.FormatPAX}
		switch e.kind {
		case kFile:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		case kDir:
			h.Typeflag = tar.TypeDir
		case kSymlink:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.body
		case kHardlink:
			h.Typeflag, h.Linkname = tar.TypeLink, e.body
		case kChar:
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, 1, 3
		case kBlock:
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeBlock, 8, 0
		case kFifo:
			h.Typeflag = tar.TypeFifo
		default:
			tb.Fatalf("tar cannot hold a %v entry", e.kind)
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.kind == kFile {
			if _, err := io.WriteString(tw, e.body); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// zipOf builds a .zip holding ents, in order; files alternate between
// Store and Deflate.
func zipOf(tb testing.TB, ents ...ent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i, e := range ents {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if i%2 == 1 {
			h.Method = zip.Store
		}
		perm := fs.FileMode(e.perm()) & fs.ModePerm
		if e.perm()&0o4000 != 0 {
			perm |= fs.ModeSetuid
		}
		if e.perm()&0o2000 != 0 {
			perm |= fs.ModeSetgid
		}
		switch e.kind {
		case kFile:
			h.SetMode(perm)
		case kDir:
			h.SetMode(fs.ModeDir | perm)
		case kSymlink:
			h.SetMode(fs.ModeSymlink | 0o777)
		case kChar:
			h.SetMode(fs.ModeDevice | fs.ModeCharDevice | perm)
		case kBlock:
			h.SetMode(fs.ModeDevice | perm)
		case kFifo:
			h.SetMode(fs.ModeNamedPipe | perm)
		case kSocket:
			h.SetMode(fs.ModeSocket | perm)
		default:
			tb.Fatalf("zip cannot hold a %v entry", e.kind)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			tb.Fatalf("zip header %q: %v", e.name, err)
		}
		if e.kind == kFile || e.kind == kSymlink {
			if _, err := io.WriteString(w, e.body); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

type format struct {
	name  string
	build func(testing.TB, ...ent) []byte
	holds func(kind) bool
}

var formats = []format{
	{"tar.gz", tarGz, func(k kind) bool { return k != kSocket }},
	{"zip", zipOf, func(k kind) bool { return k != kHardlink }},
}

// randomBytes returns n incompressible, reproducible bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// ---------------------------------------------------------------------------
// A sandbox: a parent folder holding the target "out" and a sibling whose
// contents must never change.

type sandbox struct {
	parent, target string
	before         map[string]string
}

func newSandbox(tb testing.TB) *sandbox {
	tb.Helper()
	parent := tb.TempDir()
	if p, err := filepath.EvalSymlinks(parent); err == nil {
		parent = p
	}
	s := &sandbox{parent: parent, target: filepath.Join(parent, "out")}
	if err := os.Mkdir(s.target, 0o755); err != nil {
		tb.Fatal(err)
	}
	s.populate(tb)
	return s
}

// populate makes the sandbox's files outside the target and notes them.
func (s *sandbox) populate(tb testing.TB) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Join(s.parent, "sibling", "nested"), 0o755); err != nil {
		tb.Fatal(err)
	}
	for name, body := range map[string]string{
		"sibling/keep":        "keep me",
		"sibling/nested/keep": "keep me too",
		"passwd":              "root:x:0:0",
	} {
		if err := os.WriteFile(filepath.Join(s.parent, name), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	s.before = s.outside(tb)
}

// outside describes everything in the parent but outside the target.
func (s *sandbox) outside(tb testing.TB) map[string]string {
	tb.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(s.parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == s.target {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := info.Mode().String()
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			desc += " -> " + t
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		}
		m[p] = desc
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// problems lists what Unpack did wrong to the file system: anything
// changed outside the target, or any path under the target that resolves
// outside it.
func (s *sandbox) problems(tb testing.TB) []string {
	tb.Helper()
	var probs []string
	after := s.outside(tb)
	for p, d := range after {
		if b, ok := s.before[p]; !ok {
			probs = append(probs, fmt.Sprintf("created outside the target: %s (%s)", p, d))
		} else if b != d {
			probs = append(probs, fmt.Sprintf("changed outside the target: %s (%s, was %s)", p, d, b))
		}
	}
	for p := range s.before {
		if _, ok := after[p]; !ok {
			probs = append(probs, "removed outside the target: "+p)
		}
	}
	probs = append(probs, escapes(s.target)...)
	sort.Strings(probs)
	return probs
}

// escapes lists the paths under root that, once their symbolic links are
// followed, lie outside root.
func escapes(root string) []string {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return []string{"cannot resolve the target: " + err.Error()}
	}
	var probs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			probs = append(probs, "cannot walk the target: "+err.Error())
			return nil
		}
		r, err := filepath.EvalSymlinks(p)
		if err != nil { // a dangling link or a loop: resolve by hand
			var ok bool
			if r, ok = resolve(p); !ok {
				return nil // a loop: the kernel refuses to follow it
			}
		}
		if !within(realRoot, r) {
			l, _ := os.Readlink(p)
			probs = append(probs, fmt.Sprintf("%s (-> %q) resolves outside the target, to %s",
				strings.TrimPrefix(p, root+string(filepath.Separator)), l, r))
		}
		return nil
	})
	return probs
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// resolve follows the symbolic links in the absolute path p as the kernel
// would, keeping the part that does not exist as it is. ok is false for a
// loop.
func resolve(p string) (_ string, ok bool) {
	rest := strings.Split(filepath.ToSlash(p), "/")
	cur := string(filepath.Separator)
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		info, err := os.Lstat(next)
		if err != nil || info.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 255 {
			return "", false
		}
		t, err := os.Readlink(next)
		if err != nil {
			return "", false
		}
		if filepath.IsAbs(t) {
			cur = string(filepath.Separator)
		}
		rest = append(strings.Split(filepath.ToSlash(t), "/"), rest...)
	}
	return cur, true
}

// ---------------------------------------------------------------------------
// Checking errors.

// errProblem returns what is wrong with err, which should be an *Error
// naming entry with a reason holding reason; "" if nothing.
func errProblem(err error, entry, reason string) string {
	if err == nil {
		return fmt.Sprintf("Unpack succeeded, want an error on entry %q (%s)", entry, reason)
	}
	var be *Error
	if !errors.As(err, &be) {
		return fmt.Sprintf("error %v is a %T, want a *bundle.Error", err, err)
	}
	if be.Entry != entry {
		return fmt.Sprintf("error %q names entry %q, want %q", err, be.Entry, entry)
	}
	if !strings.Contains(be.Reason, reason) {
		return fmt.Sprintf("error %q: reason %q does not say %q", err, be.Reason, reason)
	}
	if be.Entry != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", be.Entry)) {
		return fmt.Sprintf("error message %q does not name the entry", err)
	}
	return ""
}

// leftovers lists what a failed Unpack left in the target, which must
// still be there, an empty folder.
func (s *sandbox) leftovers() []string {
	info, err := os.Lstat(s.target)
	if err != nil {
		return []string{"after a failed Unpack, the target is gone: " + err.Error()}
	}
	if !info.IsDir() {
		return []string{fmt.Sprintf("after a failed Unpack, the target is a %v, want a folder", info.Mode().Type())}
	}
	var probs []string
	filepath.WalkDir(s.target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			probs = append(probs, "cannot walk the target: "+err.Error())
			return nil
		}
		if p != s.target {
			rel := filepath.ToSlash(strings.TrimPrefix(p, s.target+string(filepath.Separator)))
			probs = append(probs, fmt.Sprintf("after a failed Unpack, the target still holds %s (%v)", rel, d.Type()))
		}
		return nil
	})
	return probs
}

// failure lists what is wrong after an Unpack that should have failed on
// entry ("" for the bundle as a whole) for reason: the error, anything
// left in the target after the error, anything changed outside it.
func (s *sandbox) failure(tb testing.TB, err error, entry, reason string) []string {
	tb.Helper()
	var probs []string
	if p := errProblem(err, entry, reason); p != "" {
		probs = append(probs, p)
	}
	if err != nil {
		probs = append(probs, s.leftovers()...)
	}
	return append(probs, s.problems(tb)...)
}

// report fails t with probs.
func report(t *testing.T, probs []string) {
	t.Helper()
	if len(probs) > 0 {
		t.Error(strings.Join(probs, "\n"))
	}
}

// ---------------------------------------------------------------------------
// Tests.

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want Format
	}{
		{"tar.gz", tarGz(t, aFile("a", "x")), TarGz},
		{"empty tar.gz", tarGz(t), TarGz},
		{"gzip magic only", []byte{0x1f, 0x8b}, TarGz},
		{"zip", zipOf(t, aFile("a", "x")), Zip},
		{"empty zip", zipOf(t), Zip},
		{"zip local header magic only", []byte("PK\x03\x04"), Zip},
		{"nil", nil, Unknown},
		{"empty", []byte{}, Unknown},
		{"half the gzip magic", []byte{0x1f}, Unknown},
		{"text", []byte("hello, world"), Unknown},
		{"plain tar", plainTar(t), Unknown},
		{"spanned zip marker", []byte("PK\x07\x08"), Unknown},
		{"gzip magic not at the start", append([]byte{0}, tarGz(t)...), Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Detect(tt.b); got != tt.want {
				t.Errorf("Detect = %v, want %v", got, tt.want)
			}
		})
	}
}

func plainTar(tb testing.TB) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}); err != nil {
		tb.Fatal(err)
	}
	tw.Write([]byte("x"))
	tw.Close()
	return buf.Bytes()
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Reason: "not a .tar.gz or .zip file"}, "bundle: not a .tar.gz or .zip file"},
		{&Error{Entry: "../evil", Reason: "climbs out"}, `bundle entry "../evil": climbs out`},
		{&Error{Entry: "a\nb", Reason: "r"}, `bundle entry "a\nb": r`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// want describes one unpacked path.
type want struct {
	kind kind
	perm fs.FileMode // files only
	body string      // a file's content, a link's target
}

// checkTree compares the tree under root with w (paths slash-separated,
// relative to root) and returns the differences.
func checkTree(root string, w map[string]want) []string {
	var probs []string
	got := map[string]bool{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			probs = append(probs, err.Error())
			return nil
		}
		if p == root {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		got[rel] = true
		ww, ok := w[rel]
		if !ok {
			probs = append(probs, "unexpected path "+rel)
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			probs = append(probs, err.Error())
			return nil
		}
		m := info.Mode()
		if m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			probs = append(probs, fmt.Sprintf("%s has mode %v: setuid, setgid or sticky", rel, m))
		}
		switch ww.kind {
		case kFile:
			if !m.IsRegular() {
				probs = append(probs, fmt.Sprintf("%s is a %v, want a file", rel, m.Type()))
				break
			}
			if m.Perm() != ww.perm {
				probs = append(probs, fmt.Sprintf("%s has mode %v, want %v", rel, m.Perm(), ww.perm))
			}
			if b, _ := os.ReadFile(p); string(b) != ww.body {
				probs = append(probs, fmt.Sprintf("%s holds %q, want %q", rel, b, ww.body))
			}
		case kDir:
			if !m.IsDir() {
				probs = append(probs, fmt.Sprintf("%s is a %v, want a folder", rel, m.Type()))
			} else if m.Perm()&0o022 != 0 {
				probs = append(probs, fmt.Sprintf("folder %s has mode %v: writable by group or others", rel, m.Perm()))
			}
		case kSymlink:
			if m&fs.ModeSymlink == 0 {
				probs = append(probs, fmt.Sprintf("%s is a %v, want a symbolic link", rel, m.Type()))
			} else if l, _ := os.Readlink(p); l != ww.body {
				probs = append(probs, fmt.Sprintf("%s -> %q, want -> %q", rel, l, ww.body))
			}
		}
		return nil
	})
	for rel := range w {
		if !got[rel] {
			probs = append(probs, "missing "+rel)
		}
	}
	sort.Strings(probs)
	return probs
}

func TestUnpackNormal(t *testing.T) {
	ents := []ent{
		aDir("./"), // the root itself: skipped
		aFile("README.md", "# hello\n"),
		aDir("bin/"),
		{name: "bin/run", kind: kFile, mode: 0o755, body: "#!/bin/sh\necho hi\n"},
		{name: "bin/only-owner-exec", kind: kFile, mode: 0o700, body: "x"},
		{name: "bin/suid", kind: kFile, mode: 0o4777, body: "suid"},
		{name: "bin/sgid", kind: kFile, mode: 0o2775, body: "sgid"},
		{name: "conf/app.yaml", kind: kFile, mode: 0o666, body: "a: 1\n"}, // no folder entry before it
		{name: "conf/secret", kind: kFile, mode: 0o600, body: "s3cr3t"},
		{name: "conf/sticky", kind: kFile, mode: 0o1646, body: "t"},
		aDir("deep/a/b/"),
		aFile("./deep/a/b/c.txt", "c"),
		aFile("deep/x/y/z.txt", "z"),
		aFile("empty", ""),
		aFile("unicode-é.txt", "é"),
		aLink("docs", "conf"),
		aLink("bin/readme", "../README.md"),
		aLink("deep/a/b/up", "../../.."),
		aLink("self", "."),
		aLink("dangling", "not-yet"),
		aFile("not-yet", "now"),
		aLink("chain", "docs"),                  // a link to a link: allowed as the last component
		aLink("deep/x/c", "../a/b/c.txt"),       // through real folders only
		aLink("deep/x/y/back", "../../../bin/"), // a trailing slash on a real folder
		{name: "wide-dir/", kind: kDir, mode: 0o777},
		aDir("docsx/"), // shares a prefix with the link docs, but is a real folder
		aFile("docsx/f", "f"),
	}
	tree := map[string]want{
		"README.md":           {kFile, 0o644, "# hello\n"},
		"bin":                 {kind: kDir},
		"bin/run":             {kFile, 0o755, "#!/bin/sh\necho hi\n"},
		"bin/only-owner-exec": {kFile, 0o755, "x"},
		"bin/suid":            {kFile, 0o755, "suid"},
		"bin/sgid":            {kFile, 0o755, "sgid"},
		"conf":                {kind: kDir},
		"conf/app.yaml":       {kFile, 0o644, "a: 1\n"},
		"conf/secret":         {kFile, 0o644, "s3cr3t"},
		"conf/sticky":         {kFile, 0o644, "t"},
		"deep":                {kind: kDir},
		"deep/a":              {kind: kDir},
		"deep/a/b":            {kind: kDir},
		"deep/a/b/c.txt":      {kFile, 0o644, "c"},
		"deep/a/b/up":         {kind: kSymlink, body: "../../.."},
		"deep/x":              {kind: kDir},
		"deep/x/y":            {kind: kDir},
		"deep/x/y/z.txt":      {kFile, 0o644, "z"},
		"empty":               {kFile, 0o644, ""},
		"unicode-é.txt":       {kFile, 0o644, "é"},
		"docs":                {kind: kSymlink, body: "conf"},
		"bin/readme":          {kind: kSymlink, body: "../README.md"},
		"self":                {kind: kSymlink, body: "."},
		"dangling":            {kind: kSymlink, body: "not-yet"},
		"not-yet":             {kFile, 0o644, "now"},
		"chain":               {kind: kSymlink, body: "docs"},
		"deep/x/c":            {kind: kSymlink, body: "../a/b/c.txt"},
		"deep/x/y/back":       {kind: kSymlink, body: "../../../bin/"},
		"wide-dir":            {kind: kDir},
		"docsx":               {kind: kDir},
		"docsx/f":             {kFile, 0o644, "f"},
	}
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			b := f.build(t, ents...)
			if f.name == "tar.gz" { // a global header is skipped
				b = tarGzWithGlobalHeader(t, ents...)
			}
			s := newSandbox(t)
			if err := Unpack(b, s.target, DefaultLimits); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			probs := append(checkTree(s.target, tree), s.problems(t)...)
			report(t, probs)
			for link, want := range map[string]string{
				"bin/readme":          "# hello\n",
				"chain/app.yaml":      "a: 1\n",
				"deep/x/c":            "c",
				"deep/x/y/back/run":   "#!/bin/sh\necho hi\n",
				"deep/a/b/up/not-yet": "now",
				"self/dangling":       "now",
			} {
				if got, err := os.ReadFile(filepath.Join(s.target, filepath.FromSlash(link))); err != nil || string(got) != want {
					t.Errorf("reading through %s: %q, %v; want %q", link, got, err, want)
				}
			}
		})
	}
}

// tarGzWithGlobalHeader is tarGz with a pax global header first.
func tarGzWithGlobalHeader(tb testing.TB, ents ...ent) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "gust"}}); err != nil {
		tb.Fatal(err)
	}
	tw.Flush()
	// Append the archive's entries by copying them from a plain build.
	zr, err := gzip.NewReader(bytes.NewReader(tarGz(tb, ents...)))
	if err != nil {
		tb.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			tb.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// TestUnpackZipDefaults: a zip made without Unix modes (zip.Writer.Create)
// unpacks to 0644 files.
func TestUnpackZipDefaults(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"a.txt", "d/", "d/b.txt"} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(name, "/") {
			io.WriteString(w, name)
		}
	}
	zw.Close()
	s := newSandbox(t)
	if err := Unpack(buf.Bytes(), s.target, DefaultLimits); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	report(t, append(checkTree(s.target, map[string]want{
		"a.txt":   {kFile, 0o644, "a.txt"},
		"d":       {kind: kDir},
		"d/b.txt": {kFile, 0o644, "d/b.txt"},
	}), s.problems(t)...))
}

// hostile entries: each must fail with an *Error naming the bad entry,
// with nothing written outside the target and nothing left in it.
type hostileCase struct {
	name   string
	ents   []ent // "$PARENT" in a name or a body is the sandbox's parent
	entry  string
	reason string
}

var hostileCases = []hostileCase{
	// Names.
	{name: "climbs out", ents: []ent{aFile("../evil", "x")}, entry: "../evil", reason: "climb out"},
	{name: "climbs out into the sibling", ents: []ent{aFile("../sibling/keep", "owned")}, entry: "../sibling/keep", reason: "climb out"},
	{name: "climbs out after going down", ents: []ent{aFile("ok", "x"), aFile("a/../../evil", "x")}, entry: "a/../../evil", reason: "climb out"},
	{name: "climbs out then in again", ents: []ent{aFile("a/../../out/x", "x")}, entry: "a/../../out/x", reason: "climb out"},
	{name: "harmless-looking dot dot", ents: []ent{aFile("a/../b", "x")}, entry: "a/../b", reason: "climb out"},
	{name: "folder climbing out", ents: []ent{aDir("../evil/")}, entry: "../evil/", reason: "climb out"},
	{name: "symlink named with dot dot", ents: []ent{aLink("../evil", "x")}, entry: "../evil", reason: "climb out"},
	{name: "absolute /etc/passwd", ents: []ent{aFile("/etc/passwd", "root::0:0")}, entry: "/etc/passwd", reason: "absolute"},
	{name: "absolute into the parent", ents: []ent{aFile("$PARENT/passwd", "owned")}, entry: "$PARENT/passwd", reason: "absolute"},
	{name: "absolute folder", ents: []ent{aDir("$PARENT/sibling/new/")}, entry: "$PARENT/sibling/new/", reason: "absolute"},
	{name: "backslash", ents: []ent{aFile(`a\b`, "x")}, entry: `a\b`, reason: "backslash"},
	{name: "backslash climbing out", ents: []ent{aFile(`..\evil`, "x")}, entry: `..\evil`, reason: "backslash"},
	{name: "NUL", ents: []ent{aFile("a\x00b", "x")}, entry: "a\x00b", reason: "NUL"}, // zip only: tar cannot hold it
	{name: "empty name", ents: []ent{aFile("", "x")}, entry: "", reason: "empty"},
	{name: "invalid UTF-8 name", ents: []ent{aFile("\xff/../../x", "x")}, entry: "\uFFFD/../../x", reason: "climb out"},

	// Symbolic links.
	{name: "link to an absolute path", ents: []ent{aLink("l", "/etc")}, entry: "l", reason: "relative path inside the bundle"},
	{name: "link to the sibling by absolute path", ents: []ent{aLink("l", "$PARENT/sibling")}, entry: "l", reason: "relative path inside the bundle"},
	{name: "link with an empty target", ents: []ent{aLink("l", "")}, entry: "l", reason: "relative path inside the bundle"},
	{name: "link climbing out", ents: []ent{aLink("x", "../../x")}, entry: "x", reason: "points outside"},
	{name: "link to the parent", ents: []ent{aLink("out", "..")}, entry: "out", reason: "points outside"},
	{name: "link to the sibling", ents: []ent{aLink("s", "../sibling")}, entry: "s", reason: "points outside"},
	{name: "nested link climbing out", ents: []ent{aDir("a/b/"), aLink("a/b/up", "../../..")}, entry: "a/b/up", reason: "points outside"},
	{name: "link climbing out through a folder", ents: []ent{aLink("l", "sub/../..")}, entry: "l", reason: "points outside"},
	{name: "link climbing out after a dot", ents: []ent{aLink("l", "./..")}, entry: "l", reason: "points outside"},
	{name: "link climbing out and in again", ents: []ent{aLink("l", "../out/x")}, entry: "l", reason: "points outside"},
	{name: "deep link climbing out and in again", ents: []ent{aDir("a/b/"), aLink("a/b/l", "../../../out/a")}, entry: "a/b/l", reason: "points outside"},
	{name: "link to the parent among good entries", ents: []ent{aFile("a", "x"), aLink("up", ".."), aDir("d/"), aFile("d/f", "y")}, entry: "up", reason: "points outside"},
	{name: "link to the sibling among good entries", ents: []ent{aDir("d/"), aFile("d/f", "y"), aLink("d/s", "../../sibling"), aFile("z", "z")}, entry: "d/s", reason: "points outside"},
	{name: "the second link of a chain climbing out", ents: []ent{aLink("a", "b"), aLink("b", "..")}, entry: "b", reason: "points outside"},

	// Entries placed through a link: refused, whatever the link.
	{name: "file through a link to the parent", ents: []ent{aLink("out", ".."), aFile("out/evil", "x")}, entry: "out/evil", reason: "its folder out is a symbolic link"},
	{name: "file through a link to the parent, into the sibling", ents: []ent{aLink("out", ".."), aFile("out/sibling/keep", "owned")}, entry: "out/sibling/keep", reason: "its folder out is a symbolic link"},
	{name: "folder through a link to the parent", ents: []ent{aLink("out", ".."), aDir("out/new/")}, entry: "out/new/", reason: "its folder out is a symbolic link"},
	{name: "link through a link to the parent", ents: []ent{aLink("out", ".."), aLink("out/sibling/l", ".")}, entry: "out/sibling/l", reason: "its folder out is a symbolic link"},
	{
		// l resolves to the target itself, so l/x would be target/x,
		// and ".." from there the parent.
		name:  "link placed through a link to the root",
		ents:  []ent{aLink("l", "."), aLink("l/x", "..")},
		entry: "l/x", reason: "its folder l is a symbolic link",
	},
	{
		name:  "file written through an escaping link placed through a link",
		ents:  []ent{aLink("l", "."), aLink("l/x", ".."), aFile("x/sibling/keep", "owned")},
		entry: "l/x", reason: "its folder l is a symbolic link",
	},
	{
		// Each level of a link to an ancestor would buy one more level out.
		name:  "link two levels out through a deep link to the root",
		ents:  []ent{aDir("a/b/"), aLink("a/b/up", "../.."), aLink("a/b/up/y", "../..")},
		entry: "a/b/up/y", reason: "its folder a/b/up is a symbolic link",
	},

	// Link targets through other links: refused, wherever they lead.
	{
		// sub/up resolves to the target, so sub/up/.. is the parent.
		name:  "link whose target goes through a link to the root",
		ents:  []ent{aDir("sub/"), aLink("sub/up", ".."), aLink("t", "sub/up/..")},
		entry: "t", reason: "passes through another link (sub/up)",
	},
	{
		// l comes after t: the links are checked once all are on disk.
		name:  "link through a later link to the parent",
		ents:  []ent{aLink("t", "l/sibling"), aLink("l", "..")},
		entry: "t", reason: "passes through another link (l)",
	},
	{
		name:  "link through a link to the root, then up",
		ents:  []ent{aLink("l", "."), aLink("t", "l/..")},
		entry: "t", reason: "passes through another link (l)",
	},
	{
		name:  "deep link through a link to the root, then up twice",
		ents:  []ent{aLink("l", "."), aDir("a/"), aLink("a/t", "../l/l/../..")},
		entry: "a/t", reason: "passes through another link (l)",
	},
	{
		name:  "link with a trailing slash through a link",
		ents:  []ent{aDir("d/"), aLink("l", "d"), aLink("t", "l/")},
		entry: "t", reason: "passes through another link (l)",
	},

	// Other kinds.
	{name: "hard link", ents: []ent{aFile("a", "x"), {name: "h", kind: kHardlink, body: "a"}}, entry: "h", reason: "hard links"},
	{name: "hard link to /etc/passwd", ents: []ent{{name: "h", kind: kHardlink, body: "/etc/passwd"}}, entry: "h", reason: "hard links"},
	{name: "character device", ents: []ent{{name: "null", kind: kChar}}, entry: "null", reason: "only files, folders and symbolic links"},
	{name: "block device", ents: []ent{{name: "sda", kind: kBlock}}, entry: "sda", reason: "only files, folders and symbolic links"},
	{name: "fifo", ents: []ent{{name: "pipe", kind: kFifo}}, entry: "pipe", reason: "only files, folders and symbolic links"},
	{name: "socket", ents: []ent{{name: "sock", kind: kSocket}}, entry: "sock", reason: "only files, folders and symbolic links"},

	// Duplicates.
	{name: "file twice", ents: []ent{aFile("a", "1"), aFile("a", "2")}, entry: "a", reason: "twice"},
	{name: "file twice, once with ./", ents: []ent{aFile("a", "1"), aFile("./a", "2")}, entry: "./a", reason: "twice"},
	{name: "file twice, unclean", ents: []ent{aFile("d/a", "1"), aFile("d//./a", "2")}, entry: "d//./a", reason: "twice"},
	{name: "folder then file", ents: []ent{aDir("d/"), aFile("d", "x")}, entry: "d", reason: "twice"},
	{name: "file then folder", ents: []ent{aFile("d", "x"), aDir("d/")}, entry: "d/", reason: "twice"},
	{name: "file then link", ents: []ent{aFile("a", "x"), aLink("a", ".")}, entry: "a", reason: "twice"},
	{name: "link then file", ents: []ent{aLink("a", "b"), aFile("a", "x")}, entry: "a", reason: "twice"},
	{name: "file then its alias through a link", ents: []ent{aLink("l", "."), aFile("a", "1"), aFile("l/a", "2")}, entry: "l/a", reason: "its folder l is a symbolic link"},
	{name: "link over a folder made for a file", ents: []ent{aFile("d/f", "x"), aLink("d", "..")}, entry: "d", reason: "cannot create the link"},
	{name: "file over a folder made for a file", ents: []ent{aFile("d/f", "x"), aFile("d", "y")}, entry: "d", reason: "cannot create the file"},
}

func (c hostileCase) applies(f format) bool {
	for _, e := range c.ents {
		if !f.holds(e.kind) {
			return false
		}
		if f.name == "tar.gz" && strings.ContainsRune(e.name, 0) {
			return false // tar cannot hold it
		}
	}
	return true
}

func TestUnpackHostile(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			for _, c := range hostileCases {
				if !c.applies(f) {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					s := newSandbox(t)
					sub := func(x string) string { return strings.ReplaceAll(x, "$PARENT", s.parent) }
					ents := make([]ent, len(c.ents))
					for i, e := range c.ents {
						e.name, e.body = sub(e.name), sub(e.body)
						ents[i] = e
					}
					err := Unpack(f.build(t, ents...), s.target, DefaultLimits)
					report(t, s.failure(t, err, sub(c.entry), c.reason))
				})
			}
		})
	}
}

// TestUnpackThroughLinks: an entry whose folder on disk is, or passes
// through, a symbolic link is refused, wherever the link leads: entries
// are unpacked in real folders only. A link and real folders side by side
// are fine.
func TestUnpackThroughLinks(t *testing.T) {
	const why = "entries must be unpacked in real folders"
	tests := []struct {
		name          string
		ents          []ent
		entry, reason string // the error; none if entry and reason are ""
		tree          map[string]want
	}{
		{
			name:  "file through a link to the root",
			ents:  []ent{aLink("link", "."), aFile("link/f", "x")},
			entry: "link/f", reason: "its folder link is a symbolic link: " + why,
		},
		{
			name:  "folder and file through a link to the root",
			ents:  []ent{aLink("link", "."), aDir("link/d/"), aFile("link/d/f", "x")},
			entry: "link/d/", reason: "its folder link is a symbolic link: " + why,
		},
		{
			name:  "file through a link to a folder",
			ents:  []ent{aDir("sub/"), aLink("d", "sub"), aFile("d/x", "x")},
			entry: "d/x", reason: "its folder d is a symbolic link: " + why,
		},
		{
			name:  "file deep through a link to a folder",
			ents:  []ent{aDir("sub/"), aLink("d", "sub"), aFile("d/a/b/x", "x")},
			entry: "d/a/b/x", reason: "its folder d is a symbolic link: " + why,
		},
		{
			name:  "file through a link to a folder made later",
			ents:  []ent{aLink("d", "sub"), aFile("d/x", "x")},
			entry: "d/x", reason: "its folder d is a symbolic link: " + why,
		},
		{
			name:  "file through a link to a folder made earlier by a file",
			ents:  []ent{aFile("sub/a", "a"), aLink("d", "sub"), aFile("d/x", "x")},
			entry: "d/x", reason: "its folder d is a symbolic link: " + why,
		},
		{
			name:  "file through a link up to the root",
			ents:  []ent{aDir("sub/"), aLink("sub/up", ".."), aFile("sub/up/f", "x")},
			entry: "sub/up/f", reason: "its folder sub/up is a symbolic link: " + why,
		},
		{
			name:  "file through a link in the middle of its path",
			ents:  []ent{aDir("a/b/"), aLink("a/l", "b"), aFile("a/l/x/y", "z")},
			entry: "a/l/x/y", reason: "its folder a/l is a symbolic link: " + why,
		},
		{
			name:  "file through a link, unclean name",
			ents:  []ent{aLink("l", "."), aFile("./l//f", "x")},
			entry: "./l//f", reason: "its folder l is a symbolic link: " + why,
		},
		{
			name:  "file through a link to a file",
			ents:  []ent{aFile("a", "x"), aLink("l", "a"), aFile("l/f", "y")},
			entry: "l/f", reason: "its folder l is a symbolic link: " + why,
		},
		{
			name:  "file through a dangling link",
			ents:  []ent{aLink("l", "nowhere"), aFile("l/f", "y")},
			entry: "l/f", reason: "its folder l is a symbolic link: " + why,
		},
		{
			name:  "file over a link",
			ents:  []ent{aFile("a", "x"), aLink("l", "a"), aFile("./l", "y")},
			entry: "./l", reason: "twice",
		},
		{
			name:  "link over a link through a link",
			ents:  []ent{aLink("l", "."), aLink("l/l", ".")},
			entry: "l/l", reason: "its folder l is a symbolic link: " + why,
		},
		{
			name:  "file through a link to the parent",
			ents:  []ent{aLink("out", ".."), aFile("out/evil", "x")},
			entry: "out/evil", reason: "its folder out is a symbolic link: " + why,
		},
		{
			name: "a link to a folder, and files in the real folder",
			ents: []ent{aLink("d", "sub"), aDir("sub/"), aFile("sub/x", "x"), aFile("sub/y/z", "z")},
			tree: map[string]want{
				"d": {kind: kSymlink, body: "sub"}, "sub": {kind: kDir},
				"sub/x": {kFile, 0o644, "x"}, "sub/y": {kind: kDir}, "sub/y/z": {kFile, 0o644, "z"},
			},
		},
		{
			name: "a link, and a real folder whose name starts with the link's",
			ents: []ent{aLink("d", "."), aFile("dd/x", "x"), aFile("d.x/y", "y")},
			tree: map[string]want{
				"d": {kind: kSymlink, body: "."}, "dd": {kind: kDir}, "dd/x": {kFile, 0o644, "x"},
				"d.x": {kind: kDir}, "d.x/y": {kFile, 0o644, "y"},
			},
		},
	}
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					s := newSandbox(t)
					err := Unpack(f.build(t, tt.ents...), s.target, DefaultLimits)
					if tt.entry == "" && tt.reason == "" {
						var probs []string
						if err != nil {
							probs = append(probs, fmt.Sprintf("Unpack: %v", err))
						}
						probs = append(probs, checkTree(s.target, tt.tree)...)
						report(t, append(probs, s.problems(t)...))
						return
					}
					report(t, s.failure(t, err, tt.entry, tt.reason))
				})
			}
		})
	}
}

var (
	bombOnce sync.Once
	bombTar  []byte
	bombZip  []byte
)

// bombs returns 50 MiB of zeros in one file, as a .tar.gz and a .zip.
func bombs(tb testing.TB) (tgz, zp []byte) {
	bombOnce.Do(func() {
		zeros := make([]byte, 1<<20)
		var tb1 bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&tb1, gzip.BestCompression)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: 50 << 20})
		for range 50 {
			tw.Write(zeros)
		}
		tw.Close()
		zw.Close()
		bombTar = tb1.Bytes()

		var zb bytes.Buffer
		w := zip.NewWriter(&zb)
		w.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
			return flate.NewWriter(out, flate.BestCompression)
		})
		fw, _ := w.CreateHeader(&zip.FileHeader{Name: "bomb", Method: zip.Deflate})
		for range 50 {
			fw.Write(zeros)
		}
		w.Close()
		bombZip = zb.Bytes()
	})
	if bombTar == nil || bombZip == nil {
		tb.Fatal("cannot build the bombs")
	}
	return bombTar, bombZip
}

func TestUnpackLimits(t *testing.T) {
	big := func(seed uint64, n int) string { return string(randomBytes(seed, n)) }
	tgzBomb, zipBomb := bombs(t)
	tests := []struct {
		name   string
		lim    Limits
		ents   []ent
		raw    map[string][]byte // per format, instead of ents
		entry  string            // "" for success
		reason string
		maxOut int64 // if > 0, the most bytes the target may hold while unpacking
	}{
		{
			name: "MaxFiles exactly", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 3, MaxRatio: 200},
			ents: []ent{aDir("./"), aFile("a", "1"), aDir("d/"), aFile("d/b", "2")},
		},
		{
			name: "more files than MaxFiles", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 3, MaxRatio: 200},
			ents:  []ent{aFile("a", "1"), aFile("b", "2"), aFile("c", "3"), aFile("d", "4"), aFile("e", "5")},
			entry: "d", reason: "more than 3 entries",
		},
		{
			name: "folders count as entries", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 2, MaxRatio: 200},
			ents:  []ent{aDir("a/"), aDir("b/"), aDir("c/")},
			entry: "c/", reason: "more than 2 entries",
		},
		{
			name: "folders a path makes count as entries", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 3, MaxRatio: 200},
			ents:  []ent{aFile("x/y/z/f", "1")},
			entry: "x/y/z/f", reason: "more than 3 entries, counting the folders",
		},
		{
			name: "a path 64 folders deep", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200},
			ents: []ent{aFile(strings.Repeat("a/", 63)+"f", "1")},
		},
		{
			name: "a path deeper than 64 folders", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile(strings.Repeat("a/", 64)+"f", "1")},
			entry: strings.Repeat("a/", 64) + "f", reason: "more than 64 folders deep",
		},
		{
			name: "a name longer than 1024 bytes", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile(strings.Repeat("n", 1025), "1")},
			entry: strings.Repeat("n", 1025), reason: "longer than 1024 bytes",
		},
		{
			name: "links count as entries", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 1, MaxRatio: 200},
			ents:  []ent{aFile("a", "x"), aLink("b", "a")},
			entry: "b", reason: "more than 1 entries",
		},
		{
			name: "MaxBytes exactly", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200},
			ents: []ent{aFile("a", big(1, 512<<10)), aFile("b", big(2, 512<<10)), aFile("c", "")},
		},
		{
			name: "over MaxBytes", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("a", big(1, 400<<10)), aFile("b", big(2, 400<<10)), aFile("c", big(3, 400<<10)), aFile("d", "x")},
			entry: "c", reason: "more than 1 MiB", maxOut: 1<<20 + 1,
		},
		{
			name: "over MaxBytes by one byte", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("a", big(1, 512<<10)), aFile("b", big(2, 512<<10)), aFile("c", "x")},
			entry: "c", reason: "more than 1 MiB", maxOut: 1<<20 + 1,
		},
		{
			name: "over a MaxBytes under 1 MiB", lim: Limits{MaxBytes: 1000, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("a", big(5, 600)), aFile("b", big(6, 600))},
			entry: "b", reason: "more than 1000 bytes", maxOut: 1001,
		},
		{
			name: "over a MaxBytes that is not whole MiB", lim: Limits{MaxBytes: 1<<20 + 512<<10, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("a", big(5, 1<<20)), aFile("b", big(6, 1<<20))},
			entry: "b", reason: fmt.Sprintf("more than %d bytes", 1<<20+512<<10), maxOut: 1<<20 + 512<<10 + 1,
		},
		{
			name: "over MaxBytes in one file", lim: Limits{MaxBytes: 2 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("small", "x"), aFile("huge", big(4, 3<<20))},
			entry: "huge", reason: "more than 2 MiB", maxOut: 2<<20 + 1,
		},
		{
			name: "1 MiB of zeros is under the ratio floor", lim: Limits{MaxBytes: 512 << 20, MaxFiles: 100, MaxRatio: 200},
			ents: []ent{aFile("zeros", string(make([]byte, ratioFloor)))},
		},
		{
			name: "just over the ratio floor", lim: Limits{MaxBytes: 512 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("zeros", string(make([]byte, ratioFloor+1)))},
			entry: "zeros", reason: "compression bomb",
		},
		{
			name: "zeros spread over files", lim: Limits{MaxBytes: 512 << 20, MaxFiles: 100, MaxRatio: 200},
			ents:  []ent{aFile("a", string(make([]byte, 600<<10))), aFile("small", "x"), aFile("b", string(make([]byte, 600<<10)))},
			entry: "b", reason: "compression bomb", maxOut: ratioFloor + 1,
		},
		{
			name: "compression bomb", lim: Limits{MaxBytes: 512 << 20, MaxFiles: 20000, MaxRatio: 200},
			raw:   map[string][]byte{"tar.gz": tgzBomb, "zip": zipBomb},
			entry: "bomb", reason: "compression bomb", maxOut: 200*int64(max(len(tgzBomb), len(zipBomb))) + 1,
		},
		{
			name: "compression bomb with the default limits", lim: DefaultLimits,
			raw:   map[string][]byte{"tar.gz": tgzBomb, "zip": zipBomb},
			entry: "bomb", reason: "compression bomb", maxOut: 200*int64(max(len(tgzBomb), len(zipBomb))) + 1,
		},
		{
			name: "bomb under a generous ratio but over MaxBytes", lim: Limits{MaxBytes: 4 << 20, MaxFiles: 10, MaxRatio: 100000},
			raw:   map[string][]byte{"tar.gz": tgzBomb, "zip": zipBomb},
			entry: "bomb", reason: "more than 4 MiB", maxOut: 4<<20 + 1,
		},
	}
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					b := tt.raw[f.name]
					if b == nil {
						b = f.build(t, tt.ents...)
					}
					s := newSandbox(t)
					var (
						err  error
						peak int64
					)
					if tt.maxOut > 0 {
						peak, err = unpackWatched(b, s.target, tt.lim)
					} else {
						err = Unpack(b, s.target, tt.lim)
					}
					var probs []string
					if tt.entry == "" {
						if err != nil {
							probs = append(probs, fmt.Sprintf("Unpack: %v", err))
						}
						probs = append(probs, s.problems(t)...)
					} else {
						probs = s.failure(t, err, tt.entry, tt.reason)
					}
					if tt.maxOut > 0 && peak > tt.maxOut {
						probs = append(probs, fmt.Sprintf("the target held %d bytes while unpacking, want at most %d", peak, tt.maxOut))
					}
					report(t, probs)
				})
			}
		})
	}
}

// unpackWatched is Unpack, watching the target's size meanwhile; peak is
// the largest size seen. A failed Unpack empties the target, so what it
// wrote can only be seen while it runs; peak may miss the true peak, but
// never overstates it.
func unpackWatched(b []byte, dir string, lim Limits) (peak int64, err error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			peak = max(peak, treeSize(dir))
			select {
			case <-done:
				return
			default:
			}
		}
	})
	err = Unpack(b, dir, lim)
	close(done)
	wg.Wait()
	return peak, err
}

func treeSize(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func TestUnpackGarbage(t *testing.T) {
	tgz := tarGz(t, aFile("a.txt", "hello"), aFile("b.txt", "world"))
	zp := zipOf(t, aFile("a.txt", "hello"), aFile("b.txt", "world"))
	bigTgz := tarGz(t, aFile("big.bin", string(randomBytes(7, 64<<10))))
	gzipOf := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	corruptZip := func() []byte {
		b := zipOf(t, aFile("a", "stored"), aFile("b", "stored content here")) // b is stored
		i := bytes.Index(b, []byte("stored content"))
		c := append([]byte{}, b...)
		c[i] ^= 0xff
		return c
	}()
	flip := func(b []byte, i int) []byte {
		c := append([]byte{}, b...)
		c[i] ^= 0xff
		return c
	}
	tests := []struct {
		name   string
		b      []byte
		entry  string
		reason string
	}{
		{name: "nil", b: nil, reason: "not a .tar.gz or .zip file"},
		{name: "empty", b: []byte{}, reason: "not a .tar.gz or .zip file"},
		{name: "text", b: []byte("hello, world\n"), reason: "not a .tar.gz or .zip file"},
		{name: "random bytes", b: append([]byte{0}, randomBytes(1, 4096)...), reason: "not a .tar.gz or .zip file"},
		{name: "plain tar", b: plainTar(t), reason: "not a .tar.gz or .zip file"},
		{name: "gzip magic only", b: []byte{0x1f, 0x8b}, reason: "not a valid gzip stream"},
		{name: "gzip magic then random bytes", b: append([]byte{0x1f, 0x8b, 0x07}, randomBytes(2, 4096)...), reason: "not a valid gzip stream"},
		{name: "gzip of random bytes", b: gzipOf(randomBytes(3, 4096)), reason: "not a valid tar archive"},
		{name: "gzip of text", b: gzipOf([]byte("not a tar")), reason: "not a valid tar archive"},
		{name: "tar.gz truncated in the gzip header", b: tgz[:6], reason: "not a valid gzip stream"},
		{name: "tar.gz truncated in the first tar header", b: tgz[:20], reason: "not a valid tar archive"},
		{name: "tar.gz cut in half", b: tgz[:len(tgz)/2], reason: "not a valid tar archive"},
		{
			// The truncation is in the file's data: the error names it.
			name: "tar.gz truncated in a file's data", b: bigTgz[:len(bigTgz)/2],
			entry: "big.bin", reason: "unexpected EOF",
		},
		{name: "tar.gz without its gzip trailer", b: tgz[:len(tgz)-8], reason: "not a valid gzip stream"},
		{name: "tar.gz without the last byte of its gzip trailer", b: tgz[:len(tgz)-1], reason: "not a valid gzip stream"},
		{name: "tar.gz with a bad gzip CRC-32", b: flip(tgz, len(tgz)-6), reason: "not a valid gzip stream"},
		{name: "tar.gz with a bad gzip size", b: flip(tgz, len(tgz)-2), reason: "not a valid gzip stream"},
		{
			name: "tar.gz with links, cut after 30 bytes",
			b:    tarGz(t, aFile("a", "x"), aLink("l", "a"), aDir("d/"), aFile("d/f", "y"))[:30], reason: "not a valid",
		},
		{
			name: "tar.gz with links, without its gzip trailer", b: withoutTrailer(tarGz(t, aFile("a", "x"), aLink("l", "a"), aDir("d/"), aFile("d/f", "y"))),
			reason: "not a valid gzip stream",
		},
		{
			// What follows the tar's end counts against the bundle's budget.
			name: "tar.gz with 2 MiB after the tar's end, without its gzip trailer", b: withoutTrailer(tarGzPadded(t, 2<<20)),
			reason: "too much data after the archive's end",
		},
		{
			name: "tar.gz with 100 KiB after the tar's end and a bad gzip CRC-32", b: func() []byte { b := tarGzPadded(t, 100<<10); return flip(b, len(b)-6) }(),
			reason: "not a valid gzip stream",
		},
		{
			name: "tar.gz with 100 KiB after the tar's end, without its gzip trailer", b: withoutTrailer(tarGzPadded(t, 100<<10)),
			reason: "not a valid gzip stream",
		},
		{name: "zip magic only", b: []byte("PK\x03\x04"), reason: "not a valid zip archive"},
		{name: "zip end marker only", b: []byte("PK\x05\x06"), reason: "not a valid zip archive"},
		{name: "zip magic then random bytes", b: append([]byte("PK\x03\x04"), randomBytes(4, 4096)...), reason: "not a valid zip archive"},
		{name: "zip truncated by 10 bytes", b: zp[:len(zp)-10], reason: "not a valid zip archive"},
		{name: "zip cut in half", b: zp[:len(zp)/2], reason: "not a valid zip archive"},
		{name: "zip with corrupted data", b: corruptZip, entry: "b", reason: "checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Unpack panicked: %v", r)
					}
				}()
				err = Unpack(tt.b, s.target, DefaultLimits)
			}()
			report(t, s.failure(t, err, tt.entry, tt.reason))
		})
	}
}

// withoutTrailer returns b, a gzip stream, without its 8-byte trailer.
func withoutTrailer(b []byte) []byte { return b[:len(b)-8] }

// tarGzPadded returns a valid .tar.gz of one file whose gzip stream goes
// on for n zero bytes after the tar's end.
func tarGzPadded(tb testing.TB, n int) []byte {
	var tbuf bytes.Buffer
	tw := tar.NewWriter(&tbuf)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}); err != nil {
		tb.Fatal(err)
	}
	tw.Write([]byte("x"))
	tw.Close()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(tbuf.Bytes())
	zw.Write(make([]byte, n))
	zw.Close()
	return buf.Bytes()
}

// TestUnpackGzipPadding: a .tar.gz whose gzip stream goes on after the
// tar's end (as some tar writers pad to a record) unpacks.
// TestUnpackGzipPadding: zeros after the tar's end are read to the gzip
// trailer, within the bundle's budget (the compression ratio's floor, 1 MiB).
func TestUnpackGzipPadding(t *testing.T) {
	for _, n := range []int{512, 10240, 512 << 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := newSandbox(t)
			if err := Unpack(tarGzPadded(t, n), s.target, DefaultLimits); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			report(t, append(checkTree(s.target, map[string]want{"a": {kFile, 0o644, "x"}}), s.problems(t)...))
		})
	}
}

// TestUnpackZipLongLink: a zip link's target is read with a bound.
func TestUnpackZipLongLink(t *testing.T) {
	s := newSandbox(t)
	err := Unpack(zipOf(t, aFile("a", "x"), aLink("l", strings.Repeat("a/", 3000))), s.target, DefaultLimits)
	report(t, s.failure(t, err, "l", "cannot read the link's target: too long"))
}

func TestUnpackEmptyArchives(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			s := newSandbox(t)
			if err := Unpack(f.build(t), s.target, DefaultLimits); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			report(t, append(checkTree(s.target, nil), s.problems(t)...))
		})
	}
}

func TestUnpackMissingTarget(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	err := Unpack(tarGz(t, aFile("a", "x")), dir, DefaultLimits)
	if err == nil {
		t.Fatal("Unpack into a missing folder succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Unpack created the missing folder: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Pack.

// writeTree makes the files of tree (a file's body; "-> x" a link to x;
// "/" a folder) under dir.
func writeTree(tb testing.TB, dir string, tree map[string]string, modes map[string]fs.FileMode) {
	tb.Helper()
	names := make([]string, 0, len(tree))
	for n := range tree {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		var err error
		switch v := tree[n]; {
		case v == "/":
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(v, "-> "):
			err = os.Symlink(strings.TrimPrefix(v, "-> "), p)
		default:
			m := modes[n]
			if m == 0 {
				m = 0o644
			}
			if err = os.WriteFile(p, []byte(v), m); err == nil {
				err = os.Chmod(p, m)
			}
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func TestPackRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{
		"handler.js":          "export default () => 1\n",
		"bin/run":             "#!/bin/sh\n",
		"lib/a/b/c.txt":       "deep",
		"lib/empty/":          "/",
		"link-to-file":        "-> handler.js",
		"lib/link-up":         "-> ../bin/run",
		"link-to-folder":      "-> lib/a",
		"dangling":            "-> nowhere",
		"private":             "owner only",
		"empty.txt":           "",
		".env":                "A=1", // hidden files are kept
		".git/config":         "[core]",
		".git/objects/ab/cd":  "blob",
		"lib/.git/HEAD":       "ref: refs/heads/main",
		".hg/store/data":      "hg",
		"lib/a/.hg/hgrc":      "hg",
		"lib/a/git-notes.txt": "not a .git folder",
	}, map[string]fs.FileMode{"bin/run": 0o755, "private": 0o600})

	b, err := Pack(src)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	if Detect(b) != TarGz {
		t.Fatalf("Pack's output is detected as %v, want TarGz", Detect(b))
	}

	// The headers carry no owner and only relative, slash-separated names.
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want none", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if strings.HasPrefix(h.Name, "/") || strings.HasPrefix(h.Name, "./") || strings.Contains(h.Name, `\`) || h.Name == "." {
			t.Errorf("entry name %q is not a clean relative path", h.Name)
		}
		for _, part := range strings.Split(strings.TrimSuffix(h.Name, "/"), "/") {
			if part == ".git" || part == ".hg" {
				t.Errorf("entry %q is in a version-control folder", h.Name)
			}
		}
	}

	s := newSandbox(t)
	if err := Unpack(b, s.target, DefaultLimits); err != nil {
		t.Fatalf("Unpack(Pack(dir)): %v", err)
	}
	report(t, append(checkTree(s.target, map[string]want{
		"handler.js":          {kFile, 0o644, "export default () => 1\n"},
		"bin":                 {kind: kDir},
		"bin/run":             {kFile, 0o755, "#!/bin/sh\n"},
		"lib":                 {kind: kDir},
		"lib/a":               {kind: kDir},
		"lib/a/b":             {kind: kDir},
		"lib/a/b/c.txt":       {kFile, 0o644, "deep"},
		"lib/a/git-notes.txt": {kFile, 0o644, "not a .git folder"},
		"lib/empty":           {kind: kDir},
		"link-to-file":        {kind: kSymlink, body: "handler.js"},
		"lib/link-up":         {kind: kSymlink, body: "../bin/run"},
		"link-to-folder":      {kind: kSymlink, body: "lib/a"},
		"dangling":            {kind: kSymlink, body: "nowhere"},
		"private":             {kFile, 0o644, "owner only"},
		"empty.txt":           {kFile, 0o644, ""},
		".env":                {kFile, 0o644, "A=1"},
	}), s.problems(t)...))
}

func TestPackEmptyFolder(t *testing.T) {
	b, err := Pack(t.TempDir())
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	s := newSandbox(t)
	if err := Unpack(b, s.target, DefaultLimits); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	report(t, append(checkTree(s.target, nil), s.problems(t)...))
}

func TestPackMissingFolder(t *testing.T) {
	if _, err := Pack(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Pack of a missing folder succeeded")
	}
}

// TestPackLinkOut: Pack keeps a link pointing out of the folder as it is;
// Unpack then refuses it.
func TestPackLinkOut(t *testing.T) {
	for _, target := range []string{"/etc/passwd", "../outside"} {
		t.Run(target, func(t *testing.T) {
			src := t.TempDir()
			writeTree(t, src, map[string]string{"a": "x", "out": "-> " + target}, nil)
			b, err := Pack(src)
			if err != nil {
				t.Fatalf("Pack: %v", err)
			}
			s := newSandbox(t)
			err = Unpack(b, s.target, DefaultLimits)
			report(t, s.failure(t, err, "out", "link's target"))
		})
	}
}

// TestPackSocket: Pack refuses what is not a file, a folder or a link.
func TestPackSocket(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("x"), 0o644)
	l, err := net.Listen("unix", filepath.Join(src, "sock"))
	if err != nil {
		t.Skipf("cannot make a socket: %v", err)
	}
	defer l.Close()
	if _, err := Pack(src); err == nil || !strings.Contains(err.Error(), "not a file, folder or symbolic link") {
		t.Errorf("Pack of a folder holding a socket: %v, want an error", err)
	}
}

// ---------------------------------------------------------------------------
// Fuzzing.

func FuzzUnpack(f *testing.F) {
	seeds := [][]ent{
		{aFile("README.md", "hi"), aDir("bin/"), {name: "bin/run", kind: kFile, mode: 0o755, body: "#!/bin/sh"}, aLink("docs", "bin"), aFile("docs/x", "y")},
		{aLink("link", "."), aFile("link/f", "x"), aDir("sub/"), aLink("sub/up", ".."), aFile("sub/up/g", "z")},
		{aFile("../evil", "x")},
		{aFile("a/../../evil", "x")},
		{aFile("/etc/passwd", "x")},
		{aLink("l", "/etc")},
		{aLink("l", "../../x")},
		{aLink("out", ".."), aFile("out/evil", "x")},
		{aDir("a/b/"), aLink("a/b/c", "../.."), aFile("a/b/c/d", "x")},
		{aFile("a", "1"), aFile("a", "2")},
		{aFile(`a\b`, "x")},
		{{name: "p", kind: kFifo}},
		{aFile("a", "x"), aFile("b", "y"), aFile("c", "z")},
		{aLink("l", "."), aLink("l/x", ".."), aFile("x/sibling/keep", "owned")},
		{aDir("sub/"), aLink("sub/up", ".."), aLink("t", "sub/up/..")},
		{aLink("t", "l/sibling"), aLink("l", "..")},
		{aFile("d/f", "x"), aLink("d", "..")},
		{aLink("d", "sub"), aDir("sub/"), aFile("sub/x", "x"), aLink("chain", "d"), aLink("sub/back", "../d/")},
		{aFile("a", "x"), aLink("up", ".."), aDir("d/"), aFile("d/f", "y")},
	}
	for _, s := range seeds {
		f.Add(tarGz(f, s...))
		f.Add(zipOf(f, s...))
	}
	f.Add(tarGz(f, aFile("a", "x"), ent{name: "h", kind: kHardlink, body: "a"}))
	f.Add(zipOf(f, aLink("s", "sub"), aDir("sub/"), aFile("s/a", "x")))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte("PK\x05\x06"))
	f.Add(randomBytes(9, 512))
	tgz := tarGz(f, aFile("a", "x"), aLink("l", "a"))
	f.Add(withoutTrailer(tgz))
	f.Add(tgz[:len(tgz)/2])
	lim := Limits{MaxBytes: 1 << 20, MaxFiles: 64, MaxRatio: 50}

	// One sandbox for all the runs, each unpacking into a fresh target:
	// making a sandbox per run would slow the fuzzing down.
	base := &sandbox{parent: f.TempDir()}
	if p, err := filepath.EvalSymlinks(base.parent); err == nil {
		base.parent = p
	}
	base.populate(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		target, err := os.MkdirTemp(base.parent, "out")
		if err != nil {
			t.Fatal(err)
		}
		s := &sandbox{parent: base.parent, target: target, before: base.before}
		defer func() {
			// Leave the sandbox as it was, so that a failure does not
			// make the next runs (minimizing the failing input) fail.
			if t.Failed() {
				os.RemoveAll(base.parent)
				if err := os.Mkdir(base.parent, 0o755); err != nil {
					t.Fatal(err)
				}
				base.populate(t)
			} else if err := os.RemoveAll(target); err != nil {
				t.Fatal(err)
			}
		}()
		err = Unpack(b, s.target, lim)
		var be *Error
		if err != nil && !errors.As(err, &be) {
			t.Errorf("error %v is a %T, want a *bundle.Error", err, err)
		}
		// Nothing outside changes; after success nothing under the target
		// resolves outside it; after failure the target is left empty.
		probs := s.problems(t)
		if err != nil {
			probs = append(probs, s.leftovers()...)
		}
		for _, p := range probs {
			t.Error(p)
		}
	})
}

// TestPackIsReproducible: the same files make the same bundle, whenever
// they were written, so that redeploying a folder whose files were only
// touched adds no version.
func TestPackIsReproducible(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"handler.sh": "echo hi\n", "lib/x.txt": "x"}, nil)
	first, err := Pack(src)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for _, p := range []string{"handler.sh", "lib/x.txt", "lib"} {
		if err := os.Chtimes(filepath.Join(src, p), later, later); err != nil {
			t.Fatal(err)
		}
	}
	second, err := Pack(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Errorf("the same files, touched, packed to other bytes")
	}
}

// TestZipEntriesCountedFirst: a zip with far more entries than allowed is
// refused before the zip reader takes its central directory into memory
// (a 64 MiB zip of a million tiny records took 380 MiB), counted as the
// reader counts them, whatever count its end record declares; a truncated
// or foreign tail is left to the reader.
func TestZipEntriesCountedFirst(t *testing.T) {
	var ents []ent
	for i := range 300 {
		ents = append(ents, aFile(fmt.Sprintf("f%d", i), "x"))
	}
	b := zipOf(t, ents...)
	if n, ok := zipEntries(b, 1000); !ok || n != 300 {
		t.Fatalf("zipEntries = %d, %v; want 300", n, ok)
	}
	if n, ok := zipEntries(b, 10); !ok || n != 11 {
		t.Errorf("zipEntries with limit 10 = %d, %v; want it to stop at 11", n, ok)
	}
	// The end record may declare any count modulo 65536: the reader reads
	// records until one fails.
	lying := bytes.Clone(b)
	eocd := bytes.LastIndex(lying, []byte("PK\x05\x06"))
	binary.LittleEndian.PutUint16(lying[eocd+8:], 3)
	binary.LittleEndian.PutUint16(lying[eocd+10:], 3)
	if n, ok := zipEntries(lying, 1000); !ok || n != 300 {
		t.Errorf("zipEntries of a zip that declares 3 entries = %d, %v; want its 300", n, ok)
	}
	for _, zb := range [][]byte{b, lying} {
		err := Unpack(zb, t.TempDir(), Limits{MaxBytes: 1 << 20, MaxFiles: 10, MaxRatio: 200})
		if err == nil || !strings.Contains(err.Error(), "more than 120 entries, far more than the 10 allowed") {
			t.Errorf("Unpack of 300 entries with MaxFiles 10: %v", err)
		}
	}
	for _, tail := range [][]byte{nil, []byte("PK\x05\x06"), b[:len(b)-5], bytes.Repeat([]byte{0}, 100)} {
		if n, ok := zipEntries(tail, 1000); ok {
			t.Errorf("zipEntries of %d bytes without a whole end record = %d, true", len(tail), n)
		}
	}
}

// TestZipEntriesFollowEveryDirectory: a zip whose zip64 record points at
// an empty directory, with a field (its disk) that has the reader ignore
// that record and read the real, full one, is counted by the full one and
// refused unread (the reader took 350 MiB for a 60 MiB zip of a million
// records before the first was looked at).
func TestZipEntriesFollowEveryDirectory(t *testing.T) {
	const records = 0xffff // the end record's count says "see the zip64 record", and the reader checks it modulo 65536
	var b bytes.Buffer
	b.Write(binary.LittleEndian.AppendUint32(make([]byte, 0, 30), 0x04034b50))
	b.Write(make([]byte, 26))
	header := binary.LittleEndian.AppendUint32(nil, 0x02014b50)
	header = append(header, make([]byte, 42)...)
	for range records {
		b.Write(header)
	}
	dirSize := b.Len() - 30
	z64 := b.Len()
	rec := binary.LittleEndian.AppendUint32(nil, 0x06064b50)
	rec = binary.LittleEndian.AppendUint64(rec, 44)
	rec = append(rec, make([]byte, 36)...)
	rec = binary.LittleEndian.AppendUint64(rec, uint64(z64)) // an empty directory, at the record itself
	b.Write(rec)
	loc := binary.LittleEndian.AppendUint32(nil, 0x07064b50)
	loc = binary.LittleEndian.AppendUint32(loc, 1) // the disk: the reader skips the zip64 record
	loc = binary.LittleEndian.AppendUint64(loc, uint64(z64))
	loc = binary.LittleEndian.AppendUint32(loc, 1)
	b.Write(loc)
	end := binary.LittleEndian.AppendUint32(nil, 0x06054b50)
	end = append(end, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff)
	end = binary.LittleEndian.AppendUint32(end, uint32(dirSize+len(rec)+len(loc)))
	end = binary.LittleEndian.AppendUint32(end, 30)
	end = append(end, 0, 0)
	b.Write(end)
	zr, err := zip.NewReader(bytes.NewReader(b.Bytes()), int64(b.Len()))
	if err != nil {
		t.Fatalf("the reader refuses the zip: %v; the test wants it to read all %d entries", err, records)
	}
	if len(zr.File) != records {
		t.Fatalf("the reader takes the zip as %d entries; the test wants it to read all %d", len(zr.File), records)
	}
	if n, ok := zipEntries(b.Bytes(), 1000); !ok || n != 1001 {
		t.Errorf("zipEntries with limit 1000 = %d, %v; want it past the limit, counting what the reader reads", n, ok)
	}
	err = Unpack(b.Bytes(), t.TempDir(), Limits{MaxBytes: 1 << 20, MaxFiles: 10, MaxRatio: 200})
	if err == nil || !strings.Contains(err.Error(), "far more than the 10 allowed") {
		t.Errorf("Unpack = %v, want it refused for its entries", err)
	}
}

// TestTarHeadersCountTowardsTheBudget: records that hold only headers
// (PAX global headers, here a thousand of 256 KiB) inflate within the
// bundle's budget, not without bound: 4 MiB of gzip once made the server
// inflate and parse 4 GB.
func TestTarHeadersCountTowardsTheBudget(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	comment := strings.Repeat("a", 256<<10)
	for range 1000 {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": comment}, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "app", Size: 2, Mode: 0o755})
	tw.Write([]byte("ok"))
	tw.Close()
	zw.Close()
	err := Unpack(buf.Bytes(), t.TempDir(), Limits{MaxBytes: 64 << 20, MaxFiles: 100, MaxRatio: 200})
	if err == nil || !strings.Contains(err.Error(), "files and headers together") {
		t.Errorf("Unpack of %d bytes inflating to 256 MiB of headers = %v, want it refused", buf.Len(), err)
	}
}

// TestPackFollowsALinkedFolder: a function's folder given through a
// symbolic link is packed whole (the walk did not follow its root, and
// the bundle was empty).
func TestPackFollowsALinkedFolder(t *testing.T) {
	dir := t.TempDir()
	fn := filepath.Join(dir, "fn")
	os.Mkdir(fn, 0o755)
	os.WriteFile(filepath.Join(fn, "main.py"), []byte("print('hi')\n"), 0o644)
	link := filepath.Join(dir, "fnlink")
	if err := os.Symlink(fn, link); err != nil {
		t.Fatal(err)
	}
	direct, err := Pack(fn)
	if err != nil {
		t.Fatal(err)
	}
	linked, err := Pack(link)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(direct, linked) {
		t.Errorf("Pack through a link: %d bytes, want the folder's %d", len(linked), len(direct))
	}
}
