package cli

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoginReadsTheKeyUnseen: typed at a terminal, the key gust login
// asks for is not echoed (it stayed on the screen, and in any transcript);
// a pipe or a file is no terminal.
func TestLoginReadsTheKeyUnseen(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	if !isTerminal(tty) || isTerminal(&bytes.Buffer{}) {
		t.Fatal("isTerminal cannot tell a terminal from a buffer")
	}
	const key = "gust_abc_secretsecret"
	got := make(chan string, 1)
	go func() {
		line, _ := readLineHidden(tty)
		got <- line
	}()
	time.Sleep(100 * time.Millisecond) // echo is off once the read waits
	master.Write([]byte(key + "\n"))
	select {
	case line := <-got:
		if strings.TrimSpace(line) != key {
			t.Errorf("read %q, want the key", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the key typed was not read")
	}
	shown := make(chan string, 1)
	go func() { // what the terminal would show; the master's close ends the read
		echoed := make([]byte, 256)
		k, _ := master.Read(echoed)
		shown <- string(echoed[:max(k, 0)])
	}()
	tty.Write([]byte("\n")) // something to show in any case, after the echo if any
	select {
	case s := <-shown:
		if strings.Contains(s, "secret") {
			t.Errorf("the terminal showed %q, want the key unseen", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the terminal showed nothing at all")
	}
}
