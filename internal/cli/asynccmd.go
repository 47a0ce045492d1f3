package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gust-faas/gust/internal/api"
	"github.com/gust-faas/gust/internal/async"
)

func (e *env) invocationsCmd(ctx context.Context, args []string) error {
	return subcommand(args, "invocations", map[string]func([]string) error{
		"get": func(args []string) error {
			fs, finish := e.command("invocations get", "gust invocations get <id> [--json]")
			asJSON := fs.Bool("json", false, "print the API's JSON")
			pos, c, err := finish(args, 1)
			if err != nil {
				return err
			}
			var rec async.Record
			if _, err := c.call(ctx, http.MethodGet, "/v1/invocations/"+url.PathEscape(pos[0]), nil, "", &rec); err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, rec)
			}
			fmt.Fprintf(e.stdout, "%s  %s@%d  %s  %d attempts\n", rec.ID, rec.Function, rec.Version, rec.State, len(rec.Attempts))
			for i, a := range rec.Attempts {
				fmt.Fprintf(e.stdout, "  attempt %d: %s  status %d  %s\n", i+1, a.Started.Local().Format(time.DateTime), a.Status, a.Error)
			}
			if rec.Response != nil {
				fmt.Fprintf(e.stdout, "response: %d\n%s", rec.Response.Status, rec.Response.Body)
			}
			return nil
		},
	})
}

func (e *env) dlqCmd(ctx context.Context, args []string) error {
	return subcommand(args, "dlq", map[string]func([]string) error{
		"ls": func(args []string) error {
			_, finish := e.command("dlq ls", "gust dlq ls <function>")
			pos, c, err := finish(args, 1)
			if err != nil {
				return err
			}
			var out api.DeadLetters
			if _, err := c.call(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(pos[0])+"/dlq", nil, "", &out); err != nil {
				return err
			}
			if len(out.DeadLetters) == 0 {
				fmt.Fprintf(e.stdout, "no dead letters for %s\n", pos[0])
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVERSION\tQUEUED\tATTEMPTS\tLAST ERROR")
			for _, d := range out.DeadLetters {
				last := ""
				if len(d.Errors) > 0 {
					last = strings.ReplaceAll(d.Errors[len(d.Errors)-1], "\n", " ")
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\n", d.ID, d.Version, d.Queued.Local().Format(time.DateTime), len(d.Errors), last)
			}
			return tw.Flush()
		},
		"replay": func(args []string) error {
			line := "gust dlq replay <function> [id]"
			_, finish := e.command("dlq replay", line)
			pos, c, err := finish(args, -1)
			if err != nil {
				return err
			}
			if len(pos) < 1 || len(pos) > 2 {
				return usagef("usage: %s", line)
			}
			path := "/v1/functions/" + url.PathEscape(pos[0]) + "/dlq/replay"
			if len(pos) == 2 {
				path += "?id=" + url.QueryEscape(pos[1])
			}
			var out api.Replayed
			if _, err := c.call(ctx, http.MethodPost, path, nil, "", &out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "queued %d dead letters of %s again\n", out.Replayed, pos[0])
			return nil
		},
	})
}
