package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits and defaults of a function spec.
const (
	DefaultMemoryMB     = 128
	MinMemoryMB         = 16
	MaxMemoryMB         = 10240
	DefaultTimeout      = 30 * time.Second
	MaxTimeout          = 15 * time.Minute
	DefaultMaxBodyBytes = 6 << 20
	MaxMaxBodyBytes     = 32 << 20
	maxEnvVars          = 256
	maxEnvBytes         = 64 << 10
	maxSpecBytes        = 256 << 10
)

// Runtimes: a function runs as a WebAssembly module (the default), or as a
// program in a Linux container.
const (
	RuntimeWasm    = "wasm"
	RuntimeProcess = "process"
)

// Protocols of a process function, and its network modes.
const (
	ProtocolHTTP  = "http"
	ProtocolStdio = "stdio"
	NetworkNone   = "none"
	NetworkHost   = "host"
)

// Limits and defaults of a process function.
const (
	DefaultInitTimeout = 10 * time.Second
	MaxInitTimeout     = 5 * time.Minute
	MaxConcurrency     = 1000
	maxCommandArgs     = 64
	maxCommandArgBytes = 4096
)

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Spec is what a developer writes about a function (gust.yaml, or JSON to the API).
type Spec struct {
	Name         string            `json:"name" yaml:"name"`
	Runtime      string            `json:"runtime,omitempty" yaml:"runtime,omitempty"`
	Env          map[string]string `json:"env,omitempty" yaml:"env,omitempty"`
	MemoryMB     int               `json:"memory_mb,omitempty" yaml:"memory_mb,omitempty"`
	Timeout      Duration          `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	MaxBodyBytes int64             `json:"max_body_bytes,omitempty" yaml:"max_body_bytes,omitempty"`
	// Auth is "key" (the default: an API key of the function's tenant is
	// needed to invoke it) or "none" (its URL is public).
	Auth string `json:"auth,omitempty" yaml:"auth,omitempty"`
	// Secrets names the tenant's secrets the function gets as environment
	// variables.
	Secrets []string `json:"secrets,omitempty" yaml:"secrets,omitempty"`

	// A process function: the Command to run in its bundle's folder, the
	// Protocol it speaks ("http", the default, or "stdio"), its Network
	// ("none", the default: its own loopback only; or "host"), for stdio
	// the ContentType of raw output (unset: the output is a CGI response),
	// and for http how long it may take to listen (InitTimeout).
	Command     []string `json:"command,omitempty" yaml:"command,omitempty"`
	Protocol    string   `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	Network     string   `json:"network,omitempty" yaml:"network,omitempty"`
	ContentType string   `json:"content_type,omitempty" yaml:"content_type,omitempty"`
	InitTimeout Duration `json:"init_timeout,omitempty" yaml:"init_timeout,omitempty"`
	// Concurrency is how many requests one instance of an http process
	// function serves at once (default 1).
	Concurrency int `json:"concurrency,omitempty" yaml:"concurrency,omitempty"`

	// Scaling, per node. MaxInstances bounds the instances of a version;
	// MinInstances are kept warm even when idle; an instance idle for
	// IdleTTL is stopped; MaxQueue requests wait for an instance when all
	// are busy (0: the default); an instance is replaced after MaxRequests
	// requests (0: never).
	MaxInstances int      `json:"max_instances,omitempty" yaml:"max_instances,omitempty"`
	MinInstances int      `json:"min_instances,omitempty" yaml:"min_instances,omitempty"`
	IdleTTL      Duration `json:"idle_ttl,omitempty" yaml:"idle_ttl,omitempty"`
	MaxQueue     int      `json:"max_queue,omitempty" yaml:"max_queue,omitempty"`
	MaxRequests  int      `json:"max_requests,omitempty" yaml:"max_requests,omitempty"`
	// SnapStart (nil: true) starts a wasm function's instances after the
	// first of a version from a snapshot of the first's start; false runs
	// every instance's start in full, for a function that must make
	// per-instance random state as it starts.
	SnapStart *bool `json:"snap_start,omitempty" yaml:"snap_start,omitempty"`

	// Asynchronous invocations: how many times a failed one is tried again
	// (nil: 2, as Lambda does), and the delay before the first retry,
	// doubled for each retry after it.
	Retries    *int     `json:"retries,omitempty" yaml:"retries,omitempty"`
	RetryDelay Duration `json:"retry_delay,omitempty" yaml:"retry_delay,omitempty"`
	// Where the record of a finished asynchronous invocation goes.
	OnSuccess *Destination `json:"on_success,omitempty" yaml:"on_success,omitempty"`
	OnFailure *Destination `json:"on_failure,omitempty" yaml:"on_failure,omitempty"`
}

// Destination is another function of the same tenant, invoked
// asynchronously with the record as its body, or a NATS subject, published
// to as gust.events.<tenant>.<subject>.
type Destination struct {
	Function string `json:"function,omitempty" yaml:"function,omitempty"`
	Subject  string `json:"subject,omitempty" yaml:"subject,omitempty"`
}

func (d *Destination) validate(field string) error {
	if d == nil {
		return nil
	}
	switch {
	case (d.Function == "") == (d.Subject == ""):
		return fmt.Errorf("%s names a function or a subject, one of the two", field)
	case d.Function != "" && !ValidName(d.Function):
		return fmt.Errorf("%s.function %q is not a function name", field, d.Function)
	case d.Subject != "" && !validSubject(d.Subject):
		return fmt.Errorf("%s.subject %q is invalid: use dot-separated tokens of letters, digits, - and _", field, d.Subject)
	}
	return nil
}

func validSubject(s string) bool {
	if len(s) > 200 {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Asynchronous invocation defaults and limits.
const (
	DefaultRetries    = 2
	MaxRetries        = 10
	DefaultRetryDelay = time.Second
	MinRetryDelay     = 10 * time.Millisecond
	MaxRetryDelay     = 10 * time.Minute
)

// RetryCount is the number of retries of a failed asynchronous invocation.
func (s Spec) RetryCount() int {
	if s.Retries == nil {
		return DefaultRetries
	}
	return *s.Retries
}

// Snapshots reports whether instances may start from a snapshot (SnapStart
// unset or true).
func (s Spec) Snapshots() bool { return s.SnapStart == nil || *s.SnapStart }

// Scaling defaults and limits.
const (
	DefaultMaxInstances = 32
	MaxMaxInstances     = 1000
	DefaultIdleTTL      = 5 * time.Minute
	MinIdleTTL          = time.Second
	MaxIdleTTL          = 24 * time.Hour
	DefaultMaxQueue     = 100
	MaxMaxQueue         = 10000
)

// Values of Spec.Auth.
const (
	AuthKey  = "key"
	AuthNone = "none"
)

const maxSecrets = 64

// Duration is a time.Duration written as a Go duration string ("30s", "2m").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("durations are strings such as \"30s\"")
	}
	return d.parse(s)
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: durations are strings such as \"30s\"", n.Line)
	}
	if err := d.parse(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return &durationError{s}
	}
	*d = Duration(v)
	return nil
}

// durationError is a value that is not a duration; the decoders name its
// field, which the value's own decoder does not know.
type durationError struct{ value string }

func (e *durationError) Error() string {
	return fmt.Sprintf("%q is not a duration such as \"30s\"", e.value)
}

// durationFields are the spec's durations.
var durationFields = []string{"timeout", "init_timeout", "idle_ttl", "retry_delay"}

// nameDuration puts the name of the field that holds the bad value on a
// durationError.
func nameDuration(err error, value func(field string) (string, bool)) error {
	var de *durationError
	if !errors.As(err, &de) {
		return err
	}
	for _, f := range durationFields {
		if v, ok := value(f); ok && v == de.value {
			return fmt.Errorf("%s %w", f, de)
		}
	}
	return err
}

// ValidName reports whether s may name a function or a tenant:
// ^[a-z][a-z0-9-]{0,62}$. It runs on every request, so it is a loop, not
// a regular expression.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ParseSpecJSON decodes a spec from JSON (see DecodeSpecJSON), applies
// defaults and validates it.
func ParseSpecJSON(data []byte) (Spec, error) {
	s, err := DecodeSpecJSON(data)
	if err != nil {
		return Spec{}, err
	}
	return s.WithDefaults().validated()
}

// ParseSpecYAML decodes a spec from YAML (see DecodeSpecYAML), applies
// defaults and validates it.
func ParseSpecYAML(data []byte) (Spec, error) {
	s, err := DecodeSpecYAML(data)
	if err != nil {
		return Spec{}, err
	}
	return s.WithDefaults().validated()
}

// DecodeSpecJSON decodes a spec from JSON, rejecting unknown fields and
// trailing data. It neither applies defaults nor validates.
func DecodeSpecJSON(data []byte) (Spec, error) {
	if len(data) > maxSpecBytes {
		return Spec{}, fmt.Errorf("spec is larger than %d bytes", maxSpecBytes)
	}
	// encoding/json matches field names without regard to case; a spec's
	// names are exact, as they are in YAML.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err == nil {
		for name := range fields {
			if !specFields[name] {
				return Spec{}, fmt.Errorf("spec is not valid JSON: unknown field %q", name)
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		err = nameDuration(err, func(f string) (string, bool) {
			var v string
			return v, json.Unmarshal(fields[f], &v) == nil
		})
		return Spec{}, fmt.Errorf("spec is not valid JSON: %s", jsonError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Spec{}, errors.New("spec is not valid JSON: data after the object")
	}
	return s, nil
}

// DecodeSpecYAML decodes a spec from YAML (gust.yaml), rejecting unknown
// fields and more than one document. It neither applies defaults nor
// validates.
func DecodeSpecYAML(data []byte) (Spec, error) {
	if len(data) > maxSpecBytes {
		return Spec{}, fmt.Errorf("spec is larger than %d bytes", maxSpecBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		if err == io.EOF {
			return Spec{}, errors.New("spec is empty")
		}
		var raw map[string]any
		yaml.Unmarshal(data, &raw)
		err = nameDuration(err, func(f string) (string, bool) {
			v, ok := raw[f]
			return fmt.Sprint(v), ok
		})
		return Spec{}, fmt.Errorf("spec is not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra any
	if err := dec.Decode(&extra); err != io.EOF {
		return Spec{}, errors.New("spec is not valid YAML: more than one document")
	}
	// yaml.v3 truncates 128.7 into an int field; refuse it as JSON does.
	var raw map[string]any
	if yaml.Unmarshal(data, &raw) == nil {
		for _, name := range []string{"memory_mb", "max_body_bytes", "concurrency", "max_instances", "min_instances", "max_queue", "max_requests", "retries"} {
			if f, ok := raw[name].(float64); ok {
				return Spec{}, fmt.Errorf("spec is not valid YAML: %s must be a whole number, not %v", name, f)
			}
		}
	}
	return s, nil
}

func jsonError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Sprintf("field %q must be a %s", typeErr.Field, typeErr.Type)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// clone returns s with nothing shared with the original.
func (s Spec) clone() Spec {
	s.Env = maps.Clone(s.Env)
	s.Secrets = slices.Clone(s.Secrets)
	s.Command = slices.Clone(s.Command)
	if s.Retries != nil {
		n := *s.Retries
		s.Retries = &n
	}
	if s.SnapStart != nil {
		b := *s.SnapStart
		s.SnapStart = &b
	}
	for _, d := range []**Destination{&s.OnSuccess, &s.OnFailure} {
		if *d != nil {
			c := **d
			*d = &c
		}
	}
	return s
}

// WithDefaults returns s with every unset field at its default.
func (s Spec) WithDefaults() Spec {
	if s.Runtime == "" {
		s.Runtime = RuntimeWasm
	}
	if s.MemoryMB == 0 {
		s.MemoryMB = DefaultMemoryMB
	}
	if s.Timeout == 0 {
		s.Timeout = Duration(DefaultTimeout)
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.Auth == "" {
		s.Auth = AuthKey
	}
	if s.MaxInstances == 0 {
		s.MaxInstances = DefaultMaxInstances
	}
	if s.IdleTTL == 0 {
		s.IdleTTL = Duration(DefaultIdleTTL)
	}
	if s.MaxQueue == 0 {
		s.MaxQueue = DefaultMaxQueue
	}
	if s.RetryDelay == 0 {
		s.RetryDelay = Duration(DefaultRetryDelay)
	}
	if s.Runtime == RuntimeProcess {
		if s.Protocol == "" {
			s.Protocol = ProtocolHTTP
		}
		if s.Network == "" {
			s.Network = NetworkNone
		}
		if s.InitTimeout == 0 {
			s.InitTimeout = Duration(DefaultInitTimeout)
		}
		if s.Concurrency == 0 && s.Protocol == ProtocolHTTP {
			s.Concurrency = 1
		}
	}
	return s
}

func (s Spec) validated() (Spec, error) { return s, s.Validate() }

// Validate reports every problem with s (after defaults) in one error.
func (s Spec) Validate() error {
	var errs []error
	if !ValidName(s.Name) {
		errs = append(errs, fmt.Errorf("name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter", s.Name))
	}
	switch s.Runtime {
	case RuntimeWasm:
		errs = append(errs, processOnly(s)...)
	case RuntimeProcess:
		errs = append(errs, validateProcess(s)...)
	default:
		errs = append(errs, fmt.Errorf("runtime %q is not supported: use %q or %q", s.Runtime, RuntimeWasm, RuntimeProcess))
	}
	if s.MemoryMB < MinMemoryMB || s.MemoryMB > MaxMemoryMB {
		errs = append(errs, fmt.Errorf("memory_mb %d is out of range %d to %d", s.MemoryMB, MinMemoryMB, MaxMemoryMB))
	}
	if t := time.Duration(s.Timeout); t < time.Millisecond || t > MaxTimeout {
		errs = append(errs, fmt.Errorf("timeout %s is out of range 1ms to %s", t, MaxTimeout))
	}
	if s.MaxBodyBytes < 1 || s.MaxBodyBytes > MaxMaxBodyBytes {
		errs = append(errs, fmt.Errorf("max_body_bytes %d is out of range 1 to %d", s.MaxBodyBytes, MaxMaxBodyBytes))
	}
	if s.Auth != AuthKey && s.Auth != AuthNone {
		errs = append(errs, fmt.Errorf("auth %q is unknown: use %q (an API key is needed) or %q (public)", s.Auth, AuthKey, AuthNone))
	}
	errs = append(errs, validateScaling(s)...)
	errs = append(errs, validateEnv(s.Env)...)
	errs = append(errs, validateSecrets(s.Secrets, s.Env)...)
	return errors.Join(errs...)
}

func validateEnv(env map[string]string) []error {
	var errs []error
	if len(env) > maxEnvVars {
		errs = append(errs, fmt.Errorf("env has %d variables, at most %d are allowed", len(env), maxEnvVars))
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	size := 0
	for _, k := range keys {
		v := env[k]
		size += len(k) + len(v)
		switch {
		case !envKeyRE.MatchString(k):
			errs = append(errs, fmt.Errorf("env name %q is invalid: use letters, digits and underscores, not starting with a digit", k))
		case reservedName(k):
			errs = append(errs, fmt.Errorf("env name %q is reserved for Gust", k))
		case strings.ContainsRune(v, 0):
			errs = append(errs, fmt.Errorf("env %s contains a NUL byte", k))
		case !utf8.ValidString(v):
			errs = append(errs, fmt.Errorf("env %s is not valid UTF-8", k))
		}
	}
	if size > maxEnvBytes {
		errs = append(errs, fmt.Errorf("env is %d bytes, at most %d are allowed", size, maxEnvBytes))
	}
	return errs
}

// processOnly reports the fields of s that only a process function may set.
func processOnly(s Spec) []error {
	var errs []error
	for name, set := range map[string]bool{
		"command": len(s.Command) > 0, "protocol": s.Protocol != "", "network": s.Network != "",
		"content_type": s.ContentType != "", "init_timeout": s.InitTimeout != 0, "concurrency": s.Concurrency != 0,
	} {
		if set {
			errs = append(errs, fmt.Errorf("%s is only for runtime %q", name, RuntimeProcess))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errs
}

func validateProcess(s Spec) []error {
	var errs []error
	switch {
	case len(s.Command) == 0:
		errs = append(errs, errors.New(`command is required for runtime "process": the program and its arguments, for example ["python3", "app.py"]`))
	case len(s.Command) > maxCommandArgs:
		errs = append(errs, fmt.Errorf("command has %d arguments, at most %d are allowed", len(s.Command), maxCommandArgs))
	case s.Command[0] == "":
		errs = append(errs, errors.New("command's program is empty"))
	}
	for i, arg := range s.Command {
		if len(arg) > maxCommandArgBytes || strings.IndexByte(arg, 0) >= 0 || !utf8.ValidString(arg) {
			errs = append(errs, fmt.Errorf("command[%d] is invalid: at most %d bytes of UTF-8 without NUL", i, maxCommandArgBytes))
		}
	}
	if s.SnapStart != nil {
		errs = append(errs, errors.New(`snap_start is only for runtime "wasm": a process function's program starts afresh in each instance`))
	}
	if s.Protocol != ProtocolHTTP && s.Protocol != ProtocolStdio {
		errs = append(errs, fmt.Errorf("protocol %q is unknown: use %q (the program serves HTTP on $PORT) or %q (one process per request)", s.Protocol, ProtocolHTTP, ProtocolStdio))
	}
	if s.Network != NetworkNone && s.Network != NetworkHost {
		errs = append(errs, fmt.Errorf("network %q is unknown: use %q (the default: loopback only) or %q", s.Network, NetworkNone, NetworkHost))
	}
	if s.ContentType != "" {
		if s.Protocol != ProtocolStdio {
			errs = append(errs, fmt.Errorf("content_type is only for protocol %q", ProtocolStdio))
		} else if _, _, err := mime.ParseMediaType(s.ContentType); err != nil || len(s.ContentType) > 256 {
			errs = append(errs, fmt.Errorf("content_type %q is not a media type", s.ContentType))
		}
	}
	if t := time.Duration(s.InitTimeout); t < time.Millisecond || t > MaxInitTimeout {
		errs = append(errs, fmt.Errorf("init_timeout %s is out of range 1ms to %s", t, MaxInitTimeout))
	}
	switch {
	case s.Protocol != ProtocolHTTP && s.Concurrency != 0:
		errs = append(errs, fmt.Errorf("concurrency is only for protocol %q: a stdio process serves one request", ProtocolHTTP))
	case s.Protocol == ProtocolHTTP && (s.Concurrency < 1 || s.Concurrency > MaxConcurrency):
		errs = append(errs, fmt.Errorf("concurrency %d is out of range 1 to %d", s.Concurrency, MaxConcurrency))
	}
	return errs
}

func validateScaling(s Spec) []error {
	var errs []error
	if s.MaxInstances < 1 || s.MaxInstances > MaxMaxInstances {
		errs = append(errs, fmt.Errorf("max_instances %d is out of range 1 to %d", s.MaxInstances, MaxMaxInstances))
	}
	if s.MinInstances < 0 || s.MinInstances > s.MaxInstances {
		errs = append(errs, fmt.Errorf("min_instances %d is out of range 0 to max_instances (%d)", s.MinInstances, s.MaxInstances))
	}
	if t := time.Duration(s.IdleTTL); t < MinIdleTTL || t > MaxIdleTTL {
		errs = append(errs, fmt.Errorf("idle_ttl %s is out of range %s to %s", t, MinIdleTTL, MaxIdleTTL))
	}
	if s.MaxQueue < 0 || s.MaxQueue > MaxMaxQueue {
		errs = append(errs, fmt.Errorf("max_queue %d is out of range 0 to %d", s.MaxQueue, MaxMaxQueue))
	}
	if s.MaxRequests < 0 {
		errs = append(errs, fmt.Errorf("max_requests %d cannot be negative", s.MaxRequests))
	}
	if n := s.RetryCount(); n < 0 || n > MaxRetries {
		errs = append(errs, fmt.Errorf("retries %d is out of range 0 to %d", n, MaxRetries))
	}
	if d := time.Duration(s.RetryDelay); d < MinRetryDelay || d > MaxRetryDelay {
		errs = append(errs, fmt.Errorf("retry_delay %s is out of range %s to %s", d, MinRetryDelay, MaxRetryDelay))
	}
	for _, err := range []error{s.OnSuccess.validate("on_success"), s.OnFailure.validate("on_failure")} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func validateSecrets(names []string, env map[string]string) []error {
	var errs []error
	if len(names) > maxSecrets {
		errs = append(errs, fmt.Errorf("secrets lists %d names, at most %d are allowed", len(names), maxSecrets))
	}
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case !envKeyRE.MatchString(n) || len(n) > 128:
			errs = append(errs, fmt.Errorf("secret name %q is invalid: use letters, digits and underscores, not starting with a digit", n))
		case reservedName(n):
			errs = append(errs, fmt.Errorf("secret name %q is reserved for Gust", n))
		case seen[n]:
			errs = append(errs, fmt.Errorf("secret %q is listed twice", n))
		case env[n] != "":
			errs = append(errs, fmt.Errorf("secret %q is also set in env", n))
		}
		seen[n] = true
	}
	return errs
}

// specFields are the JSON names of Spec's fields.
var specFields = func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[Spec]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out[name] = true
	}
	return out
}()

// reservedName reports whether an environment variable's name is Gust's:
// GUST_*, HTTP_*, a CGI variable, or PORT (a process function's).
func reservedName(k string) bool {
	return strings.HasPrefix(strings.ToUpper(k), "GUST_") || strings.HasPrefix(k, "HTTP_") || reservedEnv[k]
}

// reservedEnv are the CGI variables Gust sets for every request, and PORT.
var reservedEnv = map[string]bool{
	"REQUEST_METHOD": true, "PATH_INFO": true, "QUERY_STRING": true, "CONTENT_TYPE": true,
	"CONTENT_LENGTH": true, "SERVER_PROTOCOL": true, "GATEWAY_INTERFACE": true,
	"SCRIPT_NAME": true, "REMOTE_ADDR": true, "SERVER_NAME": true, "SERVER_PORT": true,
	"SERVER_SOFTWARE": true, "REQUEST_URI": true, "PORT": true,
}
