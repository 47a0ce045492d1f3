package async

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// The store keeps queued jobs, dead letters and records in a binary form of
// their own: encoding/json took some 30 µs of each invocation's CPU to
// write a job, read it back and write its record, a sixth of all an
// asynchronous invocation costs, where this form takes a tenth of that.
//
// A value is a format byte, then its fields in a fixed order: integers as
// varints, strings and byte strings as a uvarint length and the bytes,
// times as a presence byte and Unix nanoseconds, headers as a count of
// names, each with its count of values. Values stored as JSON, before this
// form (a data dir of an older Gust), are read as JSON: their first byte
// is '{'. A change of the fields is a new format byte, whose decoder reads
// the older ones too.
const (
	jobFormat    byte = 1
	recordFormat byte = 2
)

// encodeJob returns job in the store's form.
func encodeJob(job Job) []byte {
	r := &job.Request
	n := 64 + len(r.Body) + len(r.Path) + len(r.RawPath) + len(r.RawQuery) + len(job.CallbackURL) + 4*len(job.ID) + headerSize(r.Header)
	b := make([]byte, 0, n)
	b = appendInvocation(append(b, jobFormat), job.ID, job.Tenant, job.Function, job.Version)
	b = appendString(b, r.Method)
	b = appendString(b, r.Path)
	b = appendString(b, r.RawPath)
	b = appendString(b, r.RawQuery)
	b = appendHeader(b, r.Header)
	b = appendBytes(b, r.Body)
	b = appendString(b, r.RemoteAddr)
	b = appendString(b, r.Host)
	b = appendString(b, r.InvocationID)
	b = appendString(b, r.Source)
	b = appendString(b, r.Tenant)
	b = appendString(b, r.Function)
	b = binary.AppendVarint(b, int64(r.Version))
	b = appendTime(b, job.Queued)
	b = binary.AppendUvarint(b, uint64(len(job.Errors)))
	for _, e := range job.Errors {
		b = appendString(b, e)
	}
	b = binary.AppendVarint(b, int64(job.Failed))
	b = appendTime(b, job.NotBefore)
	b = appendString(b, job.CallbackURL)
	b = binary.AppendVarint(b, int64(job.Run))
	return b
}

// decodeJob reads a job that encodeJob wrote, or that an older Gust wrote
// as JSON.
func decodeJob(data []byte) (Job, error) {
	var job Job
	d, done, err := startDecoding(data, jobFormat, &job)
	if done {
		return job, err
	}
	r := &job.Request
	job.ID, job.Tenant, job.Function, job.Version = d.invocation()
	r.Method = d.string()
	r.Path = d.string()
	r.RawPath = d.string()
	r.RawQuery = d.string()
	r.Header = d.header()
	if r.Header == nil {
		r.Header = http.Header{} // a request always has one
	}
	r.Body = d.bytes()
	r.RemoteAddr = d.string()
	r.Host = d.string()
	r.InvocationID = d.string()
	r.Source = d.string()
	r.Tenant = d.string()
	r.Function = d.string()
	r.Version = d.int()
	job.Queued = d.time()
	if n := d.count(1); n > 0 {
		job.Errors = make([]string, n)
		for i := range job.Errors {
			job.Errors[i] = d.string()
		}
	}
	job.Failed = d.int()
	job.NotBefore = d.time()
	job.CallbackURL = d.string()
	job.Run = d.int()
	return job, d.end()
}

// encodeRecord returns rec in the store's form.
func encodeRecord(rec Record) []byte {
	n := 64 + 4*len(rec.ID) + 32*len(rec.Attempts)
	for _, a := range rec.Attempts {
		n += len(a.Error)
	}
	if rec.Response != nil {
		n += 16 + len(rec.Response.Body) + headerSize(rec.Response.Header)
	}
	b := make([]byte, 0, n)
	b = appendInvocation(append(b, recordFormat), rec.ID, rec.Tenant, rec.Function, rec.Version)
	b = appendString(b, string(rec.State))
	b = binary.AppendUvarint(b, uint64(len(rec.Attempts)))
	for _, a := range rec.Attempts {
		b = appendTime(b, a.Started)
		b = appendTime(b, a.Ended)
		b = binary.AppendVarint(b, int64(a.Status))
		b = appendString(b, a.Error)
	}
	b = appendTime(b, rec.Created)
	b = appendTime(b, rec.Updated)
	if rec.Response == nil {
		return append(b, 0)
	}
	resp := rec.Response
	b = append(b, 1)
	b = binary.AppendVarint(b, int64(resp.Status))
	b = appendHeader(b, resp.Header)
	b = appendBytes(b, resp.Body)
	return append(b, boolByte(resp.Truncated))
}

// decodeRecord reads a record that encodeRecord wrote, or that an older
// Gust wrote as JSON.
func decodeRecord(data []byte) (Record, error) {
	var rec Record
	d, done, err := startDecoding(data, recordFormat, &rec)
	if done {
		return rec, err
	}
	rec.ID, rec.Tenant, rec.Function, rec.Version = d.invocation()
	rec.State = State(d.string())
	// Each attempt takes at least four bytes.
	rec.Attempts = make([]Attempt, d.count(4))
	for i := range rec.Attempts {
		a := &rec.Attempts[i]
		a.Started = d.time()
		a.Ended = d.time()
		a.Status = d.int()
		a.Error = d.string()
	}
	rec.Created = d.time()
	rec.Updated = d.time()
	if d.bool() {
		rec.Response = &Response{Status: d.int(), Header: d.header(), Body: d.bytes(), Truncated: d.bool()}
	}
	return rec, d.end()
}

// startDecoding begins to read data, a value of format, into v. It is
// done if an older Gust wrote data, as JSON (v is read then), or if data
// is in another format; otherwise d reads on, past the format byte.
func startDecoding(data []byte, format byte, v any) (d decoder, done bool, err error) {
	if len(data) > 0 && data[0] == '{' {
		return decoder{}, true, json.Unmarshal(data, v)
	}
	d = decoder{b: data}
	if f := d.byte(); f != format && d.err == nil {
		return d, true, fmt.Errorf("async: stored value in unknown format %d, want %d", f, format)
	}
	return d, false, nil
}

// appendInvocation appends what names an invocation, which jobs and
// records begin with.
func appendInvocation(b []byte, id, tenant, function string, version int) []byte {
	return binary.AppendVarint(appendString(appendString(appendString(b, id), tenant), function), int64(version))
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b []byte, p []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}

// appendTime appends t to the nanosecond, without its location: the store
// keeps times in UTC.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(append(b, 1), t.UnixNano())
}

// headerSize is about what appendHeader appends for h: enough to size
// the buffer once.
func headerSize(h http.Header) int {
	n := 0
	for name, values := range h {
		n += len(name) + 2
		for _, v := range values {
			n += len(v) + 2
		}
	}
	return n
}

func appendHeader(b []byte, h http.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for name, values := range h {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(values)))
		for _, v := range values {
			b = appendString(b, v)
		}
	}
	return b
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// errCorrupt is what a decoder returns for bytes that no encoder wrote.
var errCorrupt = errors.New("async: stored value is corrupt")

// decoder reads the store's form. Past the first error, every read
// returns a zero value, and end returns the error: a value cut short or
// garbled decodes to an error, never to a panic or a huge allocation.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt, nil }

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v, n := binary.Varint(d.b)
	if n <= 0 || int64(int(v)) != v {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return int(v)
}

// count reads the length of a list whose items take at least size bytes
// each: one longer than the bytes left is corrupt.
func (d *decoder) count(size int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/size) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) raw() []byte {
	n := d.count(1)
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) string() string { return string(d.raw()) }

// bytes returns a copy, nil for none: a message's data may be reused.
func (d *decoder) bytes() []byte {
	p := d.raw()
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) time() time.Time {
	if !d.bool() {
		return time.Time{}
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return time.Time{}
	}
	d.b = d.b[n:]
	return time.Unix(0, v).UTC()
}

// header reads a header, nil for none.
func (d *decoder) header() http.Header {
	// A name takes at least two bytes (its length and a count of values),
	// a value at least one.
	names := d.count(2)
	if names == 0 {
		return nil
	}
	h := make(http.Header, names)
	for range names {
		name := d.string()
		values := make([]string, d.count(1))
		for i := range values {
			values[i] = d.string()
		}
		if d.err != nil {
			return nil
		}
		h[name] = values
	}
	return h
}

// invocation reads what appendInvocation appended.
func (d *decoder) invocation() (id, tenant, function string, version int) {
	return d.string(), d.string(), d.string(), d.int()
}

// end returns the first error, or one for bytes left over.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail()
	}
	return d.err
}
