package async

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/store"
	"github.com/gust-faas/gust/internal/tenant"
)

// process runs one delivery of a queued invocation.
func (s *Service) process(ctx context.Context, m *store.Message) {
	job, err := decodeJob(m.Data)
	if err != nil {
		s.log.Error("dropping an unreadable queued invocation", "err", err)
		logQueueError(s.log, m.Ack())
		return
	}
	log := s.log.With("invocation_id", job.ID, "tenant", job.Tenant, "function", job.Function)
	if s.superseded(ctx, m, job) {
		log.Debug("a later message of the invocation is queued: this one is dropped", "failed", job.Failed, "delivered", m.Delivered)
		logQueueError(log, m.Ack())
		return
	}
	t, ok := s.tenantOf(job)
	if !ok {
		// Its tenant was deleted (perhaps created again since): nothing
		// of it may run or reach the dead letters of a new one.
		logQueueError(log, m.Ack())
		return
	}
	if wait := job.NotBefore.Sub(s.now()); wait > 0 {
		logQueueError(log, m.Retry(wait)) // a retry, queued again ahead of its time
		return
	}
	// On its first delivery, the record is the one Enqueue wrote; later
	// deliveries (after a worker died) and retries read what happened.
	rec := Record{ID: job.ID, Tenant: job.Tenant, Function: job.Function, Version: job.Version, State: Queued, Attempts: []Attempt{}, Created: job.Queued}
	if m.Delivered > 1 || job.Failed > 0 {
		if stored, err := s.Get(ctx, job.Tenant, job.ID); err == nil {
			rec = stored
		}
	}
	if rec.State == Succeeded || rec.State == Dead {
		logQueueError(log, m.Ack()) // a worker finished it and died before its ack
		return
	}
	if rec.State == Running {
		// Its worker died mid-invocation; that attempt counts.
		last := &rec.Attempts[len(rec.Attempts)-1]
		last.Ended, last.Error = s.now().UTC(), "the worker running it stopped"
	}
	fn, ok := s.functions.Lookup(job.Tenant, job.Function)
	if ok && job.Queued.Before(fn.Created) {
		// Queued for a function deleted since, whose name a new one took:
		// its versions start at 1 again, with other code. Its record ends
		// dead (it said queued, or failed and waiting for a retry, for as
		// long as records live), with no dead letter the new function
		// would inherit.
		log.Info("dropping an invocation of a deleted function")
		rec.State = Dead
		if s.record(ctx, rec, log) == nil {
			logQueueError(log, m.Ack())
		}
		return
	}
	v, vok := fn.Version(job.Version)
	if !ok || !vok {
		s.bury(ctx, m, job, rec, fmt.Sprintf("function %s version %d no longer exists", job.Function, job.Version), log)
		return
	}
	if failures := max(len(rec.Attempts), job.Failed); failures > v.Spec.RetryCount() {
		// Every attempt it may have is spent: its last worker stopped
		// during the last, or could not move it to the dead letters.
		s.fail(ctx, m, job, rec, v.Spec, fmt.Sprintf("failed %d attempts", failures), log)
		return
	}
	// Async work gets at most half of a version's instances on this node,
	// so that it cannot starve synchronous requests. When that half stays
	// busy for shareWait while other messages wait for a worker, the
	// message goes back to the queue for a while, not counted as an
	// attempt: a worker that waited longer would wait for one slow
	// function while other functions' work queued behind it.
	shareKey := job.Tenant + "/" + job.Function + "/" + strconv.Itoa(v.Number)
	share := s.joinShare(shareKey, max(1, v.Spec.MaxInstances/2))
	defer s.leaveShare(shareKey, share)
	for !share.take(ctx, shareWait) {
		if ctx.Err() != nil {
			return // shutting down: the message will be delivered again
		}
		if s.queue.Waiting() == 0 {
			continue // nothing else to do meanwhile
		}
		delay := min(backoff(shareRetryDelay, int(min(m.Delivered, 6))), 10*time.Second)
		log.Debug("async invocation waits for a free instance of its function", "retry_in", delay)
		logQueueError(log, m.Retry(delay))
		return
	}
	defer func() { <-share.slots }()
	release, err := s.limiter.Hold(job.Tenant, t.Quotas, v.Spec.MemoryMB)
	if err != nil {
		var qerr *tenant.QuotaError
		delay := time.Second
		if errors.As(err, &qerr) {
			if qerr.Never {
				s.fail(ctx, m, job, rec, v.Spec, qerr.Error(), log)
				return
			}
			delay = qerr.RetryAfter
		}
		// The tenant is at its quota: not the function's fault, and not
		// an attempt. The message waits its turn in the queue, longer
		// each time it finds the quota taken.
		delay = min(backoff(delay, int(min(m.Delivered, 5))), 10*time.Second)
		log.Debug("async invocation waits for its tenant's quota", "err", err, "retry_in", delay)
		logQueueError(log, m.Retry(delay))
		return
	}
	defer release()

	rec.State = Running
	rec.Attempts = append(rec.Attempts, Attempt{Started: s.now().UTC()})
	settle := func() {}
	if m.Delivered > 1 {
		// Delivered again: if what killed the last worker kills this one,
		// the attempt must be on record, however short.
		s.record(ctx, rec, log)
	} else {
		settle = s.recordAfter(ctx, rec, runningAfter, log)
	}

	req := job.Request
	// The invocation outlives ctx (the workers stop taking work when a
	// shutdown begins, and let what runs finish) but not Cut.
	resp, _, err := s.invoker.Invoke(s.running.ctx, pool.Target{Tenant: job.Tenant, Function: job.Function, Version: v}, &req, log)
	settle()
	release() // the quota is for running, not for recording and delivering

	last := &rec.Attempts[len(rec.Attempts)-1]
	last.Ended = s.now().UTC()
	switch {
	case err != nil:
		last.Error = err.Error()
		var busy *pool.BusyError
		var preparing *pool.PreparingError
		if errors.As(err, &busy) || errors.As(err, &preparing) || s.running.ctx.Err() != nil {
			// Not the function's fault (no instance, or the server stopped
			// it while shutting down): try again soon, without counting it.
			rec.Attempts = rec.Attempts[:len(rec.Attempts)-1]
			rec.State = Queued
			if len(rec.Attempts) > 0 {
				rec.State = Failed // and waiting for its retry
			}
			s.record(ctx, rec, log)
			logQueueError(log, m.Retry(time.Second))
			return
		}
	case resp.Status >= 500:
		last.Status = resp.Status
		last.Error = fmt.Sprintf("function answered %d %s", resp.Status, http.StatusText(resp.Status))
	default:
		last.Status = resp.Status
		rec.State = Succeeded
		rec.Response = bounded(resp.Status, resp.Header, resp.Body)
		if err := s.record(ctx, rec, log); err != nil {
			// Acked without its record, the invocation would be lost to
			// GET: it runs again instead, as after a crash, later each
			// time the store fails.
			logQueueError(log, m.Retry(min(backoff(time.Second, int(min(m.Delivered, 6))), time.Minute)))
			return
		}
		s.ackLater(m, log)
		log.Info("async invocation succeeded", "attempts", len(rec.Attempts), "status", resp.Status)
		s.deliver(job, rec, v.Spec, log)
		return
	}
	if failures := max(len(rec.Attempts), job.Failed+1); failures <= v.Spec.RetryCount() {
		rec.State = Failed
		s.record(ctx, rec, log)
		delay := retryDelay(time.Duration(v.Spec.RetryDelay), failures)
		log.Info("async invocation failed; retrying", "attempt", failures, "retry_in", delay, "err", last.Error)
		s.retry(ctx, m, job, failures, delay, log)
		return
	}
	s.fail(ctx, m, job, rec, v.Spec, last.Error, log)
}

// superseded reports whether a later message of the same invocation is
// queued: the retry that a worker queued before it stopped without acking
// m. Running m as well would run the invocation in two lines of attempts.
// Only a message delivered again, or a retry, can be one: the first
// delivery of an invocation's first message comes before any retry of it.
func (s *Service) superseded(ctx context.Context, m *store.Message, job Job) bool {
	if m.Seq == 0 || m.Delivered <= 1 && job.Failed == 0 {
		return false
	}
	// A retry waiting for its time first: when its time comes, it is
	// queued before it stops waiting, so one of the two reads finds it.
	subject := workSubject(job.Tenant, job.ID)
	if later, err := s.queue.Later(ctx, subject); err == nil && later.Seq > m.Seq {
		return true
	}
	latest, err := s.queue.Pending(ctx, subject)
	return err == nil && latest.Seq > m.Seq
}

// retry queues job again, after its failures, to run no sooner than delay
// from now, and acknowledges m. If it cannot, m is delivered again after
// delay, counting on the record for its failures. A stop between the two leaves
// m to be delivered again, which the retry supersedes.
//
// A retry due in deferAfter or more waits in the queue's schedule: one
// that waited for its time as a delivered message would hold one of the
// queue's pending deliveries, which every tenant shares, for up to an hour.
func (s *Service) retry(ctx context.Context, m *store.Message, job Job, failures int, delay time.Duration, log *slog.Logger) {
	job.Failed, job.NotBefore = failures, s.now().Add(delay).UTC()
	ctx, subject, data := context.WithoutCancel(ctx), workSubject(job.Tenant, job.ID), encodeJob(job)
	var err error
	if delay >= deferAfter {
		err = s.queue.PublishAt(ctx, subject, data, job.NotBefore)
	} else {
		err = s.queue.Publish(ctx, subject, data)
	}
	if err != nil {
		log.Warn("could not queue the retry; the invocation's record keeps its failures", "err", err)
		logQueueError(log, m.Retry(delay))
		return
	}
	logQueueError(log, m.Ack())
}

// fail moves an invocation to the dead-letter stream and delivers its
// record to the function's on_failure destination.
func (s *Service) fail(ctx context.Context, m *store.Message, job Job, rec Record, spec registry.Spec, reason string, log *slog.Logger) {
	s.bury(ctx, m, job, rec, reason, log)
	if rec, err := s.Get(ctx, job.Tenant, job.ID); err == nil && rec.State == Dead {
		s.deliver(job, rec, spec, log)
	}
}

// record writes rec, logging a failure: the invocation goes on, and its
// record catches up at its next write.
func (s *Service) record(ctx context.Context, rec Record, log *slog.Logger) error {
	err := s.put(ctx, rec)
	if err != nil {
		log.Error("could not record the invocation's state", "state", rec.State, "err", err)
	}
	return err
}

// recordAfter writes rec after delay, unless settle is called first.
// settle returns once rec is written or will never be, so that the
// writes that follow it land after it.
func (s *Service) recordAfter(ctx context.Context, rec Record, delay time.Duration, log *slog.Logger) (settle func()) {
	rec.Attempts = slices.Clone(rec.Attempts) // the caller goes on with its own
	written := make(chan struct{})
	t := time.AfterFunc(delay, func() {
		defer close(written)
		s.record(ctx, rec, log)
	})
	return func() {
		if !t.Stop() {
			<-written
		}
	}
}

// ackDelay is how long the acknowledgement of a succeeded invocation
// waits.
//
// The queue deletes a message when it is acknowledged, and when that
// empties the stream's last block of messages, the store removes the
// block's file and creates a new one, under the lock that the next
// enqueue waits for. A queue that keeps up with its work empties after
// nearly every message: at 5,000 invocations a second it made and removed
// some 20,000 files in a run of 35,000, a tenth of the server's CPU. With each
// acknowledgement a few milliseconds late, the queue holds the last few
// milliseconds' messages and empties only in a lull.
//
// Waiting is safe because an invocation's record is written before its
// acknowledgement: a message whose acknowledgement a crash lost is
// delivered again, found succeeded, and acknowledged without running.
const ackDelay = 5 * time.Millisecond

// ackLater acknowledges m after ackDelay. Wait waits for it.
func (s *Service) ackLater(m *store.Message, log *slog.Logger) {
	s.running.Add(1)
	time.AfterFunc(ackDelay, func() {
		defer s.running.Done()
		logQueueError(log, m.Ack())
	})
}

// logQueueError logs a failed ack, retry or extend. The queue then delivers
// the message again, which the worker handles by its recorded state.
func logQueueError(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("work queue call failed; the invocation may be delivered again", "err", err)
	}
}

// maxRetryWait bounds the wait before one retry. Doubling alone took the
// last of 10 retries of 10 minutes to 85 hours, long after the record (24
// hours) that the caller polls: with it, every retry there may be is over
// in 8 hours or so.
const maxRetryWait = time.Hour

// deferAfter is the shortest retry delay for which the retry waits in the
// queue's schedule rather than as a delivered message. The schedule fires
// to the second, and a moment late: shorter waits, each holding a pending
// delivery briefly, stay exact.
const deferAfter = 10 * time.Second

// retryDelay is the wait before retry n of a function whose retry_delay is
// base.
func retryDelay(base time.Duration, n int) time.Duration {
	return min(backoff(base, n), maxRetryWait)
}

// backoff is the delay before retry n (1, 2, ...): base doubled for each
// retry before it, with up to 20% of jitter either way.
func backoff(base time.Duration, n int) time.Duration {
	d := base << (n - 1)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) * 2
	return d - d/5 + jitter
}

// bury moves an invocation to the dead-letter stream.
func (s *Service) bury(ctx context.Context, m *store.Message, job Job, rec Record, reason string, log *slog.Logger) {
	if _, ok := s.tenantOf(job); !ok {
		// Its tenant was deleted while it ran, and its dead letters purged:
		// this one must not reach a new tenant of the same name.
		logQueueError(log, m.Ack())
		return
	}
	job.Errors = nil
	for _, a := range rec.Attempts {
		job.Errors = append(job.Errors, a.Error)
	}
	if len(rec.Attempts) == 0 {
		job.Errors = append(job.Errors, reason)
	}
	err := s.dead.Publish(context.WithoutCancel(ctx), deadSubject(job.Tenant, job.Function, job.ID), encodeJob(job))
	if err != nil {
		log.Error("could not move a failed async invocation to the dead-letter stream; it will be tried again", "err", err)
		logQueueError(log, m.Retry(time.Minute))
		return
	}
	rec.State = Dead
	if err := s.record(ctx, rec, log); err != nil {
		// Acked without its record, GET would not find the invocation:
		// delivered again, it is buried again, and a replay runs the
		// latest letter of the two.
		logQueueError(log, m.Retry(time.Minute))
		return
	}
	logQueueError(log, m.Ack())
	log.Warn("async invocation failed every attempt; moved to the dead-letter stream", "attempts", len(rec.Attempts), "err", reason)
}

func bounded(status int, header http.Header, body []byte) *Response {
	r := &Response{Status: status, Header: header}
	if len(body) > maxResultBody {
		body, r.Truncated = body[:maxResultBody], true
	}
	r.Body = body
	return r
}

// share is the async share of one version of a function on this node: a
// semaphore of size slots, and the workers that hold or wait for one.
type share struct {
	slots chan struct{}
	users int
}

// take takes a slot of sh, waiting up to wait or until ctx is done, and
// reports whether it did.
func (sh *share) take(ctx context.Context, wait time.Duration) bool {
	select {
	case sh.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case sh.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// joinShare returns the share with key, made with size slots if no worker
// is in it. Each version has its own (a deploy that changes max_instances
// makes a new version), and a share is forgotten when its last worker
// leaves it.
func (s *Service) joinShare(key string, size int) *share {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shares[key]
	if sh == nil {
		sh = &share{slots: make(chan struct{}, size)}
		s.shares[key] = sh
	}
	sh.users++
	return sh
}

// leaveShare undoes joinShare.
func (s *Service) leaveShare(key string, sh *share) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh.users--; sh.users == 0 {
		delete(s.shares, key)
	}
}

// DeadLetter is an invocation in the dead-letter stream.
type DeadLetter struct {
	ID      string    `json:"id"`
	Version int       `json:"version"`
	Queued  time.Time `json:"queued"`
	Errors  []string  `json:"errors"`
	seq     uint64
	job     Job
}

// Dead lists up to limit dead letters of a tenant's function, oldest first.
func (s *Service) Dead(ctx context.Context, tenant, function string, limit int) ([]DeadLetter, error) {
	if !registry.ValidName(tenant) || !registry.ValidName(function) {
		return nil, nil
	}
	return s.letters(ctx, tenant, limit, legacyDeadSubject(tenant, function), deadSubject(tenant, function, "*"))
}

// letters reads the last limit dead letters of tenant on subjects matching
// filters.
func (s *Service) letters(ctx context.Context, tenant string, limit int, filters ...string) ([]DeadLetter, error) {
	msgs, err := s.dead.Last(ctx, limit, filters...)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		d, ok := deadLetter(m)
		if _, current := s.tenantOf(d.job); ok && current && d.job.Tenant == tenant && s.ofCurrentFunction(tenant, d.job.Function, d.job.Queued) {
			out = append(out, d)
		}
	}
	return out, nil
}

// ofCurrentFunction reports whether work queued at queued was for the
// function now called function, not for one deleted before it was
// created. (Work of a function that is gone altogether is, for the dead
// letters of its last run.)
func (s *Service) ofCurrentFunction(tenant, function string, queued time.Time) bool {
	fn, ok := s.functions.Lookup(tenant, function)
	return !ok || !queued.Before(fn.Created)
}

// tenantOf returns job's tenant, and false if it was deleted since job was
// queued (perhaps created again: a new tenant of the same name sees nothing
// of its predecessor's).
func (s *Service) tenantOf(job Job) (tenant.Tenant, bool) {
	t, ok := s.tenants.Tenant(job.Tenant)
	return t, ok && !job.Queued.Before(t.Created)
}

func deadLetter(m store.StreamMsg) (DeadLetter, bool) {
	job, err := decodeJob(m.Data)
	if err != nil {
		return DeadLetter{}, false
	}
	return DeadLetter{ID: job.ID, Version: job.Version, Queued: job.Queued, Errors: job.Errors, seq: m.Seq, job: job}, true
}

// deadSubject is the subject of a dead letter. legacyDeadSubject is the
// one dead letters had before each had its own, which the stream may keep
// for its 14 days.
func deadSubject(tenant, function, id string) string {
	return deadPrefix + tenant + "." + function + "." + id
}

func legacyDeadSubject(tenant, function string) string { return deadPrefix + tenant + "." + function }

// replayAtMost is how many dead letters one replay of a whole function
// queues again.
const replayAtMost = 10000

// Replay queues again the dead letters of a function, the last
// replayAtMost of them (only the one with the given id, if id is not
// empty), and returns how many.
func (s *Service) Replay(ctx context.Context, tenant, function, id string) (int, error) {
	if !registry.ValidName(tenant) || !registry.ValidName(function) {
		return 0, fmt.Errorf("dead letters of %q: %w", function, ErrNotFound)
	}
	var letters []DeadLetter
	var err error
	switch {
	case id == "":
		letters, err = s.Dead(ctx, tenant, function, replayAtMost)
	case validID(id):
		letters, err = s.letters(ctx, tenant, replayAtMost, deadSubject(tenant, function, id))
		if err == nil && len(letters) == 0 {
			// Perhaps one from before dead letters had subjects of their own.
			letters, err = s.letters(ctx, tenant, replayAtMost, legacyDeadSubject(tenant, function))
			letters = slices.DeleteFunc(letters, func(d DeadLetter) bool { return d.ID != id })
		}
	}
	if err == nil {
		letters, err = s.dropDuplicates(ctx, letters)
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range letters {
		queued, err := s.replay(ctx, tenant, d)
		if err != nil {
			return n, err
		}
		if queued {
			n++
		}
	}
	if id != "" && n == 0 {
		return 0, fmt.Errorf("dead letter %q: %w", id, ErrNotFound)
	}
	return n, nil
}

// dropDuplicates returns letters with only the latest of each invocation's,
// and deletes the others from the stream: an invocation is buried twice
// when a worker stops after burying it and before its ack, and a replay
// must run it once.
func (s *Service) dropDuplicates(ctx context.Context, letters []DeadLetter) ([]DeadLetter, error) {
	latest := make(map[string]uint64, len(letters))
	for _, d := range letters {
		latest[d.ID] = d.seq // letters are oldest first
	}
	kept := letters[:0]
	for _, d := range letters {
		if d.seq == latest[d.ID] {
			kept = append(kept, d)
		} else if err := s.dead.Delete(ctx, d.seq); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// replay queues dead letter d again and removes it from the dead-letter
// stream, whether or not the caller still waits: a letter left behind by
// a replay that went through would start another run. It reports false
// for a letter that another replay, running at the same time, queued.
func (s *Service) replay(ctx context.Context, tenant string, d DeadLetter) (queued bool, err error) {
	ctx = context.WithoutCancel(ctx)
	job := d.job
	job.Errors, job.Failed, job.NotBefore = nil, 0, time.Time{}
	// A replay is a new run of the same invocation: it keeps its id, and is
	// queued now.
	job.Queued, job.Run = s.now().UTC(), job.Run+1
	prior, err := s.results.Get(ctx, recordKey(job.ID))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	data := encodeJob(job)
	// The letter's sequence number names the replay: two replays of it at
	// once (a second one started while the first, whose caller left, goes
	// on) queue it once.
	duplicate, err := s.queue.PublishOnce(ctx, workSubject(tenant, job.ID), data, "replay-"+strconv.FormatUint(d.seq, 10))
	if err != nil {
		return false, err
	}
	if duplicate {
		// Queued by the other replay, or by an earlier try of this one
		// whose delete failed: the letter goes all the same.
		return false, s.dead.Delete(ctx, d.seq)
	}
	// The record says queued, unless the new run has written its own.
	if err := s.putOver(ctx, queuedRecord(job), prior.Revision); err != nil && !errors.Is(err, store.ErrConflict) {
		// The run writes its record when it starts.
		s.log.Warn("could not record a replayed invocation as queued", "invocation_id", job.ID, "err", err)
	}
	return true, s.dead.Delete(ctx, d.seq)
}
