// Package lease elects one holder of a named lease among processes that
// share a storage with locks (Caddy's storage: a shared directory, Redis,
// Consul...), the way Kubernetes' client-go leader election does over an
// API server that gives no fencing tokens.
//
// The lease is a record {holder, epoch, renewed, duration} kept under one
// key. The storage's lock guards only a short read-modify-write of that
// record, never the leadership itself: a lock left behind by a process
// that died would otherwise stop every other one.
//
// Expiry is judged by each reader's own monotonic clock: a candidate takes
// the lease once it has seen the same record, unchanged, for the lease's
// duration; the holder's wall clock, written in the record, is for people
// only. Clocks of different machines are never compared.
//
// The holder counts its term from the moment it asked for the lock (before
// it knew the answer), so that a slow storage shortens its term and never
// lengthens it. Valid reports whether the term still runs: a holder must
// stop every change it makes (a container started or stopped) once Valid
// is false, and a candidate that takes over waits a full duration of
// silence first, so that the two never act at once while the clocks run
// at about the same rate. Epochs only grow: each new holder takes the
// previous epoch plus one, and Check lets every write of shared state
// verify, under the lock, that its writer still holds the epoch it thinks.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"
)

// Store is what a lease needs of Caddy's storage; certmagic.Storage has
// it. Load of a missing key returns an error that is fs.ErrNotExist.
type Store interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
}

// Record is the lease as the storage keeps it.
type Record struct {
	// Holder is the instance that holds the lease; empty when it was
	// released.
	Holder string `json:"holder"`
	// Epoch grows by one at each change of holder.
	Epoch uint64 `json:"epoch"`
	// Renewed is the holder's wall clock at its last renewal, for people;
	// no decision reads it.
	Renewed time.Time `json:"renewed"`
	// Duration is the term the holder was given.
	Duration time.Duration `json:"duration"`
}

// ErrNotHolder is returned by Check when the lease is held by another
// instance, or at another epoch, than the caller's.
var ErrNotHolder = errors.New("this instance does not hold the lease")

// Lease is one instance's view of a named lease. Its methods are safe for
// concurrent use.
type Lease struct {
	store Store
	key   string
	id    string
	dur   time.Duration
	now   func() time.Time

	// locking serializes this instance's use of the storage's lock: the
	// storages' locks poll (a second, for Caddy's file and Redis
	// storages), so two calls of one process must queue here instead.
	locking sync.Mutex

	mu sync.Mutex
	// seen is the last record read and seenAt when it was first read
	// unchanged (this instance's monotonic clock).
	seen   Record
	seenAt time.Time
	known  bool
	// epoch is the epoch this instance holds, 0 when none; until is when
	// its term ends.
	epoch uint64
	until time.Time
}

// New returns the lease key of store for instance id, with terms of dur.
// now is the clock (time.Now when nil; its monotonic reading is what
// counts).
func New(store Store, key, id string, dur time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{store: store, key: key, id: id, dur: dur, now: now}
}

// lockName is the storage lock that guards the lease record.
func (l *Lease) lockName() string { return l.key + ".lock" }

// Try renews the lease when this instance holds it, takes it when it is
// free or was left to expire, and otherwise observes it. It returns the
// epoch held (0 when not held). Call it every fraction of the duration
// (a third is usual). An error leaves the term as it was: it runs out on
// its own.
func (l *Lease) Try(ctx context.Context) (uint64, error) {
	asked := l.now()
	unlock, err := l.lock(ctx)
	if err != nil {
		return l.Epoch(), err
	}
	defer unlock()
	rec, err := l.load(ctx)
	if err != nil {
		return l.Epoch(), err
	}
	now := l.now()

	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.known || rec != l.seen {
		l.seen, l.seenAt, l.known = rec, now, true
	}
	switch {
	case rec.Holder == l.id && rec.Epoch == l.epoch && l.epoch != 0:
		// Ours: renew.
	case rec.Holder == "" || now.Sub(l.seenAt) >= rec.Duration:
		// Free, or silent for a whole term as seen from here: take it.
		rec.Epoch++
	default:
		// Another holds it (or it is ours from an epoch we lost).
		l.epoch, l.until = 0, time.Time{}
		return 0, nil
	}
	dur := l.dur
	next := Record{Holder: l.id, Epoch: rec.Epoch, Renewed: time.Now(), Duration: dur}
	b, err := json.Marshal(next)
	if err != nil {
		return l.epoch, err
	}
	if err := l.store.Store(ctx, l.key, b); err != nil {
		return l.epoch, fmt.Errorf("writing lease %s: %w", l.key, err)
	}
	l.seen, l.seenAt = next, now
	l.epoch, l.until = next.Epoch, asked.Add(dur)
	return l.epoch, nil
}

// lock takes the storage's lock of the lease record, after the other
// calls of this instance, and returns what releases it.
func (l *Lease) lock(ctx context.Context) (func(), error) {
	l.locking.Lock()
	if err := l.store.Lock(ctx, l.lockName()); err != nil {
		l.locking.Unlock()
		return nil, fmt.Errorf("locking lease %s: %w", l.key, err)
	}
	return func() {
		_ = l.store.Unlock(context.WithoutCancel(ctx), l.lockName())
		l.locking.Unlock()
	}, nil
}

// Due reads the record without the lock and reports whether Try would
// change it now: this instance holds the lease, or it is free, or it was
// silent for a whole term as seen from here. A candidate calls Try only
// when it is due, so that the holder's writes seldom wait for a
// candidate's lock. What it reads counts as seen, as for Try.
func (l *Lease) Due(ctx context.Context) (bool, error) {
	rec, err := l.load(ctx)
	if err != nil {
		return false, err
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.known || rec != l.seen {
		l.seen, l.seenAt, l.known = rec, now, true
	}
	return rec.Holder == "" || rec.Holder == l.id || now.Sub(l.seenAt) >= rec.Duration, nil
}

// load reads the lease record; a missing one is a free lease at epoch 0.
func (l *Lease) load(ctx context.Context) (Record, error) {
	b, err := l.store.Load(ctx, l.key)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("reading lease %s: %w", l.key, err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("lease %s is damaged: %w", l.key, err)
	}
	return rec, nil
}

// Epoch returns the epoch this instance holds while its term runs, else 0.
func (l *Lease) Epoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch != 0 && l.now().Before(l.until) {
		return l.epoch
	}
	return 0
}

// Valid reports whether this instance holds the lease at epoch and its
// term still runs: the test before any change a holder makes.
func (l *Lease) Valid(epoch uint64) bool { return epoch != 0 && l.Epoch() == epoch }

// ValidFor reports whether this instance holds the lease at epoch with at
// least margin of its term left: a change that takes time (a container
// created) is started only then, so that it ends before another instance
// may take over.
func (l *Lease) ValidFor(epoch uint64, margin time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return epoch != 0 && l.epoch == epoch && l.now().Add(margin).Before(l.until)
}

// Until returns when the term of epoch ends, zero when this instance does
// not hold it.
func (l *Lease) Until(epoch uint64) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if epoch == 0 || l.epoch != epoch {
		return time.Time{}
	}
	return l.until
}

// SetDuration makes the next terms dur long (the config changed); the
// term that runs keeps its end.
func (l *Lease) SetDuration(dur time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dur = dur
}

// Duration returns the term of the next renewals.
func (l *Lease) Duration() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dur
}

// Check runs fn under the lease's lock if the record still names this
// instance at epoch and its term runs, and returns ErrNotHolder otherwise:
// a write of shared state made through Check is never a stale holder's.
func (l *Lease) Check(ctx context.Context, epoch uint64, fn func() error) error {
	if !l.Valid(epoch) {
		return ErrNotHolder
	}
	unlock, err := l.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := l.load(ctx)
	if err != nil {
		return err
	}
	if rec.Holder != l.id || rec.Epoch != epoch || !l.Valid(epoch) {
		return ErrNotHolder
	}
	return fn()
}

// Release gives the lease up, if this instance holds it, so that another
// takes it at once rather than after a term of silence. The epoch stays:
// the next holder takes the one after it.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	epoch := l.epoch
	l.epoch, l.until = 0, time.Time{}
	l.mu.Unlock()
	if epoch == 0 {
		return nil
	}
	unlock, err := l.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := l.load(ctx)
	if err != nil || rec.Holder != l.id || rec.Epoch != epoch {
		return err
	}
	b, err := json.Marshal(Record{Epoch: epoch, Renewed: time.Now()})
	if err != nil {
		return err
	}
	return l.store.Store(ctx, l.key, b)
}
