package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gust-faas/gust/internal/api"
	"github.com/gust-faas/gust/internal/registry"
)

func (e *env) aliasCmd(ctx context.Context, args []string) error {
	return subcommand(args, "alias", map[string]func([]string) error{
		"set": func(args []string) error {
			line := "gust alias set <function> <alias> <version> [--canary VERSION:PERCENT]"
			fs, finish := e.command("alias set", line)
			canary := fs.String("canary", "", "send PERCENT of the alias's traffic to VERSION, e.g. 4:10")
			pos, c, err := finish(args, 3)
			if err != nil {
				return err
			}
			version, err := strconv.Atoi(pos[2])
			if err != nil {
				return usagef("version %q is not a number", pos[2])
			}
			spec := api.AliasSpec{Version: version}
			if *canary != "" {
				v, p, ok := strings.Cut(*canary, ":")
				cv, err1 := strconv.Atoi(v)
				cp, err2 := strconv.Atoi(p)
				if !ok || err1 != nil || err2 != nil {
					return usagef("--canary %q is not VERSION:PERCENT, such as 4:10", *canary)
				}
				spec = api.AliasSpec{Routes: []registry.Route{{Version: version, Weight: 100 - cp}, {Version: cv, Weight: cp}}}
			}
			var f registry.Function
			path := "/v1/functions/" + url.PathEscape(pos[0]) + "/aliases/" + url.PathEscape(pos[1])
			if _, err := c.callJSON(ctx, http.MethodPut, path, spec, &f); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s:%s -> %s\n", pos[0], pos[1], routes(f.Aliases[pos[1]]))
			return nil
		},
		"rm": func(args []string) error {
			line := "gust alias rm <function> <alias>"
			_, finish := e.command("alias rm", line)
			pos, c, err := finish(args, 2)
			if err != nil {
				return err
			}
			path := "/v1/functions/" + url.PathEscape(pos[0]) + "/aliases/" + url.PathEscape(pos[1])
			if _, err := c.call(ctx, http.MethodDelete, path, nil, "", nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted alias %s of %s\n", pos[1], pos[0])
			return nil
		},
	})
}

// routes describes an alias: "3", or "3 (90%), 4 (10%)".
func routes(a registry.Alias) string {
	if len(a.Routes) == 1 {
		return "version " + strconv.Itoa(a.Routes[0].Version)
	}
	parts := make([]string, len(a.Routes))
	for i, r := range a.Routes {
		parts[i] = fmt.Sprintf("version %d (%d%%)", r.Version, r.Weight)
	}
	return strings.Join(parts, ", ")
}

func (e *env) rollback(ctx context.Context, args []string) error {
	line := "gust rollback <function>"
	_, finish := e.command("rollback", line)
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	var out api.Deployed
	if _, err := c.call(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(pos[0])+"/rollback", nil, "", &out); err != nil {
		return err
	}
	prev := out.Function.Versions[len(out.Function.Versions)-3]
	fmt.Fprintf(e.stdout, "rolled %s back: version %d runs what version %d ran\n", pos[0], out.Version.Number, prev.Number)
	return nil
}
