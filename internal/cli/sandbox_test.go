package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/server"
)

// The tests below deploy hostile process functions and check, from the
// caller's side, that the sandbox holds: what the program can see, reach
// and change, and what the caller gets when it misbehaves.

// sandboxDeploy writes files and a gust.yaml into a temporary folder and
// deploys it with `gust deploy <dir>`. A file whose content starts with
// "#!" or is an ELF binary is made executable.
func sandboxDeploy(t *testing.T, n *node, spec string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(content, "#!") || strings.HasPrefix(content, "\x7fELF") {
			mode = 0o755
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // the umask may have narrowed it
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "gust.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return n.mustGust(t, "deploy", dir)
}

// sandboxCall invokes a function with body.
func sandboxCall(t *testing.T, n *node, name, body string) answer {
	t.Helper()
	return n.do(t, "POST", "/fn/default/"+name, "text/plain", strings.NewReader(body))
}

// sandboxMarker returns a string no process or file holds by chance.
func sandboxMarker(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// sandboxSections splits a program's output made of "== key" headers.
func sandboxSections(out string) map[string]string {
	m := map[string]string{}
	key := ""
	for line := range strings.SplitSeq(out, "\n") {
		if k, ok := strings.CutPrefix(line, "== "); ok {
			key = k
			m[key] = ""
			continue
		}
		m[key] += line + "\n"
	}
	return m
}

// stdioSpec is a raw-output stdio function running ./handler.sh, with a
// timeout of 10s unless extra sets one.
func stdioSpec(name string, extra string) string {
	if !strings.Contains(extra, "timeout:") {
		extra += "timeout: 10s\n"
	}
	return fmt.Sprintf("name: %s\nruntime: process\ncommand: [\"./handler.sh\"]\nprotocol: stdio\ncontent_type: text/plain\n%s", name, extra)
}

// TestSandboxCannotReadHostFiles: a function sees its own bundle and the
// host's system folders, nothing else: not /root, not the server's data
// folder and its admin key, not another function's bundle.
func TestSandboxCannotReadHostFiles(t *testing.T) {
	needProcessRuntime(t)
	dataDir := t.TempDir()
	n := startNode(t, dataDir)

	secretDir, err := os.MkdirTemp("/root", "gust-sandbox-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	hostSecret := sandboxMarker("host-secret-")
	hostSecretFile := filepath.Join(secretDir, "secret.txt")
	if err := os.WriteFile(hostSecretFile, []byte(hostSecret), 0o644); err != nil {
		t.Fatal(err)
	}

	otherSecret := sandboxMarker("other-secret-")
	sandboxDeploy(t, n, stdioSpec("other", ""), map[string]string{
		"handler.sh":       "#!/bin/sh\ncat other-secret.txt\n",
		"other-secret.txt": otherSecret,
	})
	if a := sandboxCall(t, n, "other", ""); a.status != 200 || a.body != otherSecret {
		t.Fatalf("the other function answered %d %q, want its own secret (the control)", a.status, a.body)
	}
	var otherFile string
	filepath.WalkDir(filepath.Join(dataDir, "bundles"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "other-secret.txt" {
			otherFile = p
		}
		return nil
	})
	if otherFile == "" {
		t.Fatalf("the other function's file is not under %s/bundles on the host", dataDir)
	}

	sandboxDeploy(t, n, stdioSpec("snoop", ""), map[string]string{
		"handler.sh": `#!/bin/sh
while IFS= read -r p; do
  echo "== $p"
  if [ -e "$p" ]; then echo "exists=yes"; else echo "exists=no"; fi
  cat -- "$p" 2>&1
  echo "rc=$?"
done
echo "== /"
ls -a /
exit 0
`,
	})
	adminKey := filepath.Join(dataDir, server.AdminKeyFile)
	if _, err := os.Stat(adminKey); err != nil {
		t.Fatalf("the admin key is not where the test looks for it: %v", err)
	}
	hidden := []string{
		hostSecretFile,
		"/root/" + filepath.Base(secretDir),
		"/root",
		adminKey,
		dataDir,
		filepath.Join(dataDir, "bundles"),
		otherFile,
		"/etc/shadow",
		"/home",
	}
	a := sandboxCall(t, n, "snoop", "/var/task/handler.sh\n"+strings.Join(hidden, "\n")+"\n")
	if a.status != 200 {
		t.Fatalf("snoop answered %d %s %q", a.status, a.code, a.body)
	}
	t.Logf("snoop printed:\n%s", a.body)
	for _, s := range []string{hostSecret, otherSecret, n.key} {
		if strings.Contains(a.body, s) {
			t.Errorf("the function read a secret of the host (%q):\n%s", s, a.body)
		}
	}
	out := sandboxSections(a.body)
	if own := out["/var/task/handler.sh"]; !strings.Contains(own, "exists=yes") || !strings.Contains(own, "while IFS") || !strings.Contains(own, "rc=0") {
		t.Errorf("the function cannot read its own bundle (the control):\n%s", own)
	}
	for _, p := range hidden {
		got, ok := out[p]
		if !ok {
			t.Errorf("no output for %s:\n%s", p, a.body)
			continue
		}
		if !strings.Contains(got, "exists=no") || !strings.Contains(got, "No such file or directory") || !strings.Contains(got, "rc=1") {
			t.Errorf("the function sees the host's %s, want No such file:\n%s", p, got)
		}
	}
	allowed := map[string]bool{".": true, "..": true, "bin": true, "sbin": true, "lib": true, "lib32": true, "lib64": true, "libx32": true,
		"usr": true, "etc": true, "var": true, "tmp": true, "proc": true, "dev": true}
	for name := range strings.FieldsSeq(out["/"]) {
		if !allowed[name] {
			t.Errorf("the sandbox's root holds %q; want only the system folders, /etc, /var/task, /tmp, /proc and /dev:\n%s", name, out["/"])
		}
	}
}

// TestSandboxSeesOnlyItsOwnProcesses: the program runs in a PID namespace of
// its own, under Gust's init (PID 1), and sees neither the server nor any
// other host process.
func TestSandboxSeesOnlyItsOwnProcesses(t *testing.T) {
	needProcessRuntime(t)
	n := startNode(t, t.TempDir())
	sandboxDeploy(t, n, stdioSpec("ps", ""), map[string]string{
		"handler.sh": `#!/bin/sh
read hostpid
echo "pid=$$"
ls /proc | grep '^[0-9][0-9]*$' > /tmp/pids
echo "count=$(wc -l < /tmp/pids)"
echo "pids=$(tr '\n' ' ' < /tmp/pids)"
echo "init=$(tr '\0' ' ' < /proc/1/cmdline)"
if [ -e /proc/$hostpid ]; then echo "host=visible"; else echo "host=hidden"; fi
kill -0 $hostpid 2>/dev/null && echo "signal=delivered" || echo "signal=failed"
kill -KILL -1 2>/dev/null
echo "hostname=$(cat /proc/sys/kernel/hostname)"
exit 0
`,
	})
	a := sandboxCall(t, n, "ps", strconv.Itoa(os.Getpid())+"\n")
	if a.status != 200 {
		t.Fatalf("ps answered %d %s %q", a.status, a.code, a.body)
	}
	t.Logf("ps printed:\n%s", a.body)
	kv := map[string]string{}
	for line := range strings.SplitSeq(a.body, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	if pid, err := strconv.Atoi(kv["pid"]); err != nil || pid < 2 || pid > 128 || pid == os.Getpid() {
		t.Errorf("the program's PID is %q, want a small one of its own namespace:\n%s", kv["pid"], a.body)
	}
	if c, err := strconv.Atoi(kv["count"]); err != nil || c < 1 || c > 4 {
		t.Errorf("the program sees %q processes (%s), want only its own few:\n%s", kv["count"], kv["pids"], a.body)
	}
	if kv["init"] != "gust-sandbox-init" {
		t.Errorf("PID 1 is %q, want the sandbox's init", kv["init"])
	}
	if kv["host"] != "hidden" || kv["signal"] != "failed" {
		t.Errorf("the server's process (PID %d) is %s to the function and a signal to it %s, want hidden and failed", os.Getpid(), kv["host"], kv["signal"])
	}
	if kv["hostname"] != "sandbox" {
		t.Errorf("hostname is %q, want sandbox", kv["hostname"])
	}
	// kill -1 reached only the sandbox, and not its init: the server
	// still serves, and so does the function.
	if a := n.do(t, "GET", "/healthz", "", nil); a.status != 200 {
		t.Errorf("healthz after the function's kill -1: %d", a.status)
	}
	if a := sandboxCall(t, n, "ps", strconv.Itoa(os.Getpid())+"\n"); a.status != 200 || !strings.Contains(a.body, "init=gust-sandbox-init") {
		t.Errorf("the function after its kill -1: %d %q", a.status, a.body)
	}
}

const sandboxNetProbe = `#!/usr/bin/python3
import socket, sys

def connect(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        return "connected"
    except OSError as e:
        return "failed: %s" % e
    finally:
        s.close()

# The control: a listener of the sandbox's own is reachable.
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
print("== self")
print(connect("127.0.0.1", l.getsockname()[1]))
for target in sys.stdin.read().split():
    print("== " + target)
    kind, _, rest = target.partition(":")
    if kind == "resolve":
        try:
            print("resolved:", socket.getaddrinfo(rest, 80))
        except OSError as e:
            print("failed:", e)
    else:
        host, port = rest.rsplit(":", 1)
        print(connect(host, port))
print("== interfaces")
print(" ".join(name for _, name in socket.if_nameindex()))
print("== vsock")
try:
    v = socket.socket(40, socket.SOCK_STREAM)  # AF_VSOCK: no namespace confines it
    v.close()
    print("opened")
except OSError as e:
    print("failed:", e)
`

// TestSandboxNetwork: with network none, a function reaches only its own
// loopback: not the server, not the host's Postgres, not another host
// address, and it cannot resolve names nor open a vsock socket (which no
// network namespace confines).
func TestSandboxNetwork(t *testing.T) {
	needProcessRuntime(t)
	// By default, a tenant cannot ask for the host's network.
	strict := startNode(t, t.TempDir())
	if a := strict.deployRaw(t, "hostnet", `{"runtime":"process","command":["./handler.sh"],"protocol":"stdio","network":"host"}`, sandboxTarGz(t, &tar.Header{Name: "handler.sh", Mode: 0o755, Size: 3, Typeflag: tar.TypeReg})); a.status != 422 || !strings.Contains(a.msg, "--allow-host-network") {
		t.Errorf("network: host on a server that does not allow it: %d %q, want 422 naming the flag", a.status, a.msg)
	}
	n := startNode(t, t.TempDir(), func(c *server.Config) { c.AllowHostNetwork = true })
	sandboxDeploy(t, n, stdioSpec("net", ""), map[string]string{"handler.sh": sandboxNetProbe})
	sandboxDeploy(t, n, stdioSpec("hostnet", "network: host\n"), map[string]string{"handler.sh": sandboxNetProbe})

	serverAddr := n.srv.Addr()
	// The control: with the host's network, the same program reaches the server.
	a := sandboxCall(t, n, "hostnet", "tcp:"+serverAddr)
	if out := sandboxSections(a.body); a.status != 200 || !strings.Contains(out["tcp:"+serverAddr], "connected") {
		t.Fatalf("with network: host, the probe answered %d %q; want it to reach the server (the control)", a.status, a.body)
	}

	targets := []string{"tcp:" + serverAddr, "tcp:127.0.0.1:5432", "tcp:1.1.1.1:443"}
	// An address of the host's own, other than its loopback.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, addr := range addrs {
			if ip, ok := addr.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
				targets = append(targets, "tcp:"+ip.IP.String()+":"+strings.Split(serverAddr, ":")[1])
				break
			}
		}
	}
	a = sandboxCall(t, n, "net", strings.Join(append(targets, "resolve:example.com"), "\n"))
	if a.status != 200 {
		t.Fatalf("net answered %d %s %q", a.status, a.code, a.body)
	}
	t.Logf("net printed:\n%s", a.body)
	out := sandboxSections(a.body)
	if !strings.Contains(out["self"], "connected") {
		t.Errorf("the function cannot reach its own listener (the control): %q", out["self"])
	}
	for _, target := range targets {
		got, ok := out[target]
		if !ok || !strings.Contains(got, "failed:") {
			t.Errorf("connect to %s from the sandbox: %q, want it to fail", strings.TrimPrefix(target, "tcp:"), got)
		}
	}
	for _, target := range targets[:2] {
		if !strings.Contains(out[target], "Connection refused") {
			t.Errorf("connect to %s: %q, want Connection refused (nothing listens on the sandbox's own loopback)", target, out[target])
		}
	}
	if got := out["tcp:1.1.1.1:443"]; !strings.Contains(got, "Network is unreachable") {
		t.Errorf("connect to 1.1.1.1:443: %q, want Network is unreachable", got)
	}
	if got := out["resolve:example.com"]; !strings.Contains(got, "failed:") {
		t.Errorf("resolving example.com in the sandbox: %q, want a failure", got)
	}
	if got := out["vsock"]; !strings.Contains(got, "Address family not supported") {
		t.Errorf("a vsock socket in the sandbox: %q, want the family refused", got)
	}
	if got := strings.TrimSpace(out["interfaces"]); got != "lo" {
		t.Errorf("the sandbox's network interfaces are %q, want lo only", got)
	}
}

// TestSandboxReadOnlyBundle: the bundle and the root are read-only; /tmp
// is the function's to write.
func TestSandboxReadOnlyBundle(t *testing.T) {
	needProcessRuntime(t)
	dataDir := t.TempDir()
	n := startNode(t, dataDir)
	handler := `#!/bin/sh
try() {
  out=$("$@" 2>&1)
  rc=$?
  echo "== $*"
  echo "rc=$rc $out"
}
try sh -c 'echo evil > /var/task/evil'
try mkdir /var/task/evil-dir
try rm -f /var/task/handler.sh
try chmod 777 /var/task/handler.sh
try sh -c 'echo evil >> /var/task/handler.sh'
try touch /evil
try touch /usr/evil
try sh -c 'echo evil >> /etc/passwd'
try sh -c 'echo hello > /tmp/f && cat /tmp/f'
exit 0
`
	sandboxDeploy(t, n, stdioSpec("ro", ""), map[string]string{"handler.sh": handler})
	a := sandboxCall(t, n, "ro", "")
	if a.status != 200 {
		t.Fatalf("ro answered %d %s %q", a.status, a.code, a.body)
	}
	t.Logf("ro printed:\n%s", a.body)
	out := sandboxSections(a.body)
	readOnly := []string{
		"sh -c echo evil > /var/task/evil", "mkdir /var/task/evil-dir", "rm -f /var/task/handler.sh",
		"chmod 777 /var/task/handler.sh", "touch /evil", "touch /usr/evil",
	}
	for _, k := range readOnly {
		if got := out[k]; strings.HasPrefix(got, "rc=0") || !strings.Contains(got, "Read-only file system") {
			t.Errorf("%s in the sandbox: %q, want it to fail with Read-only file system", k, got)
		}
	}
	// Appending to an existing file fails too: the permission check may
	// come before the mount's.
	for _, k := range []string{"sh -c echo evil >> /var/task/handler.sh", "sh -c echo evil >> /etc/passwd"} {
		if got := out[k]; strings.HasPrefix(got, "rc=0") || !(strings.Contains(got, "Read-only file system") || strings.Contains(got, "Permission denied")) {
			t.Errorf("%s in the sandbox: %q, want it to fail", k, got)
		}
	}
	if got := strings.TrimSpace(out["sh -c echo hello > /tmp/f && cat /tmp/f"]); got != "rc=0 hello" {
		t.Errorf("writing /tmp: %q, want rc=0 hello", got)
	}
	// On the host, the bundle is as deployed.
	filepath.WalkDir(filepath.Join(dataDir, "bundles"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.HasPrefix(d.Name(), "evil") {
			t.Errorf("the function created %s on the host", p)
		}
		if d.Name() == "handler.sh" {
			if b, _ := os.ReadFile(p); string(b) != handler {
				t.Errorf("the function changed its bundle's handler.sh on the host: %q", b)
			}
		}
		return nil
	})
	if a := sandboxCall(t, n, "ro", ""); a.status != 200 || !strings.Contains(a.body, "rc=0 hello") {
		t.Errorf("second call: %d %q, want the handler intact", a.status, a.body)
	}
}

// TestSandboxNoPrivileges: the program runs as uid 1000 without
// capabilities; setuid binaries, setuid(0), mount and user namespaces
// give it nothing.
func TestSandboxNoPrivileges(t *testing.T) {
	needProcessRuntime(t)
	var setuidBin string
	for _, p := range []string{"/usr/bin/su", "/usr/bin/mount", "/usr/bin/passwd"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&fs.ModeSetuid != 0 && fi.Sys().(*syscall.Stat_t).Uid == 0 {
			setuidBin = p
			break
		}
	}
	n := startNode(t, t.TempDir())
	sandboxDeploy(t, n, stdioSpec("priv", ""), map[string]string{
		"handler.sh": `#!/bin/sh
read setuid_bin
echo "== id"
id -u; id -g; id -G
echo "== status"
grep -E '^(Uid|NoNewPrivs|CapEff|CapPrm|Seccomp):' /proc/self/status
echo "== setuid0"
python3 -c '
import os
try:
    os.setuid(0)
    print("ok euid=%d" % os.geteuid())
except OSError as e:
    print("failed:", e)'
echo "== mount-syscall"
python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir("/tmp/m")
r = libc.mount(b"tmpfs", b"/tmp/m", b"tmpfs", 0, None)
print("ok" if r == 0 else "failed: " + os.strerror(ctypes.get_errno()))'
echo "== mount"
/usr/bin/mount -t tmpfs tmpfs /tmp/m 2>&1; echo "rc=$?"
echo "== unshare"
unshare -r id -u 2>&1; echo "rc=$?"
echo "== unshare-net"
unshare -n true 2>&1; echo "rc=$?"
echo "== setuid-bin"
# The setuid binary runs in the background, waiting on its stdin, while
# its credentials are read from /proc.
if [ -n "$setuid_bin" ]; then
  sleep 3 | "$setuid_bin" >/dev/null 2>&1 &
  sleep 0.3
  for p in /proc/[0-9]*; do
    if [ "$(readlink $p/exe)" = "$setuid_bin" ]; then grep '^Uid:' $p/status; fi
  done
  "$setuid_bin" --version </dev/null >/dev/null 2>&1 ; echo "ran rc=$?"
fi
echo "== nosuid"
python3 -c 'import os; print("nosuid" if os.statvfs("/usr").f_flag & os.ST_NOSUID else "suid allowed")'
exit 0
`,
	})
	a := sandboxCall(t, n, "priv", setuidBin+"\n")
	if a.status != 200 {
		t.Fatalf("priv answered %d %s %q", a.status, a.code, a.body)
	}
	t.Logf("priv printed:\n%s", a.body)
	out := sandboxSections(a.body)
	if got := strings.Fields(out["id"]); len(got) != 3 || got[0] != "1000" || got[1] != "1000" || got[2] != "1000" {
		t.Errorf("id in the sandbox: %q, want uid, gid and groups 1000", out["id"])
	}
	st := out["status"]
	for _, want := range []string{"NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "Seccomp:\t2", "Uid:\t1000\t1000\t1000\t1000"} {
		if !strings.Contains(st, want) {
			t.Errorf("/proc/self/status lacks %q:\n%s", want, st)
		}
	}
	if got := out["setuid0"]; !strings.Contains(got, "failed:") || !strings.Contains(got, "Operation not permitted") {
		t.Errorf("setuid(0) in the sandbox: %q, want Operation not permitted", got)
	}
	if got := out["mount-syscall"]; !strings.Contains(got, "failed: Operation not permitted") {
		t.Errorf("mount(2) in the sandbox: %q, want Operation not permitted", got)
	}
	if got := out["mount"]; strings.Contains(got, "rc=0") {
		t.Errorf("mount(8) succeeded in the sandbox: %q", got)
	}
	for _, k := range []string{"unshare", "unshare-net"} {
		if got := out[k]; strings.Contains(got, "rc=0") || !strings.Contains(got, "Operation not permitted") {
			t.Errorf("%s in the sandbox: %q, want Operation not permitted", k, got)
		}
	}
	if setuidBin != "" {
		got := out["setuid-bin"]
		if !strings.Contains(got, "Uid:") {
			t.Errorf("the setuid binary %s was not seen running (the control): %q", setuidBin, got)
		}
		for line := range strings.SplitSeq(got, "\n") {
			if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[2] != "1000" {
				t.Errorf("setuid %s runs with %q in the sandbox, want effective uid 1000", setuidBin, line)
			}
		}
	} else {
		t.Log("no setuid-root binary on this host: that check is skipped")
	}
	if got := strings.TrimSpace(out["nosuid"]); got != "nosuid" {
		t.Errorf("/usr in the sandbox: %q, want it mounted nosuid", got)
	}
}

// TestSandboxForkBomb: the PID limit stops a fork bomb, and the server
// and other functions stay responsive meanwhile.
func TestSandboxForkBomb(t *testing.T) {
	needProcessRuntime(t)
	n := startNode(t, t.TempDir())
	sandboxDeploy(t, n, stdioSpec("ok", ""), map[string]string{"handler.sh": "#!/bin/sh\necho fine\n"})
	// Counts the children it can fork before the kernel says no.
	sandboxDeploy(t, n, stdioSpec("forks", ""), map[string]string{"handler.sh": `#!/usr/bin/python3
import os, time
n = 0
try:
    for _ in range(10000):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
    print("forked %d, never refused" % n)
except OSError as e:
    print("forked %d, then: %s" % (n, e))
`})
	a := sandboxCall(t, n, "forks", "")
	if a.status != 200 {
		t.Fatalf("forks answered %d %s %q", a.status, a.code, a.body)
	}
	var forked int
	if _, err := fmt.Sscanf(a.body, "forked %d", &forked); err != nil || forked >= 128 || forked < 16 || !strings.Contains(a.body, "Resource temporarily unavailable") {
		t.Errorf("forks answered %q, want fewer than 128 children and then Resource temporarily unavailable", a.body)
	}

	// Real bombs, in functions with a short timeout: a shell one, which
	// dies of its first refused fork, and one whose every process forks
	// for ever, ignoring refusals, until the timeout.
	sandboxDeploy(t, n, stdioSpec("shbomb", "timeout: 3s\n"), map[string]string{"handler.sh": `#!/bin/sh
bomb() { bomb | bomb & }
bomb
for i in $(seq 1 1000); do sleep 30 & done
sleep 60
`})
	sandboxDeploy(t, n, stdioSpec("pybomb", "timeout: 3s\nmemory_mb: 512\n"), map[string]string{"handler.sh": `#!/usr/bin/python3
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
`})
	for _, c := range []struct {
		name  string
		codes []string
	}{{"shbomb", []string{"timeout", "function_error"}}, {"pybomb", []string{"timeout"}}} {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan answer, 1)
			start := time.Now()
			go func() { done <- sandboxCall(t, n, c.name, "") }()
			time.Sleep(300 * time.Millisecond) // the bomb is going off
			for i := range 3 {
				t0 := time.Now()
				if a := n.do(t, "GET", "/healthz", "", nil); a.status != 200 || time.Since(t0) > time.Second {
					t.Errorf("healthz during the bomb (%d): %d after %s", i, a.status, time.Since(t0))
				}
				t0 = time.Now()
				if a := sandboxCall(t, n, "ok", ""); a.status != 200 || a.body != "fine\n" || time.Since(t0) > 2*time.Second {
					t.Errorf("another function during the bomb (%d): %d %q after %s", i, a.status, a.body, time.Since(t0))
				}
				time.Sleep(200 * time.Millisecond)
			}
			select {
			case a := <-done:
				if a.status < 500 || !slices.Contains(c.codes, a.code) {
					t.Errorf("the bomb answered %d %s %q after %s, want an error of %v", a.status, a.code, a.msg, time.Since(start), c.codes)
				}
				if a.code == "timeout" && (a.status != 504 || !strings.Contains(a.msg, "timeout of 3s")) {
					t.Errorf("the bomb answered %d %s %q, want 504 and the timeout", a.status, a.code, a.msg)
				}
				t.Logf("the bomb answered %d %s %q after %s", a.status, a.code, a.msg, time.Since(start))
			case <-time.After(15 * time.Second):
				t.Fatal("the fork bomb's request did not end within 15s")
			}
			if a := sandboxCall(t, n, "ok", ""); a.status != 200 || a.body != "fine\n" {
				t.Errorf("another function after the bomb: %d %q", a.status, a.body)
			}
		})
	}
}

const sandboxHog = `
import sys
chunks = []
for i in range(512):
    chunks.append(b"x" * (1 << 20))
print("allocated 512 MiB, the limit did not hold")
`

// TestSandboxMemoryHog: a program that grows past memory_mb is killed and
// the caller gets 502 out_of_memory, with both protocols.
func TestSandboxMemoryHog(t *testing.T) {
	needProcessRuntime(t)
	n := startNode(t, t.TempDir())
	sandboxDeploy(t, n, "name: hog-http\nruntime: process\ncommand: [\"python3\", \"app.py\"]\nmemory_mb: 64\ntimeout: 20s\n", map[string]string{"app.py": `
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hog":
            chunks = []
            for i in range(512):
                chunks.append(b"x" * (1 << 20))
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`})
	sandboxDeploy(t, n, "name: hog-stdio\nruntime: process\ncommand: [\"python3\", \"hog.py\"]\nprotocol: stdio\ncontent_type: text/plain\nmemory_mb: 64\ntimeout: 20s\n",
		map[string]string{"hog.py": sandboxHog})

	if a := n.do(t, "GET", "/fn/default/hog-http/ok", "", nil); a.status != 200 || a.body != "ok" {
		t.Fatalf("hog-http /ok answered %d %q (the control)", a.status, a.body)
	}
	for _, c := range []struct{ name, path string }{{"http", "/fn/default/hog-http/hog"}, {"stdio", "/fn/default/hog-stdio"}} {
		t.Run(c.name, func(t *testing.T) {
			a := n.do(t, "GET", c.path, "", nil)
			if a.status != 502 || a.code != "out_of_memory" || !strings.Contains(a.msg, "ran out of memory") {
				t.Errorf("the hog answered %d %s %q %q, want 502 out_of_memory", a.status, a.code, a.msg, a.body)
			}
		})
	}
	// A new instance serves after the killed one.
	if a := n.do(t, "GET", "/fn/default/hog-http/ok", "", nil); a.status != 200 || a.body != "ok" {
		t.Errorf("hog-http /ok after the OOM kill answered %d %s %q", a.status, a.code, a.body)
	}
}

// sandboxMarkedProcs returns the host's processes whose command line
// holds marker.
func sandboxMarkedProcs(marker string) []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(marker)) {
			out = append(out, d.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// TestSandboxTimeoutKillsTheTree: at the timeout, every process the
// function started is gone from the host, daemons and grandchildren too.
func TestSandboxTimeoutKillsTheTree(t *testing.T) {
	needProcessRuntime(t)
	n := startNode(t, t.TempDir())
	marker := sandboxMarker("gust-marker-")
	sleep, err := os.ReadFile("/usr/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	sandboxDeploy(t, n, stdioSpec("tree", "timeout: 1s\n"), map[string]string{
		marker: string(sleep),
		"handler.sh": fmt.Sprintf(`#!/bin/sh
./%[1]s 1000 &
sh -c './%[1]s 1001 & ./%[1]s 1002' &
setsid ./%[1]s 1003 &
nohup ./%[1]s 1004 >/dev/null 2>&1 &
(trap '' TERM HUP INT; exec ./%[1]s 1005) &
./%[1]s 1006
`, marker),
	})
	done := make(chan answer, 1)
	go func() { done <- sandboxCall(t, n, "tree", "") }()
	// The control: the processes run on the host while the request does.
	waitFor(t, func() bool { return len(sandboxMarkedProcs(marker)) >= 7 })
	a := <-done
	if a.status != 504 || a.code != "timeout" || !strings.Contains(a.msg, "timeout of 1s") {
		t.Errorf("tree answered %d %s %q, want 504 timeout", a.status, a.code, a.msg)
	}
	deadline := time.Now().Add(5 * time.Second)
	for left := sandboxMarkedProcs(marker); len(left) > 0; left = sandboxMarkedProcs(marker) {
		if time.Now().After(deadline) {
			t.Fatalf("5s after the timeout, the function's processes still run on the host:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSandboxOutputFlood: an endless or oversized stdout is cut off with
// 502 bad_response; a flood of log lines leaves the server's log bounded.
func TestSandboxOutputFlood(t *testing.T) {
	needProcessRuntime(t)
	n := startNode(t, t.TempDir())
	sandboxDeploy(t, n, stdioSpec("big", ""), map[string]string{"handler.sh": "#!/bin/sh\nhead -c 7340032 /dev/zero | tr '\\0' x\nexit 0\n"})
	sandboxDeploy(t, n, stdioSpec("endless", ""), map[string]string{"handler.sh": "#!/bin/sh\nexec yes flood\n"})
	sandboxDeploy(t, n, stdioSpec("noisy", ""), map[string]string{"handler.sh": "#!/bin/sh\nhead -c 20000000 /dev/zero | tr '\\0' y | fold -w 100 >&2\necho done\n"})
	sandboxDeploy(t, n, "name: chatty\nruntime: process\ncommand: [\"python3\", \"app.py\"]\ntimeout: 10s\n", map[string]string{"app.py": `
import os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

def flood():
    line = "flooding stdout " + "z" * 80 + "\n"
    while True:
        sys.stdout.write(line)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"still serving"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

threading.Thread(target=flood, daemon=True).start()
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`})
	for _, name := range []string{"big", "endless"} {
		t.Run(name, func(t *testing.T) {
			t0 := time.Now()
			a := sandboxCall(t, n, name, "")
			if a.status != 502 || a.code != "bad_response" || !strings.Contains(a.msg, "larger than 6291456 bytes") {
				t.Errorf("%s answered %d %s %q after %s, want 502 bad_response: larger than 6291456 bytes", name, a.status, a.code, a.msg, time.Since(t0))
			}
		})
	}
	t.Run("stderr", func(t *testing.T) {
		if a := sandboxCall(t, n, "noisy", ""); a.status != 200 || a.body != "done\n" {
			t.Errorf("noisy answered %d %s %q", a.status, a.code, a.msg)
		}
	})
	t.Run("http stdout", func(t *testing.T) {
		for i := range 5 {
			if a := n.do(t, "GET", "/fn/default/chatty", "", nil); a.status != 200 || a.body != "still serving" {
				t.Errorf("chatty call %d answered %d %s %q", i, a.status, a.code, a.body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	if !strings.Contains(n.logs.String(), "flooding stdout") || !strings.Contains(n.logs.String(), "yyyy") {
		t.Errorf("the server's log lacks the functions' output (the control)")
	}
	t0 := time.Now()
	if a := n.do(t, "GET", "/healthz", "", nil); a.status != 200 || time.Since(t0) > time.Second {
		t.Errorf("healthz after the floods: %d after %s", a.status, time.Since(t0))
	}
	// The chatty program is still flooding: the log must stay bounded.
	time.Sleep(time.Second)
	size1 := len(n.logs.String())
	time.Sleep(time.Second)
	size2 := len(n.logs.String())
	t.Logf("the server's log: %d bytes, then %d a second later", size1, size2)
	if size2 > 4<<20 {
		t.Errorf("the server's log grew to %d bytes", size2)
	}
	if size2-size1 > 64<<10 {
		t.Errorf("the server's log grew by %d bytes in a second while no request ran", size2-size1)
	}
}

// sandboxTarGz builds a .tar.gz by hand, for entries `gust deploy` would
// never make.
func sandboxTarGz(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Mode == 0 {
			h.Mode = 0o755
		}
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = "#!/bin/sh\necho evil\n"
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if body != "" {
			tw.Write([]byte(body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return buf.Bytes()
}

// TestSandboxHostileDeploys: bundles that climb out or link out, commands
// that do not exist, and specs with unknown protocols or networks are
// refused with a message that names the problem, and the function's
// previous version keeps serving.
func TestSandboxHostileDeploys(t *testing.T) {
	needProcessRuntime(t)
	dataDir := t.TempDir()
	n := startNode(t, dataDir)
	_, err := os.Lstat("/tmp/evil")
	tmpEvilBefore := err == nil
	sandboxDeploy(t, n, stdioSpec("victim", ""), map[string]string{"handler.sh": "#!/bin/sh\necho version one\n"})
	if a := sandboxCall(t, n, "victim", ""); a.status != 200 || a.body != "version one\n" {
		t.Fatalf("victim answered %d %q", a.status, a.body)
	}
	good := `{"name":"victim","runtime":"process","command":["./handler.sh"],"protocol":"stdio","content_type":"text/plain"}`
	handler := &tar.Header{Name: "handler.sh", Typeflag: tar.TypeReg}
	tests := []struct {
		name     string
		spec     string
		artifact []byte
		status   int
		code     string
		msg      []string
	}{
		{"entry climbs out", good, sandboxTarGz(t, handler, &tar.Header{Name: "../evil", Typeflag: tar.TypeReg}),
			422, "bad_artifact", []string{`"../evil"`, "climb out"}},
		{"entry climbs out of a folder", good, sandboxTarGz(t, handler, &tar.Header{Name: "a/../../evil", Typeflag: tar.TypeReg}),
			422, "bad_artifact", []string{`"a/../../evil"`, "climb out"}},
		{"absolute entry", good, sandboxTarGz(t, handler, &tar.Header{Name: "/tmp/evil", Typeflag: tar.TypeReg}),
			422, "bad_artifact", []string{`"/tmp/evil"`, "absolute"}},
		{"absolute symlink", good, sandboxTarGz(t, handler, &tar.Header{Name: "passwd", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}),
			422, "bad_artifact", []string{`"passwd"`, "/etc/passwd", "relative path inside the bundle"}},
		{"symlink climbs out", good, sandboxTarGz(t, handler, &tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../root"}),
			422, "bad_artifact", []string{`"up"`}},
		{"entry through a symlink", good, sandboxTarGz(t, handler, &tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: "."}, &tar.Header{Name: "d/evil", Typeflag: tar.TypeReg}),
			422, "bad_artifact", []string{`"d/evil"`, "symbolic link"}},
		{"hard link", good, sandboxTarGz(t, handler, &tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}),
			422, "bad_artifact", []string{`"hard"`, "hard links"}},
		{"device", good, sandboxTarGz(t, handler, &tar.Header{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}),
			422, "bad_artifact", []string{`"mem"`}},
		{"not a bundle", good, []byte("#!/bin/sh\necho hi\n"), 422, "bad_artifact", []string{".tar.gz"}},
		{"command not in the bundle", `{"name":"victim","runtime":"process","command":["./nope"],"protocol":"stdio"}`, sandboxTarGz(t, handler),
			422, "bad_artifact", []string{"./nope", "not a file in the bundle"}},
		{"command not on the host", `{"name":"victim","runtime":"process","command":["python4","app.py"]}`, sandboxTarGz(t, handler),
			422, "bad_artifact", []string{"python4", "not installed"}},
		{"command outside the sandbox", `{"name":"victim","runtime":"process","command":["/root/evil"]}`, sandboxTarGz(t, handler),
			422, "bad_artifact", []string{"/root/evil", "not in the sandbox"}},
		{"protocol grpc", `{"name":"victim","runtime":"process","command":["./handler.sh"],"protocol":"grpc"}`, sandboxTarGz(t, handler),
			400, "bad_request", []string{`protocol "grpc" is unknown`}},
		{"network bridge", `{"name":"victim","runtime":"process","command":["./handler.sh"],"network":"bridge"}`, sandboxTarGz(t, handler),
			400, "bad_request", []string{`network "bridge" is unknown`}},
		{"command on wasm", `{"name":"victim","command":["./handler.sh"]}`, helloWasm,
			400, "bad_request", []string{"command is only for runtime \"process\""}},
		{"process without command", `{"name":"victim","runtime":"process"}`, sandboxTarGz(t, handler),
			400, "bad_request", []string{"command is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := n.deployRaw(t, "victim", tt.spec, tt.artifact)
			if a.status != tt.status || a.code != tt.code {
				t.Errorf("deploy answered %d %s %q, want %d %s", a.status, a.code, a.msg, tt.status, tt.code)
			}
			for _, m := range tt.msg {
				if !strings.Contains(a.msg, m) {
					t.Errorf("deploy's message %q does not say %q", a.msg, m)
				}
			}
			if a := sandboxCall(t, n, "victim", ""); a.status != 200 || a.body != "version one\n" {
				t.Errorf("after the failed deploy, victim answered %d %s %q, want version one", a.status, a.code, a.body)
			}
		})
	}
	var f struct{ Latest int }
	if a := n.do(t, "GET", "/v1/functions/victim", "", nil); json.Unmarshal([]byte(a.body), &f) != nil || f.Latest != 1 {
		t.Errorf("after the failed deploys, victim's latest version is %d (%s), want 1", f.Latest, a.body)
	}
	// Nothing landed outside the bundles' folder.
	for _, p := range []string{filepath.Join(dataDir, "evil"), filepath.Join(dataDir, "bundles", "evil"), "/tmp/evil"} {
		if _, err := os.Lstat(p); err == nil && !(p == "/tmp/evil" && tmpEvilBefore) {
			t.Errorf("a hostile bundle wrote %s", p)
		}
	}
}

// TestSandboxDiesWithItsServer: a server killed hard (SIGKILL, no drain)
// takes its sandboxes with it, an http program and a stdio run alike, and
// the next server on the data dir serves the functions again.
func TestSandboxDiesWithItsServer(t *testing.T) {
	needProcessRuntime(t)
	if testing.Short() {
		t.Skip("starts a server process twice")
	}
	bin := buildGust(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := startProcess(t, bin, addr, dir)
	n := &node{url: "http://" + addr, key: readKey(t, dir)}
	marker := sandboxMarker("gust-orphan-")
	sleep, err := os.ReadFile("/usr/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	// The http program starts a marked child and serves; the stdio run
	// starts one and waits.
	sandboxDeploy(t, n, "name: server\nruntime: process\ncommand: [python3, server.py]\n", map[string]string{
		marker: string(sleep),
		"server.py": fmt.Sprintf(`
import http.server, os, subprocess
subprocess.Popen(["./%s", "1000"])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`, marker),
	})
	sandboxDeploy(t, n, stdioSpec("waiter", "timeout: 60s\n"), map[string]string{
		marker:       string(sleep),
		"handler.sh": "#!/bin/sh\n./" + marker + " 1000\n",
	})
	if a := sandboxCall(t, n, "server", ""); a.status != 200 {
		t.Fatalf("server answered %d %q", a.status, a.body)
	}
	held, _ := http.NewRequest("POST", n.url+"/fn/default/waiter", nil)
	held.Header.Set("Authorization", "Bearer "+n.key)
	go http.DefaultClient.Do(held) // held until the kill
	waitFor(t, func() bool { return len(sandboxMarkedProcs(marker)) >= 2 })

	srv.Process.Kill()
	srv.Wait()
	waitFor(t, func() bool { return len(sandboxMarkedProcs(marker)) == 0 })

	startProcess(t, bin, addr, dir)
	if a := sandboxCall(t, n, "server", ""); a.status != 200 || a.body != "ok" {
		t.Errorf("after the restart server answered %d %q", a.status, a.body)
	}
}
