package lease

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"sync"
	"testing"
	"time"
)

// clock is a clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeStore is a storage in memory whose lock can be slow (the clock moves
// while it is taken) or broken (it grants everyone at once), and whose
// Load can run a hook (to interleave two instances).
type fakeStore struct {
	mu     sync.Mutex
	data   map[string][]byte
	locks  map[string]*sync.Mutex
	clock  *clock
	slow   time.Duration
	broken bool
	// afterLoad, when set, runs once after the next Load.
	afterLoad func()
	writes    int
	// lockCalls counts Lock calls; inside counts the callers waiting for
	// or holding a lock, maxInside the most at once.
	lockCalls, inside, maxInside int
}

func (s *fakeStore) lockCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lockCalls
}

func (s *fakeStore) maxHeld() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInside
}

func newFakeStore(c *clock) *fakeStore {
	return &fakeStore{data: map[string][]byte{}, locks: map[string]*sync.Mutex{}, clock: c}
}

func (s *fakeStore) lock(name string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.locks[name]
	if m == nil {
		m = new(sync.Mutex)
		s.locks[name] = m
	}
	return m
}

func (s *fakeStore) Lock(_ context.Context, name string) error {
	s.mu.Lock()
	s.lockCalls++
	s.inside++
	s.maxInside = max(s.maxInside, s.inside)
	s.mu.Unlock()
	s.clock.advance(s.slow)
	if s.broken {
		return nil
	}
	s.lock(name).Lock()
	return nil
}

func (s *fakeStore) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	s.inside--
	s.mu.Unlock()
	if s.broken {
		return nil
	}
	s.lock(name).Unlock()
	return nil
}

func (s *fakeStore) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = append([]byte(nil), value...)
	s.writes++
	return nil
}

func (s *fakeStore) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	b, ok := s.data[key]
	hook := s.afterLoad
	s.afterLoad = nil
	s.mu.Unlock()
	if hook != nil {
		defer hook()
	}
	if !ok {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), b...), nil
}

func (s *fakeStore) record(t *testing.T) Record {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Record
	if b, ok := s.data["lease"]; ok {
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

const term = 15 * time.Second

func try(t *testing.T, l *Lease) uint64 {
	t.Helper()
	e, err := l.Try(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The first instance takes the lease at epoch 1; its term runs a duration
// from its last renewal and ends on its own when it stops renewing.
func TestAcquireRenewExpire(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	a := New(st, "lease", "a", term, c.now)
	if e := try(t, a); e != 1 || !a.Valid(1) {
		t.Fatalf("first try: epoch %d, valid %v", e, a.Valid(1))
	}
	c.advance(term * 9 / 10)
	if e := try(t, a); e != 1 {
		t.Fatalf("renewal: epoch %d", e)
	}
	c.advance(term * 9 / 10)
	if !a.Valid(1) {
		t.Error("the term did not run from the renewal")
	}
	c.advance(term / 5)
	if a.Valid(1) || a.Epoch() != 0 {
		t.Error("the term runs on without renewals")
	}
	if r := st.record(t); r.Holder != "a" || r.Epoch != 1 || r.Duration != term {
		t.Errorf("record %+v", r)
	}
}

// A candidate takes over only after a whole term of silence as its own
// clock measures it, with the next epoch; the two are never valid at once.
func TestTakeoverAfterSilence(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	a := New(st, "lease", "a", term, c.now)
	b := New(st, "lease", "b", term, c.now)
	try(t, a)
	for range 20 { // a renews every third of a term: b never takes
		c.advance(term / 3)
		try(t, a)
		if e := try(t, b); e != 0 {
			t.Fatalf("b took a lease a renews: epoch %d", e)
		}
	}
	// a stops (dies or freezes); b keeps trying.
	for step := 0; ; step++ {
		c.advance(term / 3)
		e := try(t, b)
		if a.Valid(1) && b.Valid(e) {
			t.Fatalf("a and b both valid at step %d", step)
		}
		if e != 0 {
			if e != 2 {
				t.Errorf("b took epoch %d, want 2", e)
			}
			break
		}
		if step > 10 {
			t.Fatal("b never took the lease a left")
		}
	}
	// a comes back: its term is over, its try sees b's lease, and a
	// write of shared state by a is refused.
	if a.Valid(1) {
		t.Error("a still valid after b took over")
	}
	if e := try(t, a); e != 0 {
		t.Errorf("a took the lease back: epoch %d", e)
	}
	if err := a.Check(context.Background(), 1, func() error { return nil }); !errors.Is(err, ErrNotHolder) {
		t.Errorf("a stale holder's write: %v, want ErrNotHolder", err)
	}
	ran := false
	if err := b.Check(context.Background(), 2, func() error { ran = true; return nil }); err != nil || !ran {
		t.Errorf("the holder's write: %v, ran %v", err, ran)
	}
	if r := st.record(t); r.Holder != "b" || r.Epoch != 2 {
		t.Errorf("record %+v", r)
	}
}

// A slow storage shortens the term: it counts from the moment the lock was
// asked for, so a lock that takes longer than the term gives no term.
func TestSlowLockShortensTerm(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	st.slow = term / 3
	a := New(st, "lease", "a", term, c.now)
	e := try(t, a)
	if e != 1 || !a.Valid(1) {
		t.Fatalf("epoch %d valid %v", e, a.Valid(1))
	}
	c.advance(term - term/3)
	if a.Valid(1) {
		t.Error("the term ran from the end of a slow lock, not from when it was asked")
	}
	st.slow = term * 6 / 5
	if e := try(t, a); e != 1 || a.Valid(1) {
		t.Errorf("a lock slower than the term: epoch %d, valid %v (want the record renewed, no term)", e, a.Valid(1))
	}
}

// A broken lock that lets two instances in at once: both may believe they
// took the lease, but only the one the record names can write through
// Check, and the other steps down at its next try.
func TestLockGrantsTwice(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	st.broken = true
	a := New(st, "lease", "a", term, c.now)
	b := New(st, "lease", "b", term, c.now)
	var eb uint64
	st.afterLoad = func() { eb = try(t, b) } // b runs between a's read and a's write
	ea := try(t, a)
	if ea != 1 || eb != 1 {
		t.Fatalf("epochs a %d b %d: the interleaving did not happen", ea, eb)
	}
	okA := a.Check(context.Background(), ea, func() error { return nil }) == nil
	okB := b.Check(context.Background(), eb, func() error { return nil }) == nil
	if okA == okB {
		t.Fatalf("writes through Check: a %v, b %v; want exactly one", okA, okB)
	}
	if r := st.record(t); r.Holder != "a" {
		t.Fatalf("record %+v, want a's (the last write)", r)
	}
	if e := try(t, b); e != 0 || b.Valid(1) {
		t.Errorf("b after its next try: epoch %d", e)
	}
	if e := try(t, a); e != 1 {
		t.Errorf("a after its next try: epoch %d", e)
	}
}

// Release hands the lease over at once; epochs never go back.
func TestReleaseAndEpochs(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	a := New(st, "lease", "a", term, c.now)
	b := New(st, "lease", "b", term, c.now)
	try(t, a)
	try(t, b)
	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Valid(1) {
		t.Error("a valid after its release")
	}
	if e := try(t, b); e != 2 {
		t.Fatalf("b after a's release: epoch %d, want 2 at once", e)
	}
	if err := b.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := try(t, a); e != 3 {
		t.Errorf("a after b's release: epoch %d, want 3", e)
	}
	// A new instance with a fresh view never goes below the record.
	n := New(st, "lease", "n", term, c.now)
	if e := try(t, n); e != 0 {
		t.Fatalf("a newcomer took a held lease: %d", e)
	}
	c.advance(term + time.Second)
	if e := try(t, n); e != 4 {
		t.Errorf("the newcomer after a term of silence: epoch %d, want 4", e)
	}
}

// A damaged record is an error, and changes nothing.
func TestDamagedRecord(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	_ = st.Store(context.Background(), "lease", []byte("{not json"))
	a := New(st, "lease", "a", term, c.now)
	if e, err := a.Try(context.Background()); err == nil || e != 0 {
		t.Errorf("try over a damaged record: epoch %d, err %v", e, err)
	}
	if st.writes != 1 {
		t.Errorf("%d writes, want none after the damaged record", st.writes-1)
	}
}

// Due reads without the lock: a candidate is due only once the record was
// free or silent for a whole term as seen from here; the holder always is.
func TestDue(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	a := New(st, "lease", "a", term, c.now)
	b := New(st, "lease", "b", term, c.now)
	due := func(l *Lease) bool {
		t.Helper()
		d, err := l.Due(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if !due(b) {
		t.Fatal("a free lease is not due")
	}
	try(t, a)
	locks := st.lockCount()
	if due(b) {
		t.Fatal("a lease renewed a moment ago is due for a candidate")
	}
	if !due(a) {
		t.Fatal("the holder's own lease is not due")
	}
	if got := st.lockCount(); got != locks {
		t.Errorf("Due took the lock %d times", got-locks)
	}
	c.advance(term - time.Second)
	if due(b) {
		t.Fatal("due before a whole term of silence")
	}
	c.advance(time.Second)
	if !due(b) {
		t.Fatal("not due after a whole term of silence")
	}
	if e := try(t, b); e != 2 {
		t.Fatalf("takeover at epoch %d, want 2", e)
	}
}

// Two calls of one instance at once queue on the instance, not on the
// storage's lock: the storage never sees the same instance lock twice.
func TestOneLockPerInstance(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	a := New(st, "lease", "a", term, c.now)
	e := try(t, a)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := a.Check(context.Background(), e, func() error { time.Sleep(time.Millisecond); return nil }); err != nil {
				t.Error(err)
			}
			if _, err := a.Try(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := st.maxHeld(); n > 1 {
		t.Errorf("%d calls of one instance waited for or held the storage's lock at once, want 1", n)
	}
}

// A new duration counts from the next renewal, for the holder's term and
// in the record the candidates read.
func TestSetDuration(t *testing.T) {
	c := newClock()
	st := newFakeStore(c)
	a := New(st, "lease", "a", term, c.now)
	e := try(t, a)
	a.SetDuration(3 * term)
	c.advance(term / 2)
	try(t, a)
	c.advance(2 * term)
	if !a.Valid(e) {
		t.Fatal("the term did not take the new duration")
	}
	if r := st.record(t); r.Duration != 3*term {
		t.Errorf("record duration %s, want %s", r.Duration, 3*term)
	}
	// A term is left: valid for half of one, not for a whole one.
	if !a.ValidFor(e, term/2) || a.ValidFor(e, term) {
		t.Errorf("ValidFor with a term left: %v for half a term, %v for a whole one", a.ValidFor(e, term/2), a.ValidFor(e, term))
	}
}
