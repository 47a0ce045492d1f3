package registry_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/gust-faas/gust/internal/registry"
)

// Limits the package keeps unexported, spelled out here so that a change to
// one of them is a visible decision.
const (
	limitEnvVars   = 256
	limitEnvBytes  = 64 << 10
	limitSpecBytes = 256 << 10
)

// defaultSpec returns the spec named name with every default applied,
// changed by edit.
func defaultSpec(name string, edit func(*registry.Spec)) registry.Spec {
	s := registry.Spec{Name: name}.WithDefaults()
	if edit != nil {
		edit(&s)
	}
	return s
}

// specParseTest is one input and either the spec it parses to or the strings its
// error message must contain.
type specParseTest struct {
	name    string
	in      string
	want    registry.Spec
	wantErr []string
}

var (
	nameOf63 = "a" + strings.Repeat("b1-", 20) + "cd"
	nameOf64 = nameOf63 + "e"
)

// manyEnvJSON returns a JSON env object with n variables.
func manyEnvJSON(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("%q:\"v\"", fmt.Sprintf("V%d", i))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// manyEnvYAML returns a YAML env block mapping with n variables.
func manyEnvYAML(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  V%d: v\n", i)
	}
	return b.String()
}

// padJSON pads a JSON document with trailing spaces to exactly n bytes.
func padJSON(doc string, n int) string { return doc + strings.Repeat(" ", n-len(doc)) }

// padYAML pads a YAML document with a trailing comment to exactly n bytes.
func padYAML(doc string, n int) string { return doc + "#" + strings.Repeat("x", n-len(doc)-1) }

var specJSONTests = []specParseTest{
	// Valid.
	{name: "minimal gets defaults", in: `{"name":"hello"}`, want: defaultSpec("hello", nil)},
	{
		name: "every field",
		in:   `{"name":"hello-world","runtime":"wasm","env":{"GREETING":"hi","A_1":"","lower":"x"},"memory_mb":256,"timeout":"2m30s","max_body_bytes":1048576}`,
		want: defaultSpec("hello-world", func(s *registry.Spec) {
			s.Env = map[string]string{"GREETING": "hi", "A_1": "", "lower": "x"}
			s.MemoryMB = 256
			s.Timeout = registry.Duration(150 * time.Second)
			s.MaxBodyBytes = 1 << 20
		}),
	},
	{name: "timeout 0 gets default", in: `{"name":"a","timeout":"0s"}`, want: defaultSpec("a", nil)},
	{name: "zero values get defaults", in: `{"name":"a","runtime":"","memory_mb":0,"max_body_bytes":0}`, want: defaultSpec("a", nil)},
	{name: "nulls get defaults", in: `{"name":"a","env":null,"memory_mb":null,"max_body_bytes":null}`, want: defaultSpec("a", nil)},
	{
		name: "lower bounds",
		in:   `{"name":"a","memory_mb":16,"timeout":"1ms","max_body_bytes":1}`,
		want: defaultSpec("a", func(s *registry.Spec) {
			s.MemoryMB, s.Timeout, s.MaxBodyBytes = 16, registry.Duration(time.Millisecond), 1
		}),
	},
	{
		name: "upper bounds",
		in:   `{"name":"a","memory_mb":10240,"timeout":"15m","max_body_bytes":33554432}`,
		want: defaultSpec("a", func(s *registry.Spec) {
			s.MemoryMB, s.Timeout, s.MaxBodyBytes = 10240, registry.Duration(15*time.Minute), 32<<20
		}),
	},
	{name: "name of 63 chars", in: `{"name":"` + nameOf63 + `"}`, want: defaultSpec(nameOf63, nil)},
	{name: "name with dashes", in: `{"name":"my-func--2"}`, want: defaultSpec("my-func--2", nil)},
	{name: "name of one letter", in: `{"name":"x"}`, want: defaultSpec("x", nil)},
	{name: "whitespace around the object", in: " \n\t{\"name\":\"a\"}\r\n ", want: defaultSpec("a", nil)},
	{
		name: "env values with odd characters",
		in:   `{"name":"a","env":{"A":"line 1\nline 2","B":"ü 世界","C":"x=y; z","D":"\u0001"}}`,
		want: defaultSpec("a", func(s *registry.Spec) {
			s.Env = map[string]string{"A": "line 1\nline 2", "B": "ü 世界", "C": "x=y; z", "D": "\x01"}
		}),
	},
	{
		name: "env of exactly 256 variables",
		in:   `{"name":"a","env":` + manyEnvJSON(limitEnvVars) + `}`,
		want: defaultSpec("a", func(s *registry.Spec) {
			s.Env = map[string]string{}
			for i := range limitEnvVars {
				s.Env[fmt.Sprintf("V%d", i)] = "v"
			}
		}),
	},
	{name: "spec of exactly 256 KiB", in: padJSON(`{"name":"a"}`, limitSpecBytes), want: defaultSpec("a", nil)},

	// Names.
	{name: "name uppercase", in: `{"name":"Hello"}`, wantErr: []string{`name "Hello" is invalid`}},
	{name: "name leading digit", in: `{"name":"1abc"}`, wantErr: []string{`name "1abc" is invalid`}},
	{name: "name leading dash", in: `{"name":"-abc"}`, wantErr: []string{`name "-abc" is invalid`}},
	{name: "name of 64 chars", in: `{"name":"` + nameOf64 + `"}`, wantErr: []string{`name "` + nameOf64 + `" is invalid`}},
	{name: "name empty", in: `{"name":""}`, wantErr: []string{`name "" is invalid`}},
	{name: "name missing", in: `{}`, wantErr: []string{`name "" is invalid`}},
	{name: "name with underscore", in: `{"name":"a_b"}`, wantErr: []string{`name "a_b" is invalid`}},
	{name: "name with dot", in: `{"name":"a.b"}`, wantErr: []string{`name "a.b" is invalid`}},
	{name: "name with space", in: `{"name":"a b"}`, wantErr: []string{`name "a b" is invalid`}},
	{name: "name with slash", in: `{"name":"a/b"}`, wantErr: []string{`name "a/b" is invalid`}},
	{name: "name with newline", in: `{"name":"a\n"}`, wantErr: []string{`name "a\n" is invalid`}},
	{name: "name unicode", in: `{"name":"héllo"}`, wantErr: []string{`name "héllo" is invalid`}},
	{name: "name fullwidth letters", in: `{"name":"ｈello"}`, wantErr: []string{`is invalid`}},

	// Structure.
	{name: "unknown field", in: `{"name":"a","memroy_mb":256}`, wantErr: []string{"not valid JSON", `unknown field "memroy_mb"`}},
	{name: "empty input", in: ``, wantErr: []string{"not valid JSON"}},
	{name: "truncated", in: `{"name":`, wantErr: []string{"not valid JSON", "unexpected EOF"}},
	{name: "not JSON", in: `name: a`, wantErr: []string{"not valid JSON", "invalid character"}},
	{name: "trailing comma", in: `{"name":"a",}`, wantErr: []string{"not valid JSON", "invalid character"}},
	{name: "array", in: `[{"name":"a"}]`, wantErr: []string{"not valid JSON", "cannot unmarshal array"}},
	{name: "string", in: `"a"`, wantErr: []string{"not valid JSON", "cannot unmarshal string"}},
	{name: "second object", in: `{"name":"a"}{"name":"b"}`, wantErr: []string{"data after the object"}},
	{name: "trailing word", in: `{"name":"a"} x`, wantErr: []string{"data after the object"}},
	{name: "trailing brace", in: `{"name":"a"}}`, wantErr: []string{"data after the object"}},
	{name: "trailing null", in: `{"name":"a"} null`, wantErr: []string{"data after the object"}},

	// Types.
	{name: "memory_mb a string", in: `{"name":"a","memory_mb":"big"}`, wantErr: []string{`field "memory_mb" must be a int`}},
	{name: "memory_mb a fraction", in: `{"name":"a","memory_mb":128.5}`, wantErr: []string{`field "memory_mb"`}},
	{name: "memory_mb overflows", in: `{"name":"a","memory_mb":99999999999999999999}`, wantErr: []string{`field "memory_mb"`}},
	{name: "name a number", in: `{"name":5}`, wantErr: []string{`field "name" must be a string`}},
	{name: "runtime a bool", in: `{"name":"a","runtime":true}`, wantErr: []string{`field "runtime" must be a string`}},
	{name: "max_body_bytes a string", in: `{"name":"a","max_body_bytes":"6MiB"}`, wantErr: []string{`field "max_body_bytes" must be a int64`}},
	{name: "env a list", in: `{"name":"a","env":["A=b"]}`, wantErr: []string{`field "env"`}},
	{name: "env value a number", in: `{"name":"a","env":{"A":1}}`, wantErr: []string{`field "env"`, "string"}},

	// Timeout.
	{name: "timeout a number", in: `{"name":"a","timeout":30}`, wantErr: []string{"durations are strings"}},
	{name: "timeout not a duration", in: `{"name":"a","timeout":"soon"}`, wantErr: []string{`timeout "soon" is not a duration`}},
	{name: "idle_ttl not a duration", in: `{"name":"a","idle_ttl":"5"}`, wantErr: []string{`idle_ttl "5" is not a duration`}},
	{name: "timeout without unit", in: `{"name":"a","timeout":"30"}`, wantErr: []string{`timeout "30" is not a duration`}},
	{name: "timeout above 15m", in: `{"name":"a","timeout":"15m0.001s"}`, wantErr: []string{"timeout 15m0.001s is out of range 1ms to 15m0s"}},
	{name: "timeout an hour", in: `{"name":"a","timeout":"1h"}`, wantErr: []string{"timeout 1h0m0s is out of range"}},
	{name: "timeout negative", in: `{"name":"a","timeout":"-1s"}`, wantErr: []string{"timeout -1s is out of range"}},
	{name: "timeout below 1ms", in: `{"name":"a","timeout":"999us"}`, wantErr: []string{"timeout 999µs is out of range"}},

	// Limits.
	{name: "memory below range", in: `{"name":"a","memory_mb":15}`, wantErr: []string{"memory_mb 15 is out of range 16 to 10240"}},
	{name: "memory above range", in: `{"name":"a","memory_mb":10241}`, wantErr: []string{"memory_mb 10241 is out of range"}},
	{name: "memory negative", in: `{"name":"a","memory_mb":-1}`, wantErr: []string{"memory_mb -1 is out of range"}},
	{name: "max_body_bytes above range", in: `{"name":"a","max_body_bytes":33554433}`, wantErr: []string{"max_body_bytes 33554433 is out of range 1 to 33554432"}},
	{name: "max_body_bytes negative", in: `{"name":"a","max_body_bytes":-5}`, wantErr: []string{"max_body_bytes -5 is out of range"}},
	{name: "runtime unsupported", in: `{"name":"a","runtime":"docker"}`, wantErr: []string{`runtime "docker" is not supported: use "wasm"`}},
	{name: "runtime upper case", in: `{"name":"a","runtime":"WASM"}`, wantErr: []string{`runtime "WASM" is not supported`}},

	// Env.
	{name: "env name leading digit", in: `{"name":"a","env":{"1A":"x"}}`, wantErr: []string{`env name "1A" is invalid`}},
	{name: "env name with dash", in: `{"name":"a","env":{"A-B":"x"}}`, wantErr: []string{`env name "A-B" is invalid`}},
	{name: "env name with equals", in: `{"name":"a","env":{"A=B":"x"}}`, wantErr: []string{`env name "A=B" is invalid`}},
	{name: "env name empty", in: `{"name":"a","env":{"":"x"}}`, wantErr: []string{`env name "" is invalid`}},
	{name: "env name unicode", in: `{"name":"a","env":{"É":"x"}}`, wantErr: []string{`env name "É" is invalid`}},
	{name: "env name GUST_", in: `{"name":"a","env":{"GUST_X":"x"}}`, wantErr: []string{`env name "GUST_X" is reserved`}},
	{name: "env name gust_ lower case", in: `{"name":"a","env":{"gust_token":"x"}}`, wantErr: []string{`env name "gust_token" is reserved`}},
	{name: "env name HTTP_", in: `{"name":"a","env":{"HTTP_X":"x"}}`, wantErr: []string{`env name "HTTP_X" is reserved`}},
	{name: "env name PATH_INFO", in: `{"name":"a","env":{"PATH_INFO":"/x"}}`, wantErr: []string{`env name "PATH_INFO" is reserved`}},
	{name: "env name REQUEST_METHOD", in: `{"name":"a","env":{"REQUEST_METHOD":"GET"}}`, wantErr: []string{`env name "REQUEST_METHOD" is reserved`}},
	{name: "env NUL in value", in: `{"name":"a","env":{"A":"a\u0000b"}}`, wantErr: []string{"env A contains a NUL byte"}},
	{name: "env of 257 variables", in: `{"name":"a","env":` + manyEnvJSON(limitEnvVars+1) + `}`, wantErr: []string{"env has 257 variables, at most 256 are allowed"}},
	{
		name:    "env larger than 64 KiB",
		in:      `{"name":"a","env":{"A":"` + strings.Repeat("x", limitEnvBytes) + `"}}`,
		wantErr: []string{"env is 65537 bytes, at most 65536 are allowed"},
	},
	{name: "spec larger than 256 KiB", in: padJSON(`{"name":"a"}`, limitSpecBytes+1), wantErr: []string{"spec is larger than 262144 bytes"}},
	{
		name:    "every problem reported",
		in:      `{"name":"Bad","runtime":"docker","memory_mb":1,"timeout":"1h","max_body_bytes":-1,"env":{"GUST_A":"x","1":"y"}}`,
		wantErr: []string{`name "Bad"`, `runtime "docker"`, "memory_mb 1 ", "timeout 1h0m0s", "max_body_bytes -1", `env name "GUST_A"`, `env name "1"`},
	},
}

var specYAMLTests = []specParseTest{
	// Valid.
	{name: "minimal gets defaults", in: "name: hello\n", want: defaultSpec("hello", nil)},
	{
		name: "every field",
		in: "# gust.yaml\nname: hello-world\nruntime: wasm\nenv:\n  GREETING: hi\n  A_1: \"\"\n  lower: x\n" +
			"memory_mb: 256 # MiB\ntimeout: 2m30s\nmax_body_bytes: 1048576\n",
		want: defaultSpec("hello-world", func(s *registry.Spec) {
			s.Env = map[string]string{"GREETING": "hi", "A_1": "", "lower": "x"}
			s.MemoryMB = 256
			s.Timeout = registry.Duration(150 * time.Second)
			s.MaxBodyBytes = 1 << 20
		}),
	},
	{name: "flow style", in: "{name: a, memory_mb: 64}", want: defaultSpec("a", func(s *registry.Spec) { s.MemoryMB = 64 })},
	{name: "quoted name", in: "name: 'a'\n", want: defaultSpec("a", nil)},
	{name: "document markers", in: "---\nname: a\n...\n", want: defaultSpec("a", nil)},
	{name: "timeout 0 gets default", in: "name: a\ntimeout: 0s\n", want: defaultSpec("a", nil)},
	{name: "null timeout gets default", in: "name: a\ntimeout: null\n", want: defaultSpec("a", nil)},
	{name: "hex memory", in: "name: a\nmemory_mb: 0x100\n", want: defaultSpec("a", func(s *registry.Spec) { s.MemoryMB = 256 })},
	{
		name: "bounds",
		in:   "name: a\nmemory_mb: 10240\ntimeout: 15m\nmax_body_bytes: 1\n",
		want: defaultSpec("a", func(s *registry.Spec) {
			s.MemoryMB, s.Timeout, s.MaxBodyBytes = 10240, registry.Duration(15*time.Minute), 1
		}),
	},
	{
		name: "env scalars become strings",
		in:   "name: a\nenv:\n  A: 1.0\n  B: true\n  C: \"line 1\\nline 2\"\n  D: |\n    block\n",
		want: defaultSpec("a", func(s *registry.Spec) {
			s.Env = map[string]string{"A": "1.0", "B": "true", "C": "line 1\nline 2", "D": "block\n"}
		}),
	},
	{name: "name of 63 chars", in: "name: " + nameOf63 + "\n", want: defaultSpec(nameOf63, nil)},
	{name: "spec of exactly 256 KiB", in: padYAML("name: a\n", limitSpecBytes), want: defaultSpec("a", nil)},

	// Names.
	{name: "name uppercase", in: "name: Hello\n", wantErr: []string{`name "Hello" is invalid`}},
	{name: "name leading digit", in: "name: 1abc\n", wantErr: []string{`name "1abc" is invalid`}},
	{name: "name a number", in: "name: 123\n", wantErr: []string{`name "123" is invalid`}},
	{name: "name of 64 chars", in: "name: " + nameOf64 + "\n", wantErr: []string{`name "` + nameOf64 + `" is invalid`}},
	{name: "name empty", in: "name: \"\"\n", wantErr: []string{`name "" is invalid`}},
	{name: "name missing", in: "memory_mb: 64\n", wantErr: []string{`name "" is invalid`}},
	{name: "name only a document marker", in: "---\n", wantErr: []string{`name "" is invalid`}},
	{name: "name with underscore", in: "name: a_b\n", wantErr: []string{`name "a_b" is invalid`}},
	{name: "name unicode", in: "name: héllo\n", wantErr: []string{`name "héllo" is invalid`}},

	// Structure.
	{name: "unknown field", in: "name: a\nmemroy_mb: 256\n", wantErr: []string{"not valid YAML", "line 2", "field memroy_mb not found"}},
	{name: "field name is case-sensitive", in: "Name: a\n", wantErr: []string{"not valid YAML", "field Name not found"}},
	{name: "empty input", in: "", wantErr: []string{"spec is empty"}},
	{name: "only a comment", in: "# nothing here\n", wantErr: []string{"spec is empty"}},
	{name: "unclosed flow sequence", in: "name: [\n", wantErr: []string{"not valid YAML", "line 1"}},
	{name: "tab indentation", in: "name: a\nenv:\n\tA: b\n", wantErr: []string{"not valid YAML", "line 3", "cannot start any token"}},
	{name: "bad indentation", in: "name: a\n  memory_mb: 1\n", wantErr: []string{"not valid YAML"}},
	{name: "two documents", in: "name: a\n---\nname: b\n", wantErr: []string{"more than one document"}},
	{name: "trailing document marker", in: "name: a\n---\n", wantErr: []string{"more than one document"}},
	{name: "second document invalid", in: "name: a\n---\n[\n", wantErr: []string{"more than one document"}},
	{name: "duplicate key", in: "name: a\nname: b\n", wantErr: []string{"not valid YAML", `mapping key "name" already defined`}},
	{name: "sequence", in: "- name: a\n", wantErr: []string{"not valid YAML", "cannot unmarshal !!seq"}},
	{name: "scalar", in: "hello\n", wantErr: []string{"not valid YAML", "cannot unmarshal !!str"}},

	// Types.
	{name: "memory_mb a string", in: "name: a\nmemory_mb: big\n", wantErr: []string{"not valid YAML", "line 2", "cannot unmarshal !!str `big` into int"}},
	{name: "memory_mb too large", in: "name: a\nmemory_mb: 1e30\n", wantErr: []string{"not valid YAML", "into int"}},
	{name: "env a list", in: "name: a\nenv: [A=b]\n", wantErr: []string{"not valid YAML", "cannot unmarshal !!seq"}},
	{name: "env value a list", in: "name: a\nenv: {A: [1]}\n", wantErr: []string{"not valid YAML", "cannot unmarshal !!seq into string"}},
	{name: "timeout a mapping", in: "name: a\ntimeout: {s: 30}\n", wantErr: []string{"line 2", "durations are strings"}},
	{name: "timeout a list", in: "name: a\ntimeout: [30s]\n", wantErr: []string{"durations are strings"}},

	// Timeout.
	{name: "timeout without unit", in: "name: a\ntimeout: 30\n", wantErr: []string{`timeout "30" is not a duration`}},
	{name: "timeout not a duration", in: "name: a\ntimeout: soon\n", wantErr: []string{`timeout "soon" is not a duration`}},
	{name: "retry_delay not a duration", in: "name: a\nretry_delay: 5\n", wantErr: []string{`retry_delay "5" is not a duration`}},
	{name: "retries not whole", in: "name: a\nretries: 2.9\n", wantErr: []string{"retries must be a whole number"}},
	{name: "timeout above 15m", in: "name: a\ntimeout: 16m\n", wantErr: []string{"timeout 16m0s is out of range 1ms to 15m0s"}},
	{name: "timeout negative", in: "name: a\ntimeout: -5s\n", wantErr: []string{"timeout -5s is out of range"}},

	// Limits and env.
	{name: "memory below range", in: "name: a\nmemory_mb: 8\n", wantErr: []string{"memory_mb 8 is out of range 16 to 10240"}},
	{name: "memory above range", in: "name: a\nmemory_mb: 20000\n", wantErr: []string{"memory_mb 20000 is out of range"}},
	{name: "runtime unsupported", in: "name: a\nruntime: node\n", wantErr: []string{`runtime "node" is not supported`}},
	{name: "env name invalid", in: "name: a\nenv:\n  MY-VAR: x\n", wantErr: []string{`env name "MY-VAR" is invalid`}},
	{name: "env name a number", in: "name: a\nenv:\n  1: x\n", wantErr: []string{`env name "1" is invalid`}},
	{name: "env name reserved GUST_", in: "name: a\nenv:\n  GUST_X: x\n", wantErr: []string{`env name "GUST_X" is reserved`}},
	{name: "env name reserved HTTP_", in: "name: a\nenv:\n  HTTP_X: x\n", wantErr: []string{`env name "HTTP_X" is reserved`}},
	{name: "env name reserved PATH_INFO", in: "name: a\nenv:\n  PATH_INFO: x\n", wantErr: []string{`env name "PATH_INFO" is reserved`}},
	{name: "env NUL in value", in: "name: a\nenv:\n  A: \"a\\0b\"\n", wantErr: []string{"env A contains a NUL byte"}},
	{name: "env of 257 variables", in: "name: a\nenv:\n" + manyEnvYAML(limitEnvVars+1), wantErr: []string{"env has 257 variables, at most 256 are allowed"}},
	{name: "spec larger than 256 KiB", in: padYAML("name: a\n", limitSpecBytes+1), wantErr: []string{"spec is larger than 262144 bytes"}},
}

func runSpecTests(t *testing.T, fn string, parse func([]byte) (registry.Spec, error), tests []specParseTest) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse([]byte(tt.in))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("%s(%q) = %+v, want error containing %q", fn, shorten(tt.in), got, tt.wantErr)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s(%q) error = %q, want it to contain %q", fn, shorten(tt.in), err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("%s(%q) error = %v, want nil", fn, shorten(tt.in), err)
			}
			if !equalSpecs(got, tt.want) {
				t.Errorf("%s(%q) = %+v, want %+v", fn, shorten(tt.in), got, tt.want)
			}
		})
	}
}

func TestParseSpecJSON(t *testing.T) {
	runSpecTests(t, "ParseSpecJSON", registry.ParseSpecJSON, specJSONTests)
}

func TestParseSpecYAML(t *testing.T) {
	runSpecTests(t, "ParseSpecYAML", registry.ParseSpecYAML, specYAMLTests)
}

// TestParseSpecDefaults checks the documented defaults field by field (the
// tables above build their wanted specs with WithDefaults).
func TestParseSpecDefaults(t *testing.T) {
	parsers := []struct {
		fn    string
		parse func([]byte) (registry.Spec, error)
		in    string
	}{
		{"ParseSpecJSON", registry.ParseSpecJSON, `{"name":"a"}`},
		{"ParseSpecYAML", registry.ParseSpecYAML, "name: a\n"},
	}
	for _, p := range parsers {
		s, err := p.parse([]byte(p.in))
		if err != nil {
			t.Fatalf("%s(%q) error = %v", p.fn, p.in, err)
		}
		if s.Runtime != "wasm" {
			t.Errorf("%s(%q).Runtime = %q, want %q", p.fn, p.in, s.Runtime, "wasm")
		}
		if s.MemoryMB != 128 {
			t.Errorf("%s(%q).MemoryMB = %d, want 128", p.fn, p.in, s.MemoryMB)
		}
		if got := time.Duration(s.Timeout); got != 30*time.Second {
			t.Errorf("%s(%q).Timeout = %v, want 30s", p.fn, p.in, got)
		}
		if s.MaxBodyBytes != 6<<20 {
			t.Errorf("%s(%q).MaxBodyBytes = %d, want %d", p.fn, p.in, s.MaxBodyBytes, 6<<20)
		}
		if len(s.Env) != 0 {
			t.Errorf("%s(%q).Env = %v, want empty", p.fn, p.in, s.Env)
		}
	}
}

// TestDecodeSpec checks that the Decode functions neither apply defaults nor
// validate, but still reject what is not a spec.
func TestDecodeSpec(t *testing.T) {
	tests := []struct {
		name    string
		decode  func([]byte) (registry.Spec, error)
		in      string
		want    registry.Spec
		wantErr string
	}{
		{name: "JSON no defaults", decode: registry.DecodeSpecJSON, in: `{"name":"a"}`, want: registry.Spec{Name: "a"}},
		{name: "JSON invalid values kept", decode: registry.DecodeSpecJSON, in: `{"name":"Bad","memory_mb":1}`, want: registry.Spec{Name: "Bad", MemoryMB: 1}},
		{name: "JSON unknown field", decode: registry.DecodeSpecJSON, in: `{"nam":"a"}`, wantErr: `unknown field "nam"`},
		{name: "JSON trailing data", decode: registry.DecodeSpecJSON, in: `{} {}`, wantErr: "data after the object"},
		{name: "JSON too large", decode: registry.DecodeSpecJSON, in: padJSON(`{}`, limitSpecBytes+1), wantErr: "spec is larger than"},
		{name: "YAML no defaults", decode: registry.DecodeSpecYAML, in: "name: a\n", want: registry.Spec{Name: "a"}},
		{name: "YAML invalid values kept", decode: registry.DecodeSpecYAML, in: "name: Bad\ntimeout: 1h\n", want: registry.Spec{Name: "Bad", Timeout: registry.Duration(time.Hour)}},
		{name: "YAML unknown field", decode: registry.DecodeSpecYAML, in: "nam: a\n", wantErr: "field nam not found"},
		{name: "YAML two documents", decode: registry.DecodeSpecYAML, in: "name: a\n---\nname: b\n", wantErr: "more than one document"},
		{name: "YAML too large", decode: registry.DecodeSpecYAML, in: padYAML("", limitSpecBytes+1), wantErr: "spec is larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.decode([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Decode(%q) = %+v, %v, want error containing %q", shorten(tt.in), got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !equalSpecs(got, tt.want) {
				t.Errorf("Decode(%q) = %+v, %v, want %+v, nil", shorten(tt.in), got, err, tt.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"hello", true},
		{"hello-world", true},
		{"a1", true},
		{"a-", true},
		{nameOf63, true},
		{nameOf64, false},
		{"", false},
		{"A", false},
		{"helloWorld", false},
		{"1a", false},
		{"-a", false},
		{"a_b", false},
		{"a.b", false},
		{"a b", false},
		{"a\n", false},
		{"\na", false},
		{"é", false},
		{"aé", false},
	}
	for _, tt := range tests {
		if got := registry.ValidName(tt.in); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	type fields struct {
		runtime      string
		env          map[string]string
		memoryMB     int
		timeout      time.Duration
		maxBodyBytes int64
	}
	defaults := fields{"wasm", nil, 128, 30 * time.Second, 6 << 20}
	tests := []struct {
		name string
		in   registry.Spec
		want fields
	}{
		{name: "zero", in: registry.Spec{}, want: defaults},
		{name: "name only", in: registry.Spec{Name: "a"}, want: defaults},
		{
			name: "set fields kept",
			in: registry.Spec{
				Name: "a", Runtime: "other", Env: map[string]string{"A": "b"},
				MemoryMB: 64, Timeout: registry.Duration(time.Second), MaxBodyBytes: 10,
			},
			want: fields{"other", map[string]string{"A": "b"}, 64, time.Second, 10},
		},
		{
			name: "negative values kept for Validate",
			in:   registry.Spec{Name: "a", MemoryMB: -1, Timeout: registry.Duration(-time.Second), MaxBodyBytes: -1},
			want: fields{"wasm", nil, -1, -time.Second, -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.in.WithDefaults()
			got := fields{s.Runtime, s.Env, s.MemoryMB, time.Duration(s.Timeout), s.MaxBodyBytes}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%+v.WithDefaults() = %+v, want %+v", tt.in, got, tt.want)
			}
			if s.Name != tt.in.Name {
				t.Errorf("%+v.WithDefaults().Name = %q, want %q", tt.in, s.Name, tt.in.Name)
			}
			if again := s.WithDefaults(); !equalSpecs(again, s) {
				t.Errorf("%+v.WithDefaults() = %+v, want it unchanged", s, again)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	env := func(n, valueBytes int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("V%03d", i)] = ""
		}
		if valueBytes > 0 {
			m["BIG"] = strings.Repeat("x", valueBytes)
		}
		return m
	}
	withEnv := func(m map[string]string) registry.Spec {
		return defaultSpec("a", func(s *registry.Spec) { s.Env = m })
	}
	tests := []struct {
		name    string
		in      registry.Spec
		wantErr []string // nil: valid
	}{
		{name: "defaults", in: defaultSpec("a", nil)},
		{name: "256 env vars", in: withEnv(env(limitEnvVars, 0))},
		{name: "257 env vars", in: withEnv(env(limitEnvVars+1, 0)), wantErr: []string{"env has 257 variables, at most 256"}},
		{name: "env of exactly 64 KiB", in: withEnv(env(0, limitEnvBytes-len("BIG")))},
		{name: "env one byte over 64 KiB", in: withEnv(env(0, limitEnvBytes-len("BIG")+1)), wantErr: []string{"env is 65537 bytes, at most 65536"}},
		{name: "env names and values count", in: withEnv(env(10, limitEnvBytes-len("BIG")-10*4+1)), wantErr: []string{"env is 65537 bytes"}},
		{name: "env lower-case names allowed", in: withEnv(map[string]string{"path_info": "x", "http_x": "y", "_": "z"})},
		{name: "env control characters allowed", in: withEnv(map[string]string{"A": "\t\r\n\x01"})},
		{name: "env NUL", in: withEnv(map[string]string{"A": "\x00"}), wantErr: []string{"env A contains a NUL byte"}},
		{name: "timeout below 1ms", in: defaultSpec("a", func(s *registry.Spec) { s.Timeout = registry.Duration(time.Millisecond - 1) }), wantErr: []string{"timeout 999.999µs is out of range"}},
		{name: "timeout zero without defaults", in: defaultSpec("a", func(s *registry.Spec) { s.Timeout = 0 }), wantErr: []string{"timeout 0s is out of range"}},
		{
			name:    "zero spec reports every field",
			in:      registry.Spec{},
			wantErr: []string{`name ""`, `runtime ""`, "memory_mb 0", "timeout 0s", "max_body_bytes 0"},
		},
	}
	reserved := []string{
		"GUST_X", "GUST_", "Gust_Token", "HTTP_X", "HTTP_", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING",
		"CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_PROTOCOL", "GATEWAY_INTERFACE", "SCRIPT_NAME",
		"REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT", "SERVER_SOFTWARE", "REQUEST_URI",
	}
	for _, k := range reserved {
		tests = append(tests, struct {
			name    string
			in      registry.Spec
			wantErr []string
		}{
			name:    "reserved " + k,
			in:      withEnv(map[string]string{k: "x"}),
			wantErr: []string{fmt.Sprintf("env name %q is reserved for Gust", k)},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("Validate(%s) = %v, want nil", shorten(fmt.Sprintf("%+v", tt.in)), err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%s) = nil, want error containing %q", shorten(fmt.Sprintf("%+v", tt.in)), tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate(%s) = %q, want it to contain %q", shorten(fmt.Sprintf("%+v", tt.in)), err, want)
				}
			}
		})
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		text string
	}{
		{0, "0s"},
		{time.Millisecond, "1ms"},
		{30 * time.Second, "30s"},
		{90 * time.Second, "1m30s"},
		{15 * time.Minute, "15m0s"},
		{1500 * time.Millisecond, "1.5s"},
		{-time.Second, "-1s"},
	}
	for _, tt := range tests {
		d := registry.Duration(tt.d)
		j, err := json.Marshal(d)
		if want := `"` + tt.text + `"`; err != nil || string(j) != want {
			t.Errorf("json.Marshal(Duration(%v)) = %s, %v, want %s", tt.d, j, err, want)
		}
		var fromJSON registry.Duration
		if err := json.Unmarshal(j, &fromJSON); err != nil || fromJSON != d {
			t.Errorf("json.Unmarshal(%s) = %v, %v, want %v", j, time.Duration(fromJSON), err, tt.d)
		}
		y, err := yaml.Marshal(d)
		if want := tt.text + "\n"; err != nil || string(y) != want {
			t.Errorf("yaml.Marshal(Duration(%v)) = %q, %v, want %q", tt.d, y, err, want)
		}
		var fromYAML registry.Duration
		if err := yaml.Unmarshal(y, &fromYAML); err != nil || fromYAML != d {
			t.Errorf("yaml.Unmarshal(%q) = %v, %v, want %v", y, time.Duration(fromYAML), err, tt.d)
		}
	}
}

// roundTripSpecs are valid specs, with env values chosen to need quoting in
// YAML or escaping in JSON.
var roundTripSpecs = []registry.Spec{
	defaultSpec("a", nil),
	defaultSpec(nameOf63, func(s *registry.Spec) {
		s.MemoryMB, s.Timeout, s.MaxBodyBytes = 16, registry.Duration(time.Millisecond), 1
	}),
	defaultSpec("b", func(s *registry.Spec) {
		s.MemoryMB, s.Timeout, s.MaxBodyBytes = 10240, registry.Duration(15*time.Minute), 32<<20
	}),
	defaultSpec("c", func(s *registry.Spec) { s.Timeout = registry.Duration(90*time.Second + 500*time.Microsecond) }),
	defaultSpec("env", func(s *registry.Spec) {
		s.Env = map[string]string{
			"EMPTY": "", "TRUE": "true", "YES": "yes", "NULL": "null", "TILDE": "~",
			"INT": "42", "HEX": "0x10", "OCT": "017", "FLOAT": "1e3", "INF": ".inf",
			"SPACES": "  padded  ", "COLON": "a: b", "HASH": "# not a comment", "DASH": "- item",
			"MULTI": "line 1\nline 2\n", "CRLF": "a\r\nb", "TAB": "a\tb", "CTRL": "\x01\x7f",
			"UNICODE": "ü 世界 \u2028", "QUOTES": `"double" 'single'`, "BACKSLASH": `C:\dir\`,
			"FLOW": "{a: [b]}", "ALIAS": "*ref", "ANCHOR": "&ref", "TAG": "!!int 1",
			"PERCENT": "%YAML", "AT": "@x", "BACKTICK": "`x`", "MERGE": "<<", "DOCS": "---\n...",
			"lower_case": "x", "_": "underscore",
		}
	}),
}

func TestSpecRoundTrip(t *testing.T) {
	for _, s := range roundTripSpecs {
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("json.Marshal(%+v) error = %v", s, err)
		}
		if got, err := registry.ParseSpecJSON(j); err != nil || !equalSpecs(got, s) {
			t.Errorf("ParseSpecJSON(%s) = %+v, %v, want %+v, nil", j, got, err, s)
		}
		y, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("yaml.Marshal(%+v) error = %v", s, err)
		}
		if got, err := registry.ParseSpecYAML(y); err != nil || !equalSpecs(got, s) {
			t.Errorf("ParseSpecYAML(%q) = %+v, %v, want %+v, nil", y, got, err, s)
		}
	}
}

// TestSpecJSONFieldNamesCaseSensitive checks that JSON, like YAML, takes
// only the documented field names.
func TestSpecJSONFieldNamesCaseSensitive(t *testing.T) {
	for _, in := range []string{`{"NAME":"a"}`, `{"name":"a","Memory_MB":64}`, `{"name":"a","Name":"b"}`} {
		if got, err := registry.DecodeSpecJSON([]byte(in)); err == nil {
			t.Errorf("DecodeSpecJSON(%s) = %+v, nil, want an unknown field error", in, got)
		}
	}
}

// TestSpecYAMLFractionalNumbers checks that YAML does not round a size.
func TestSpecYAMLFractionalNumbers(t *testing.T) {
	for _, in := range []string{"name: a\nmemory_mb: 128.7\n", "name: a\nmax_body_bytes: 1000.5\n"} {
		if got, err := registry.DecodeSpecYAML([]byte(in)); err == nil {
			t.Errorf("DecodeSpecYAML(%q) = %+v, nil, want an error", in, got)
		}
	}
}

// TestSpecEnvInvalidUTF8 checks that a spec which passes Validate survives
// being stored as JSON: an env value that is not UTF-8 would come back with
// U+FFFD in it.
func TestSpecEnvInvalidUTF8(t *testing.T) {
	if _, err := registry.ParseSpecYAML([]byte("name: a\nenv: {A: !!binary /w==}\n")); err == nil {
		t.Errorf("ParseSpecYAML(env A = \"\\xff\") error = nil, want an error about UTF-8")
	}
	s := defaultSpec("a", func(s *registry.Spec) { s.Env = map[string]string{"A": "\xff"} })
	if err := s.Validate(); err == nil {
		t.Errorf("Validate(env A = \"\\xff\") = nil, want an error about UTF-8")
	}
}

func FuzzParseSpecJSON(f *testing.F) {
	for _, tt := range specJSONTests {
		if len(tt.in) <= specSeedBytes {
			f.Add([]byte(tt.in))
		}
	}
	for _, s := range roundTripSpecs {
		j, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := registry.ParseSpecJSON(in)
		if err != nil {
			return
		}
		checkParsedSpec(t, "ParseSpecJSON", in, s)
	})
}

func FuzzParseSpecYAML(f *testing.F) {
	for _, tt := range specYAMLTests {
		if len(tt.in) <= specSeedBytes {
			f.Add([]byte(tt.in))
		}
	}
	for _, s := range roundTripSpecs {
		y, err := yaml.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(y)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := registry.ParseSpecYAML(in)
		if err != nil {
			return
		}
		for k, v := range s.Env {
			if !utf8.ValidString(v) {
				t.Errorf("ParseSpecYAML accepted env %s = %q, which is not UTF-8", k, v)
			}
		}
		checkParsedSpec(t, "ParseSpecYAML", in, s)
	})
}

// specSeedBytes leaves the tables' inputs of 64 KiB and more out of the fuzz
// corpus: the fuzzer cannot usefully mutate them, and minimizing one stalls
// the workers for the default minimize time.
const specSeedBytes = 4 << 10

// checkParsedSpec checks what holds for every spec a Parse function accepts:
// it is valid, defaults change nothing, and it survives JSON, the form the
// registry stores it in.
func checkParsedSpec(t *testing.T, fn string, in []byte, s registry.Spec) {
	t.Helper()
	if err := s.Validate(); err != nil {
		t.Fatalf("%s(%q) = %+v, which Validate rejects: %v", fn, in, s, err)
	}
	if d := s.WithDefaults(); !equalSpecs(d, s) {
		t.Errorf("%s(%q) = %+v, WithDefaults changes it to %+v", fn, in, s, d)
	}
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("json.Marshal(%s(%q)) error = %v", fn, in, err)
	}
	back, err := registry.ParseSpecJSON(j)
	if err != nil {
		t.Fatalf("ParseSpecJSON(%s) error = %v, want nil (from %s(%q))", j, err, fn, in)
	}
	if !equalSpecs(back, s) {
		t.Errorf("ParseSpecJSON(%s) = %+v, want %+v (from %s(%q))", j, back, s, fn, in)
	}
}

// equalSpecs reports whether a and b are equal, taking a nil map or slice and
// an empty one as the same: JSON and YAML leave an empty one out.
func equalSpecs(a, b registry.Spec) bool {
	return reflect.DeepEqual(nilEmpty(a), nilEmpty(b))
}

// nilEmpty returns s with every empty map and slice field set to nil.
func nilEmpty(s registry.Spec) registry.Spec {
	v := reflect.ValueOf(&s).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if (f.Kind() == reflect.Map || f.Kind() == reflect.Slice) && f.Len() == 0 {
			f.SetZero()
		}
	}
	return s
}

// shorten shortens s for a test message.
func shorten(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func TestProcessSpec(t *testing.T) {
	s, err := registry.ParseSpecYAML([]byte("name: py\nruntime: process\ncommand: [python3, app.py]\n"))
	if err != nil {
		t.Fatalf("a minimal process spec: %v", err)
	}
	if s.Protocol != registry.ProtocolHTTP || s.Network != registry.NetworkNone || time.Duration(s.InitTimeout) != registry.DefaultInitTimeout || s.Concurrency != 1 {
		t.Errorf("defaults = protocol %q network %q init_timeout %v, want http, none, %v", s.Protocol, s.Network, s.InitTimeout, registry.DefaultInitTimeout)
	}
	if w := (registry.Spec{Name: "w"}).WithDefaults(); w.Protocol != "" || w.Network != "" || w.InitTimeout != 0 {
		t.Errorf("a wasm spec got process defaults: %+v", w)
	}
	for _, c := range []struct {
		name, yaml string
		wantErr    []string
	}{
		{"no command", "runtime: process", []string{"command is required"}},
		{"empty program", "runtime: process\ncommand: ['']", []string{"command's program is empty"}},
		{"too many args", "runtime: process\ncommand: [" + strings.Repeat("a,", 64) + "a]", []string{"65 arguments"}},
		{"NUL in arg", "runtime: process\ncommand: [\"a\\0b\"]", []string{"command[0] is invalid"}},
		{"long arg", "runtime: process\ncommand: [" + strings.Repeat("a", 4097) + "]", []string{"command[0] is invalid"}},
		{"bad protocol", "runtime: process\ncommand: [x]\nprotocol: grpc", []string{`protocol "grpc" is unknown`}},
		{"bad network", "runtime: process\ncommand: [x]\nnetwork: bridge", []string{`network "bridge" is unknown`}},
		{"content_type on http", "runtime: process\ncommand: [x]\ncontent_type: text/plain", []string{"content_type is only for protocol \"stdio\""}},
		{"bad content_type", "runtime: process\ncommand: [x]\nprotocol: stdio\ncontent_type: 'not a type;;'", []string{"is not a media type"}},
		{"init_timeout too long", "runtime: process\ncommand: [x]\ninit_timeout: 6m", []string{"init_timeout 6m0s is out of range"}},
		{"unknown runtime", "runtime: docker", []string{`runtime "docker" is not supported`}},
		{"process fields on wasm", "command: [x]\nprotocol: http\nnetwork: host", []string{"command is only for runtime", "network is only for runtime", "protocol is only for runtime"}},
		{"concurrency on stdio", "runtime: process\ncommand: [x]\nprotocol: stdio\nconcurrency: 2", []string{"concurrency is only for protocol \"http\""}},
		{"snap_start on process", "runtime: process\ncommand: [x]\nsnap_start: false", []string{"snap_start is only for runtime \"wasm\""}},
		{"snap_start not a bool", "snap_start: sometimes", []string{"line 2: cannot unmarshal"}},
		{"concurrency too high", "runtime: process\ncommand: [x]\nconcurrency: 1001", []string{"concurrency 1001 is out of range 1 to 1000"}},
		{"concurrency on wasm", "concurrency: 2", []string{"concurrency is only for runtime"}},
		{"PORT is reserved", "runtime: process\ncommand: [x]\nenv: {PORT: '1'}", []string{"PORT"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := registry.ParseSpecYAML([]byte("name: fn\n" + c.yaml + "\n"))
			if err == nil {
				t.Fatalf("accepted, want an error saying %q", c.wantErr)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	ok, err := registry.ParseSpecYAML([]byte("name: sh\nruntime: process\ncommand: [./h.sh]\nprotocol: stdio\ncontent_type: application/json\nnetwork: host\ninit_timeout: 2s\n"))
	if err != nil || ok.ContentType != "application/json" || ok.Network != registry.NetworkHost {
		t.Errorf("a full stdio spec: %+v, %v", ok, err)
	}
}
