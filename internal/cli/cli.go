// Package cli is the gust command: `gust server` runs a node, and every other
// subcommand is a client of a node's API.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// DefaultServer is where the client looks for a server when neither
// --server nor GUST_URL says otherwise.
const DefaultServer = "http://127.0.0.1:8080"

const usage = `gust: a self-hosted Function-as-a-Service platform

Usage:
  gust server [--addr 127.0.0.1:8080] [--data-dir ./gust-data] [--demo]
  gust deploy <dir|file.wasm> [--name NAME] [-f gust.yaml]
  gust invoke <name[@version]> [-d data|@file|@-] [-H 'Name: value'] [-X method] [--path /p]
  gust ls
  gust describe <name>
  gust rm <name>
  gust alias set <name> <alias> <version> [--canary VERSION:PERCENT] ; gust alias rm <name> <alias>
  gust rollback <name>
  gust invoke <name> --async ; gust invocations get <id> ; gust dlq ls|replay <name> [id]
  gust login --server URL [--key KEY]
  gust whoami
  gust tenant create|set|ls|rm        (admin)
  gust key create|ls|revoke           (owner)
  gust secret set|ls|rm               (owner)
  gust audit [--limit N] [--all]      (owner)
  gust version

Client commands reach the server at --server URL, or $GUST_URL, or the one 'gust
login' saved, or ` + DefaultServer + `; with the key from --key, or $GUST_KEY, or
'gust login', or ./gust-data/admin.key. An admin acts in another tenant with --tenant.
Run 'gust <command> -h' for a command's flags.
`

// env is what a command sees of the world besides its arguments.
type env struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
}

// Run runs the gust command with args (without the program name) and returns
// its exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, stdin: stdin, getenv: os.Getenv}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "server":
		err = e.server(ctx, rest)
	case "deploy":
		err = e.deploy(ctx, rest)
	case "invoke":
		err = e.invoke(ctx, rest)
	case "ls", "list":
		err = e.list(ctx, rest)
	case "describe":
		err = e.describe(ctx, rest)
	case "rm", "delete":
		err = e.remove(ctx, rest)
	case "version", "--version":
		err = e.version(ctx, rest)
	case "login":
		err = e.login(ctx, rest)
	case "whoami":
		err = e.whoami(ctx, rest)
	case "tenant":
		err = e.tenantCmd(ctx, rest)
	case "key":
		err = e.keyCmd(ctx, rest)
	case "secret":
		err = e.secretCmd(ctx, rest)
	case "audit":
		err = e.auditCmd(ctx, rest)
	case "alias":
		err = e.aliasCmd(ctx, rest)
	case "rollback":
		err = e.rollback(ctx, rest)
	case "invocations":
		err = e.invocationsCmd(ctx, rest)
	case "dlq":
		err = e.dlqCmd(ctx, rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "gust: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "gust %s: %v\n", cmd, err)
		return 2
	default:
		fmt.Fprintf(stderr, "gust %s: %v\n", cmd, err)
		return 1
	}
}

// usageError is a mistake in how a command was called.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// parse parses flags wherever they stand among the positional arguments
// (`gust invoke echo -d x` as well as `gust invoke -d x echo`), and checks
// the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, wantArgs int, argsUsage string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if wantArgs >= 0 && len(positional) != wantArgs {
		if wantArgs == 0 {
			return nil, usagef("takes no arguments, got %q", strings.Join(positional, " "))
		}
		return nil, usagef("usage: %s", argsUsage)
	}
	return positional, nil
}

// helpOn makes -h print the command's usage and flags to w.
func helpOn(fs *flag.FlagSet, w io.Writer, line string) {
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: %s\n", line)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// command starts a client command: a flag set with -h, --server, --key and
// --tenant, to which the caller adds its own flags, and finish, which parses
// args (flags anywhere among them; want positional arguments), and makes the
// client. line is the command's usage.
func (e *env) command(name, line string) (*flag.FlagSet, func(args []string, want int) ([]string, *client, error)) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	helpOn(fs, e.stdout, line)
	newClient := e.clientFlags(fs)
	return fs, func(args []string, want int) ([]string, *client, error) {
		pos, err := parse(fs, args, want, line)
		if err != nil {
			return nil, nil, err
		}
		c, err := newClient()
		if err != nil {
			return nil, nil, err
		}
		return pos, c, nil
	}
}
