package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestPubAckSeq(t *testing.T) {
	for _, tt := range []struct {
		data string
		seq  uint64
		ok   bool
	}{
		{`{"stream":"gust_work","seq":1}`, 1, true},
		{`{"stream":"KV_gust_invocations","seq":18446744073709551615}`, 18446744073709551615, true},
		// Anything else is the library's to read.
		{`{"stream":"s","seq":18446744073709551616}`, 0, false},
		{`{"stream":"s","seq":5,"duplicate":true}`, 0, false},
		{`{"stream":"s","seq":05}`, 0, false},
		{`{"stream":"s","seq":0}`, 0, false},
		{`{"stream":"s","seq":-1}`, 0, false},
		{`{"stream":"s","seq":}`, 0, false},
		{`{"stream":"","seq":1}`, 0, false},
		{`{"stream":"s","seq":1`, 0, false},
		{`{"stream":"s","seq":1} `, 0, false},
		{`{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded for account"}}`, 0, false},
		{`{"stream":"s","domain":"d","seq":1}`, 0, false},
		{``, 0, false},
		{`garbage`, 0, false},
	} {
		seq, ok := pubAckSeq([]byte(tt.data))
		if seq != tt.seq || ok != tt.ok {
			t.Errorf("pubAckSeq(%s) = %d, %v; want %d, %v", tt.data, seq, ok, tt.seq, tt.ok)
		}
	}
}

func TestReadPubAck(t *testing.T) {
	if seq, err := readPubAck([]byte(`{"stream":"s","seq":7,"duplicate":true}`)); seq != 7 || err != nil {
		t.Errorf("duplicate: %d, %v; want 7", seq, err)
	}
	_, err := readPubAck([]byte(`{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded"}}`))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10077 || !strings.Contains(err.Error(), "resource limits exceeded") {
		t.Errorf("error answer: %v", err)
	}
	for _, bad := range []string{``, `{}`, `not json`, `{"seq":1}`} {
		if _, err := readPubAck([]byte(bad)); err == nil {
			t.Errorf("readPubAck(%q) gave no error", bad)
		}
	}
}
