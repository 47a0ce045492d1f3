package cli

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/gust-faas/gust/internal/api"
	"github.com/gust-faas/gust/internal/tenant"
)

func (e *env) login(ctx context.Context, args []string) error {
	fs, finish := e.command("login", "gust login --server URL [--key KEY] (without --key, the key is read from stdin)")
	_, c, err := finish(args, 0)
	if err != nil {
		return err
	}
	if fs.Lookup("key").Value.String() == "" && e.getenv("GUST_KEY") == "" {
		fmt.Fprint(e.stderr, "API key: ")
		var line string
		var err error
		if f, ok := e.stdin.(*os.File); ok && isTerminal(f) {
			line, err = readLineHidden(f) // not echoed
			fmt.Fprintln(e.stderr)
		} else {
			line, err = bufio.NewReader(e.stdin).ReadString('\n')
		}
		if err != nil && line == "" {
			return usagef("no key given: pass --key or type it on stdin")
		}
		c.key = strings.TrimSpace(line)
	}
	var who api.Whoami
	if _, err := c.call(ctx, http.MethodGet, "/v1/whoami", nil, "", &who); err != nil {
		return err
	}
	path, err := e.saveConfig(config{Server: c.base, Key: c.key})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "logged in to %s as key %s (tenant %s, role %s); saved in %s\n", c.base, who.KeyID, who.Tenant, who.Role, path)
	return nil
}

func (e *env) whoami(ctx context.Context, args []string) error {
	_, finish := e.command("whoami", "gust whoami")
	_, c, err := finish(args, 0)
	if err != nil {
		return err
	}
	var who api.Whoami
	if _, err := c.call(ctx, http.MethodGet, "/v1/whoami", nil, "", &who); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "key %s, tenant %s, role %s, at %s\n", who.KeyID, who.Tenant, who.Role, c.base)
	return nil
}

// subcommand dispatches `gust <group> <verb> ...`.
func subcommand(args []string, group string, verbs map[string]func([]string) error) error {
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, v)
	}
	slices.Sort(names)
	if len(args) == 0 {
		return usagef("usage: gust %s <%s>", group, strings.Join(names, "|"))
	}
	fn, ok := verbs[args[0]]
	if !ok {
		return usagef("unknown command 'gust %s %s': use one of %s", group, args[0], strings.Join(names, ", "))
	}
	return fn(args[1:])
}

func (e *env) tenantCmd(ctx context.Context, args []string) error {
	return subcommand(args, "tenant", map[string]func([]string) error{
		"create": func(args []string) error { return e.tenantSet(ctx, args, true) },
		"set":    func(args []string) error { return e.tenantSet(ctx, args, false) },
		"ls": func(args []string) error {
			_, finish := e.command("tenant ls", "gust tenant ls")
			_, c, err := finish(args, 0)
			if err != nil {
				return err
			}
			var out api.TenantList
			if _, err := c.call(ctx, http.MethodGet, "/v1/tenants", nil, "", &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tFUNCTIONS\tMEMORY\tCONCURRENCY\tRATE\tCREATED")
			for _, t := range out.Tenants {
				q := t.Quotas
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, limit(q.MaxFunctions), limit(q.MaxMemoryMB), limit(q.MaxConcurrency), rateText(q), t.Created.Local().Format(time.DateOnly))
			}
			return tw.Flush()
		},
		"rm": func(args []string) error {
			return e.simpleDelete(ctx, args, "tenant rm", "gust tenant rm <name>", "/v1/tenants/", "deleted tenant %s\n")
		},
	})
}

// withUnit is limit with a unit after a number.
func withUnit(n int, unit string) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(n) + unit
}

// rateText says a tenant's request rate and burst.
func rateText(q tenant.Quotas) string {
	if q.RatePerSecond <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%g/s burst %d", q.RatePerSecond, max(q.Burst, int(q.RatePerSecond+0.999)))
}

func limit(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

// tenantSet creates a tenant (create) or changes its quotas (set).
func (e *env) tenantSet(ctx context.Context, args []string, create bool) error {
	verb := map[bool]string{true: "create", false: "set"}[create]
	line := "gust tenant " + verb + " <name> [--max-functions N] [--max-memory-mb N] [--max-concurrency N] [--rate R --burst B]"
	fs, finish := e.command("tenant "+verb, line)
	var q tenant.Quotas
	fs.IntVar(&q.MaxFunctions, "max-functions", 0, "most functions (0: unlimited)")
	fs.IntVar(&q.MaxMemoryMB, "max-memory-mb", 0, "most MiB of instances running at once (0: unlimited)")
	fs.IntVar(&q.MaxConcurrency, "max-concurrency", 0, "most invocations at once (0: unlimited)")
	fs.Float64Var(&q.RatePerSecond, "rate", 0, "requests per second (0: unlimited)")
	fs.IntVar(&q.Burst, "burst", 0, "requests allowed at once above the rate (default: one second's worth)")
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	var t tenant.Tenant
	if create {
		_, err = c.callJSON(ctx, http.MethodPost, "/v1/tenants", api.NewTenant{Name: pos[0], Quotas: q}, &t)
	} else {
		// Set changes the quotas it is given and keeps the others.
		path := "/v1/tenants/" + url.PathEscape(pos[0])
		var cur tenant.Tenant
		if _, err := c.call(ctx, http.MethodGet, path, nil, "", &cur); err != nil {
			return err
		}
		given := q
		q = cur.Quotas
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "max-functions":
				q.MaxFunctions = given.MaxFunctions
			case "max-memory-mb":
				q.MaxMemoryMB = given.MaxMemoryMB
			case "max-concurrency":
				q.MaxConcurrency = given.MaxConcurrency
			case "rate":
				q.RatePerSecond = given.RatePerSecond
			case "burst":
				q.Burst = given.Burst
			}
		})
		_, err = c.callJSON(ctx, http.MethodPut, path, api.TenantUpdate{Quotas: &q}, &t)
	}
	if err != nil {
		return err
	}
	q = t.Quotas
	fmt.Fprintf(e.stdout, "tenant %s: functions %s, memory %s, concurrency %s, rate %s\n", t.Name,
		limit(q.MaxFunctions), withUnit(q.MaxMemoryMB, " MiB"), limit(q.MaxConcurrency), rateText(q))
	return nil
}

func (e *env) keyCmd(ctx context.Context, args []string) error {
	return subcommand(args, "key", map[string]func([]string) error{
		"create": func(args []string) error {
			line := "gust key create --role invoker|developer|owner|admin [--name NAME] [--ttl 720h] [--tenant T]"
			fs, finish := e.command("key create", line)
			var nk api.NewKey
			fs.Func("role", "the key's role: invoker, developer, owner or admin", func(s string) error { nk.Role = tenant.Role(s); return nil })
			fs.StringVar(&nk.Name, "name", "", "what the key is for")
			fs.StringVar(&nk.TTL, "ttl", "", "lifetime, such as 720h (default: no expiry)")
			_, c, err := finish(args, 0)
			if err != nil {
				return err
			}
			if nk.Role == "" {
				return usagef("--role is required: %s", line)
			}
			var out api.CreatedKey
			if _, err := c.callJSON(ctx, http.MethodPost, "/v1/keys", nk, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "created key %s (tenant %s, role %s); the key is shown only now:\n", out.Key.ID, out.Key.Tenant, out.Key.Role)
			fmt.Fprintln(e.stdout, out.Token)
			return nil
		},
		"ls": func(args []string) error {
			_, finish := e.command("key ls", "gust key ls [--tenant T]")
			_, c, err := finish(args, 0)
			if err != nil {
				return err
			}
			var out api.KeyList
			if _, err := c.call(ctx, http.MethodGet, "/v1/keys", nil, "", &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTENANT\tROLE\tNAME\tCREATED\tSTATE")
			for _, k := range out.Keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Tenant, k.Role, k.Name, k.Created.Local().Format(time.DateOnly), keyState(k))
			}
			return tw.Flush()
		},
		"revoke": func(args []string) error {
			_, finish := e.command("key revoke", "gust key revoke <id>")
			pos, c, err := finish(args, 1)
			if err != nil {
				return err
			}
			if _, err := c.call(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(pos[0]), nil, "", nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked key %s: it stops working on every node at once\n", pos[0])
			return nil
		},
	})
}

func keyState(k tenant.KeyInfo) string {
	switch {
	case k.Revoked != nil:
		return "revoked " + k.Revoked.Local().Format(time.DateTime)
	case k.Expires != nil && time.Now().After(*k.Expires):
		return "expired " + k.Expires.Local().Format(time.DateTime)
	case k.Expires != nil:
		return "expires " + k.Expires.Local().Format(time.DateTime)
	}
	return "active"
}

func (e *env) secretCmd(ctx context.Context, args []string) error {
	return subcommand(args, "secret", map[string]func([]string) error{
		"set": func(args []string) error {
			line := "gust secret set <NAME> [--from-file FILE] (without --from-file, the value is read from stdin)"
			fs, finish := e.command("secret set", line)
			fromFile := fs.String("from-file", "", "read the value from FILE")
			pos, c, err := finish(args, 1)
			if err != nil {
				return err
			}
			var value []byte
			if *fromFile != "" {
				value, err = e.readData("@" + *fromFile)
			} else {
				value, err = io.ReadAll(io.LimitReader(e.stdin, tenant.MaxSecretBytes+1))
			}
			if err != nil {
				return err
			}
			// One final newline, as echo and editors write, is not the value's.
			value = bytes.TrimSuffix(value, []byte("\n"))
			if !utf8.Valid(value) {
				// JSON would carry the invalid bytes as U+FFFD: refuse rather than change the value.
				return fmt.Errorf("secret %s: the value is not UTF-8 text; a secret becomes an environment variable: encode binary values, for example with base64", pos[0])
			}
			var info tenant.SecretInfo
			if _, err := c.callJSON(ctx, http.MethodPut, "/v1/secrets/"+url.PathEscape(pos[0]), api.SecretValue{Value: new(string(value))}, &info); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "secret %s set\n", info.Name)
			return nil
		},
		"ls": func(args []string) error {
			_, finish := e.command("secret ls", "gust secret ls")
			_, c, err := finish(args, 0)
			if err != nil {
				return err
			}
			var out api.SecretList
			if _, err := c.call(ctx, http.MethodGet, "/v1/secrets", nil, "", &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED\tUPDATED")
			for _, s := range out.Secrets {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Created.Local().Format(time.DateTime), s.Updated.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
		"rm": func(args []string) error {
			return e.simpleDelete(ctx, args, "secret rm", "gust secret rm <NAME>", "/v1/secrets/", "deleted secret %s\n")
		},
	})
}

func (e *env) auditCmd(ctx context.Context, args []string) error {
	fs, finish := e.command("audit", "gust audit [--limit N] [--all]")
	n := fs.Int("limit", 50, "how many of the latest entries")
	all := fs.Bool("all", false, "every tenant's entries (admin)")
	_, c, err := finish(args, 0)
	if err != nil {
		return err
	}
	q := "/v1/audit?limit=" + strconv.Itoa(*n)
	if *all {
		q += "&all=true"
	}
	var out api.AuditList
	if _, err := c.call(ctx, http.MethodGet, q, nil, "", &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTENANT\tKEY\tROLE\tACTION\tTARGET\tSTATUS\tFROM")
	for _, a := range out.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", a.Time.Local().Format(time.DateTime), a.Tenant, a.KeyID, a.Role, a.Action, a.Target, a.Status, a.Remote)
	}
	return tw.Flush()
}

// simpleDelete runs a `gust <thing> rm <name>` command.
func (e *env) simpleDelete(ctx context.Context, args []string, name, line, path, done string) error {
	_, finish := e.command(name, line)
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	if _, err := c.call(ctx, http.MethodDelete, path+url.PathEscape(pos[0]), nil, "", nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, done, pos[0])
	return nil
}
