package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gust-faas/gust/internal/api"
	"github.com/gust-faas/gust/internal/build"
	"github.com/gust-faas/gust/internal/bundle"
	"github.com/gust-faas/gust/internal/httperror"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/server"
	"github.com/gust-faas/gust/internal/tenant"
)

func (e *env) deploy(ctx context.Context, args []string) error {
	fs, finish := e.command("deploy", "gust deploy <dir|file.wasm|bundle.tar.gz|bundle.zip> [--name NAME] [-f gust.yaml]")
	name := fs.String("name", "", "function name (default: the spec's, or the directory's or file's name)")
	specPath := fs.String("f", "", "spec file for a .wasm file or a bundle (default: gust.yaml beside it, if there is one)")
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	fn, err := loadFunction(ctx, pos[0], *specPath)
	if err != nil {
		return err
	}
	if *name != "" {
		fn.Spec.Name = *name
	}
	specJSON, err := json.Marshal(fn.Spec)
	if err != nil {
		return err
	}
	body, contentType, err := deployBody(specJSON, fn.Artifact)
	if err != nil {
		return err
	}
	var out api.Deployed
	if _, err := c.call(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(fn.Spec.Name), body, contentType, &out); err != nil {
		return err
	}
	v := out.Version
	if out.Created {
		fmt.Fprintf(e.stdout, "deployed %s version %d (%s, %s)\n", out.Function.Name, v.Number, shortDigest(v.Digest), size(v.Size))
	} else {
		fmt.Fprintf(e.stdout, "%s is unchanged: version %d already runs this artifact and spec\n", out.Function.Name, v.Number)
	}
	fmt.Fprintf(e.stdout, "invoke: gust invoke %s   or   curl %s\n", out.Function.Name, c.functionURL(out.Function))
	return nil
}

// loadFunction builds a directory, or reads a .wasm file and its spec.
func loadFunction(ctx context.Context, path, specPath string) (build.Function, error) {
	info, err := os.Stat(path)
	if err != nil {
		return build.Function{}, err
	}
	if info.IsDir() {
		if specPath != "" {
			return build.Function{}, usagef("-f is for a .wasm file; a directory's spec is its %s", build.SpecFile)
		}
		return build.Dir(ctx, path)
	}
	base := filepath.Base(path)
	for _, ext := range []string{".tar.gz", ".tgz", ".zip", ".wasm"} {
		base = strings.TrimSuffix(base, ext)
	}
	var spec registry.Spec
	if specPath == "" {
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), build.SpecFile)); err == nil {
			specPath = filepath.Join(filepath.Dir(path), build.SpecFile)
		}
	}
	if specPath != "" {
		spec, err = build.ReadSpec(specPath, base)
		if err != nil {
			return build.Function{}, err
		}
	}
	artifact, err := os.ReadFile(path)
	if err != nil {
		return build.Function{}, err
	}
	if specPath == "" {
		if bundle.Detect(artifact) != bundle.Unknown {
			return build.Function{}, usagef("%s is a bundle: a process function needs its spec, with runtime: process and its command (-f gust.yaml, or deploy the folder)", path)
		}
		spec = registry.Spec{Name: base}.WithDefaults()
	}
	return build.Function{Spec: spec, Artifact: artifact}, nil
}

func deployBody(specJSON, artifact []byte) (io.Reader, string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="spec"`)
	h.Set("Content-Type", "application/json")
	part, err := mw.CreatePart(h)
	if err != nil {
		return nil, "", err
	}
	part.Write(specJSON)
	part, err = mw.CreateFormFile("artifact", "function.wasm")
	if err != nil {
		return nil, "", err
	}
	part.Write(artifact)
	if err := mw.Close(); err != nil {
		return nil, "", err
	}
	return &buf, mw.FormDataContentType(), nil
}

// headerList collects repeated -H flags.
type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

func (e *env) invoke(ctx context.Context, args []string) error {
	fs, finish := e.command("invoke", "gust invoke <name[@version]> [-d data|@file|@-] [-H 'Name: value'] [-X method] [--path /p] [--async [--idempotency-key K]]")
	data := fs.String("d", "", "request body; @file reads a file, @- reads stdin")
	method := fs.String("X", "", "HTTP method (default POST with -d, else GET)")
	path := fs.String("path", "", "path after the function's name, with an optional ?query")
	include := fs.Bool("i", false, "print the response status and headers")
	async := fs.Bool("async", false, "queue the invocation and print its id, state and location as JSON (Prefer: respond-async)")
	idemKey := fs.String("idempotency-key", "", "with --async: the same key queues one invocation")
	var headers headerList
	fs.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	body, err := e.readData(*data)
	if err != nil {
		return err
	}
	m := *method
	if m == "" {
		m = http.MethodGet
		if body != nil {
			m = http.MethodPost
		}
	}
	tenantName, err := c.invokeTenant(ctx)
	if err != nil {
		return err
	}
	target := c.base + "/fn/" + tenantName + "/" + pos[0]
	if *path != "" {
		target += "/" + strings.TrimPrefix(*path, "/")
	}
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, m, target, reader)
	if err != nil {
		return usagef("%v", err)
	}
	if *async {
		req.Header.Set("Prefer", "respond-async")
		if *idemKey != "" {
			req.Header.Set("Idempotency-Key", *idemKey)
		}
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return usagef("header %q is not 'Name: value'", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.Header.Get(httperror.HeaderError) != "" {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return decodeError(resp, msg)
	}
	if *include {
		fmt.Fprintf(e.stdout, "%s %s\n", resp.Proto, resp.Status)
		resp.Header.Write(e.stdout)
		fmt.Fprintln(e.stdout)
	}
	if _, err := io.Copy(e.stdout, resp.Body); err != nil {
		return fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("function answered %s", resp.Status)
	}
	return nil
}

// invokeTenant is the tenant whose functions invoke calls: --tenant, or the
// key's own, or the default tenant for a caller without a key.
func (c *client) invokeTenant(ctx context.Context) (string, error) {
	if c.tenant != "" {
		return c.tenant, nil
	}
	if c.key == "" {
		return tenant.Default, nil
	}
	var who api.Whoami
	if _, err := c.call(ctx, http.MethodGet, "/v1/whoami", nil, "", &who); err != nil {
		return "", err
	}
	return who.Tenant, nil
}

func (e *env) readData(d string) ([]byte, error) {
	switch {
	case d == "":
		return nil, nil
	case d == "@-":
		return io.ReadAll(e.stdin)
	case strings.HasPrefix(d, "@"):
		return os.ReadFile(d[1:])
	default:
		return []byte(d), nil
	}
}

func (e *env) list(ctx context.Context, args []string) error {
	fs, finish := e.command("ls", "gust ls [--json]")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	_, c, err := finish(args, 0)
	if err != nil {
		return err
	}
	var out api.List
	if _, err := c.call(ctx, http.MethodGet, "/v1/functions", nil, "", &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, out)
	}
	if len(out.Functions) == 0 {
		fmt.Fprintln(e.stdout, "no functions yet: deploy one with 'gust deploy <dir>'")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tRUNTIME\tMEMORY\tUPDATED")
	for _, f := range out.Functions {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d MiB\t%s\n", f.Name, f.Latest, f.Runtime, f.MemoryMB, ago(f.Updated))
	}
	return tw.Flush()
}

func (e *env) describe(ctx context.Context, args []string) error {
	fs, finish := e.command("describe", "gust describe <name> [--json]")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	var detail api.FunctionDetail
	if _, err := c.call(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(pos[0]), nil, "", &detail); err != nil {
		return err
	}
	f := detail.Function
	if *asJSON {
		return printJSON(e.stdout, detail)
	}
	latest, _ := f.Version(0)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", f.Name)
	fmt.Fprintf(tw, "Tenant:\t%s\n", f.Tenant)
	fmt.Fprintf(tw, "URL:\t%s\n", c.functionURL(f))
	fmt.Fprintf(tw, "Latest:\tversion %d\n", f.Latest)
	fmt.Fprintf(tw, "Runtime:\t%s\n", latest.Spec.Runtime)
	if spec := latest.Spec; spec.Runtime == registry.RuntimeProcess {
		fmt.Fprintf(tw, "Command:\t%s\n", strings.Join(spec.Command, " "))
		how := spec.Protocol + ", network " + spec.Network
		if spec.Protocol == registry.ProtocolHTTP {
			how += fmt.Sprintf(", %d at once per instance, listens within %s", spec.Concurrency, time.Duration(spec.InitTimeout))
		}
		fmt.Fprintf(tw, "Protocol:\t%s\n", how)
	}
	fmt.Fprintf(tw, "Memory:\t%d MiB\n", latest.Spec.MemoryMB)
	fmt.Fprintf(tw, "Timeout:\t%s\n", time.Duration(latest.Spec.Timeout))
	fmt.Fprintf(tw, "Max body:\t%s\n", size(latest.Spec.MaxBodyBytes))
	if len(latest.Spec.Env) > 0 {
		names := make([]string, 0, len(latest.Spec.Env))
		for k := range latest.Spec.Env {
			names = append(names, k)
		}
		sort.Strings(names)
		fmt.Fprintf(tw, "Env:\t%s\n", strings.Join(names, ", "))
	}
	fmt.Fprintf(tw, "Scaling:\t%d to %d instances, idle for %s, queue %d\n", latest.Spec.MinInstances, latest.Spec.MaxInstances, time.Duration(latest.Spec.IdleTTL), latest.Spec.MaxQueue)
	for _, name := range slices.Sorted(maps.Keys(f.Aliases)) {
		fmt.Fprintf(tw, "Alias %s:\t%s\n", name, routes(f.Aliases[name]))
	}
	fmt.Fprintf(tw, "Created:\t%s\n", f.Created.Local().Format(time.DateTime))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "\nVersions:")
	tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tDIGEST\tSIZE\tMEMORY\tTIMEOUT\tCREATED\tINSTANCES (this node)")
	for i := len(f.Versions) - 1; i >= 0; i-- {
		v := f.Versions[i]
		inst := "-"
		if s, ok := detail.Instances[v.Number]; ok {
			inst = fmt.Sprintf("%d warm, %d busy, %d starting, %d queued", s.Idle, s.Busy, s.Starting, s.Queued)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d MiB\t%s\t%s\t%s\n", v.Number, shortDigest(v.Digest), size(v.Size),
			v.Spec.MemoryMB, time.Duration(v.Spec.Timeout), v.Created.Local().Format(time.DateTime), inst)
	}
	return tw.Flush()
}

func (e *env) remove(ctx context.Context, args []string) error {
	_, finish := e.command("rm", "gust rm <name>")
	pos, c, err := finish(args, 1)
	if err != nil {
		return err
	}
	if _, err := c.call(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(pos[0]), nil, "", nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted %s and all its versions\n", pos[0])
	return nil
}

func (e *env) version(ctx context.Context, args []string) error {
	_, finish := e.command("version", "gust version")
	_, c, err := finish(args, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "gust %s\n", server.Version)
	var info api.Info
	if _, err := c.call(ctx, http.MethodGet, "/v1/info", nil, "", &info); err != nil {
		fmt.Fprintf(e.stdout, "server: not reachable at %s\n", c.base)
		return nil
	}
	fmt.Fprintf(e.stdout, "server: %s at %s (runtimes: %s)\n", info.Version, c.base, strings.Join(info.Runtimes, ", "))
	for _, rt := range slices.Sorted(maps.Keys(info.UnavailableRuntimes)) {
		fmt.Fprintf(e.stdout, "runtime %s is not available: %s\n", rt, info.UnavailableRuntimes[rt])
	}
	return nil
}

func (c *client) functionURL(f registry.Function) string {
	return c.base + "/fn/" + f.Tenant + "/" + f.Name
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format(time.DateOnly)
}
