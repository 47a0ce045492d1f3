package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publish stores m in the stream that takes its subject and returns its
// sequence number, as js.PublishMsg does. An acknowledgement of the usual
// shape is read by hand: encoding/json took a twentieth of the CPU of an
// asynchronous invocation, which writes twice (its job and its record).
// Anything else (an error, a duplicate, no stream to answer yet) goes the
// library's way, which retries and reads it in full.
func publish(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	resp, err := js.Conn().RequestMsgWithContext(ctx, m)
	if err == nil {
		if seq, ok := pubAckSeq(resp.Data); ok {
			return seq, nil
		}
	} else if !errors.Is(err, nats.ErrNoResponders) {
		return 0, err
	}
	// The stream stored m if the answer was an acknowledgement; publishing
	// it again then is deduplicated only with a message id. So it is
	// published again only where nothing stored it: no responders.
	if err == nil {
		return readPubAck(resp.Data)
	}
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// pubAckSeq reads an acknowledgement of exactly the form
// {"stream":"name","seq":n}, and reports whether data was one.
func pubAckSeq(data []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(data, []byte(`{"stream":"`))
	if !ok {
		return 0, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 {
		return 0, false
	}
	digits, ok := bytes.CutPrefix(rest[i+1:], []byte(`,"seq":`))
	if !ok {
		return 0, false
	}
	digits, ok = bytes.CutSuffix(digits, []byte("}"))
	if !ok || len(digits) == 0 || digits[0] == '0' {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	seq, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return 0, false
	}
	return seq, true
}

// readPubAck reads any answer to a publish, as the library does.
func readPubAck(data []byte) (uint64, error) {
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
	}
	if err := json.Unmarshal(data, &ack); err != nil {
		return 0, jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		return 0, ack.Error
	}
	if ack.Stream == "" {
		return 0, jetstream.ErrInvalidJSAck
	}
	return ack.Seq, nil
}

// validKey reports whether key is a key that JetStream's KV buckets take:
// letters, digits and -/_=., not starting or ending with a dot, nor with
// two dots in a row.
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return false
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '/' || c == '_' || c == '=' || c == '.':
		default:
			return false
		}
	}
	return true
}
