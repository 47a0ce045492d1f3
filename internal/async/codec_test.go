package async

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

// fill sets every field that v reaches to a value of its own, so that a
// field added to Job or Record and forgotten by the codec fails the round
// trip.
func fill(tb testing.TB, v reflect.Value, seed *int) {
	*seed++
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", *seed))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*seed) * 1000)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(strings.Repeat("b", *seed)))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(tb, s.Index(i), seed)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for range 2 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(tb, k, seed)
			fill(tb, e, seed)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(tb, p.Elem(), seed)
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(1_790_000_000+int64(*seed), int64(*seed)).UTC()))
			return
		}
		for i := range v.NumField() {
			fill(tb, v.Field(i), seed)
		}
	default:
		tb.Fatalf("fill: no value for a %s: teach fill and the codec about it", v.Type())
	}
}

func TestJobRoundTripsEveryField(t *testing.T) { roundTripsEveryField(t, encodeJob, decodeJob) }

func TestRecordRoundTripsEveryField(t *testing.T) {
	roundTripsEveryField(t, encodeRecord, decodeRecord)
}

func roundTripsEveryField[T any](t *testing.T, encode func(T) []byte, decode func([]byte) (T, error)) {
	var v T
	fill(t, reflect.ValueOf(&v).Elem(), new(int))
	got, err := decode(encode(v))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, v)
	}
}

// A job with nothing optional set: zero times stay zero, a request's
// header is there to be set, and a record's attempts are a list (the API
// answers [] for none), as they were from JSON.
func TestZeroValuesRoundTrip(t *testing.T) {
	job, err := decodeJob(encodeJob(Job{ID: "a", Tenant: "t", Function: "f"}))
	if err != nil {
		t.Fatal(err)
	}
	if !job.Queued.IsZero() || !job.NotBefore.IsZero() || job.Request.Header == nil || job.Request.Body != nil || job.Errors != nil {
		t.Errorf("empty job came back as %+v", job)
	}
	rec, err := decodeRecord(encodeRecord(Record{ID: "a", State: Queued}))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Attempts == nil || len(rec.Attempts) != 0 || rec.Response != nil || !rec.Created.IsZero() {
		t.Errorf("empty record came back as %+v", rec)
	}
	out, _ := json.Marshal(rec)
	if !strings.Contains(string(out), `"attempts":[]`) {
		t.Errorf("the API would show an empty record as %s", out)
	}
}

// What an older Gust stored as JSON (a queue or dead letters on disk
// across an upgrade) still reads.
func TestLegacyJSONStillReads(t *testing.T) {
	queued := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	job := Job{ID: "old", Tenant: "t", Function: "f", Version: 3, Queued: queued, Failed: 1,
		Request: sampleRequest(), CallbackURL: "https://example.com/cb"}
	data, _ := json.Marshal(job)
	got, err := decodeJob(data)
	if err != nil || !reflect.DeepEqual(got, job) {
		t.Errorf("legacy job: %v\n got %+v\nwant %+v", err, got, job)
	}
	rec := Record{ID: "old", Tenant: "t", Function: "f", Version: 3, State: Succeeded,
		Attempts: []Attempt{{Started: queued, Ended: queued.Add(time.Second), Status: 200}}, Created: queued, Updated: queued,
		Response: &Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("hi")}}
	data, _ = json.Marshal(rec)
	gotRec, err := decodeRecord(data)
	if err != nil || !reflect.DeepEqual(gotRec, rec) {
		t.Errorf("legacy record: %v\n got %+v\nwant %+v", err, gotRec, rec)
	}
}

func sampleRequest() runtime.Request {
	return runtime.Request{Method: "POST", Path: "/x", Header: http.Header{"Content-Type": {"text/plain"}, "X-Many": {"1", "2"}}, Body: []byte("payload")}
}

// Bytes that no encoder wrote — cut short, garbled, or claiming lengths
// far past their end — decode to an error, never a panic or a huge
// allocation.
func TestCorruptValuesAreErrors(t *testing.T) {
	var job Job
	fill(t, reflect.ValueOf(&job).Elem(), new(int))
	var rec Record
	fill(t, reflect.ValueOf(&rec).Elem(), new(int))
	for name, c := range map[string]struct {
		data   []byte
		decode func([]byte) error
	}{
		"job":    {encodeJob(job), func(b []byte) error { _, err := decodeJob(b); return err }},
		"record": {encodeRecord(rec), func(b []byte) error { _, err := decodeRecord(b); return err }},
	} {
		for i := range len(c.data) {
			if err := c.decode(c.data[:i]); err == nil {
				t.Errorf("%s cut to %d of %d bytes decoded without an error", name, i, len(c.data))
			}
		}
		if err := c.decode(append(c.data, 0)); err == nil {
			t.Errorf("%s with a byte left over decoded without an error", name)
		}
		huge := []byte{c.data[0], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
		if err := c.decode(huge); err == nil {
			t.Errorf("%s claiming an id of 2^63 bytes decoded without an error", name)
		}
	}
	for _, data := range [][]byte{nil, {}, {9}, {recordFormat}, []byte("{not json")} {
		if _, err := decodeJob(data); err == nil {
			t.Errorf("job %q decoded without an error", data)
		}
	}
	if _, err := decodeRecord([]byte{jobFormat}); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("a job read as a record: %v, want an unknown format", err)
	}
}

func FuzzDecode(f *testing.F) {
	var job Job
	fill(f, reflect.ValueOf(&job).Elem(), new(int))
	var rec Record
	fill(f, reflect.ValueOf(&rec).Elem(), new(int))
	f.Add(encodeJob(job))
	f.Add(encodeRecord(rec))
	f.Fuzz(func(t *testing.T, data []byte) {
		if j, err := decodeJob(data); err == nil && len(data) > 0 && data[0] == jobFormat {
			if again, err := decodeJob(encodeJob(j)); err != nil || !reflect.DeepEqual(again, j) {
				t.Errorf("decoded job does not round trip: %v", err)
			}
		}
		if r, err := decodeRecord(data); err == nil && len(data) > 0 && data[0] == recordFormat {
			if again, err := decodeRecord(encodeRecord(r)); err != nil || !reflect.DeepEqual(again, r) {
				t.Errorf("decoded record does not round trip: %v", err)
			}
		}
	})
}

func BenchmarkCodec(b *testing.B) {
	job := Job{ID: "06h1qh8v59yjqkxcbh0kcc8xqm", Tenant: "default", Function: "hello", Version: 1, Queued: time.Now().UTC(),
		Request: sampleRequest()}
	rec := Record{ID: job.ID, Tenant: "default", Function: "hello", Version: 1, State: Succeeded,
		Attempts: []Attempt{{Started: time.Now(), Ended: time.Now(), Status: 200}}, Created: time.Now(), Updated: time.Now(),
		Response: &Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("Hello, async!\n")}}
	b.Run("job", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeJob(encodeJob(job)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("record", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeRecord(encodeRecord(rec)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
