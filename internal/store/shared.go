package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
)

// Storage is the part of Caddy's storage (certmagic.Storage) podswitch
// uses when several proxies share their state. Load of a missing key
// returns an error that is fs.ErrNotExist; Delete of a missing key is not
// an error.
type Storage interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	Exists(ctx context.Context, key string) bool
	List(ctx context.Context, path string, recursive bool) ([]string, error)
}

// CallTimeout bounds every storage call of the shared stores: a call that
// has not returned by then fails with context.DeadlineExceeded, even when
// the storage ignores its context, so that a hung storage never hangs a
// caller.
var CallTimeout = 5 * time.Second

// Fence runs write, the write of app's shared state, if this proxy may
// still write it (it leads the app), and returns write's error; otherwise
// it returns why not, without calling write. It bounds its own storage
// calls. A nil Fence runs every write.
type Fence func(app string, write func() error) error

// The keys of the shared state.
const (
	appsDir    = "podswitch/apps"
	removedDir = "podswitch/removed"
	proxiesDir = "podswitch/proxies"
)

func appKey(app, name string) string { return appsDir + "/" + app + "/" + name }

// idRE is what an operation or proxy id may be: it becomes part of a key.
var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// outcome is what a storage call returned.
type outcome[T any] struct {
	v   T
	err error
}

// call runs fn with ctx bounded by CallTimeout, and returns what it
// returns, or the context's error as soon as the context ends even if fn
// has not returned. In that case fn goes on in the background, and
// abandon, when not nil, is given a channel closed once fn returns.
func call[T any](ctx context.Context, fn func(context.Context) (T, error), abandon func(done <-chan struct{})) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	out := make(chan outcome[T], 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		v, err := fn(ctx)
		out <- outcome[T]{v, err}
	}()
	select {
	case o := <-out:
		return o.v, o.err
	case <-ctx.Done():
		select {
		case o := <-out:
			return o.v, o.err
		default:
		}
		if abandon != nil {
			abandon(done)
		}
		var zero T
		return zero, context.Cause(ctx)
	}
}

// kv is a Storage whose calls are bounded by CallTimeout and whose writes
// of a key never overtake a write of the same key that was given up on
// and may still land: the next write waits for it (within its own
// timeout), so that an older value is never written after a newer one.
type kv struct {
	st Storage

	mu sync.Mutex
	// pending are the writes given up on that have not returned yet, by
	// key; each channel is closed when its write returns.
	pending map[string]<-chan struct{}
}

func newKV(st Storage) *kv { return &kv{st: st, pending: map[string]<-chan struct{}{}} }

// load returns the value of key; a missing key is an error that is
// fs.ErrNotExist.
func (s *kv) load(ctx context.Context, key string) ([]byte, error) {
	b, err := call(ctx, func(ctx context.Context) ([]byte, error) { return s.st.Load(ctx, key) }, nil)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", key, err)
	}
	return b, nil
}

// list returns the names (last element) of the keys directly under dir,
// sorted; a missing dir has none.
func (s *kv) list(ctx context.Context, dir string) ([]string, error) {
	keys, err := call(ctx, func(ctx context.Context) ([]string, error) { return s.st.List(ctx, dir, false) }, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		names = append(names, path.Base(k))
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// store writes value at key.
func (s *kv) store(ctx context.Context, key string, value []byte) error {
	return s.write(ctx, "storing", key, func(ctx context.Context) error { return s.st.Store(ctx, key, value) })
}

// del deletes key; a missing key is fine.
func (s *kv) del(ctx context.Context, key string) error {
	err := s.write(ctx, "deleting", key, func(ctx context.Context) error { return s.st.Delete(ctx, key) })
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// write runs fn, a write of key, once no earlier write of key given up on
// is pending, all within CallTimeout.
func (s *kv) write(ctx context.Context, what, key string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	for {
		s.mu.Lock()
		prev := s.pending[key]
		s.mu.Unlock()
		if prev == nil {
			break
		}
		select {
		case <-prev:
		case <-ctx.Done():
			return fmt.Errorf("%s %s: an earlier write has not returned: %w", what, key, context.Cause(ctx))
		}
	}
	_, err := call(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) }, func(done <-chan struct{}) {
		s.mu.Lock()
		s.pending[key] = done
		s.mu.Unlock()
		go func() {
			<-done
			s.mu.Lock()
			if s.pending[key] == done {
				delete(s.pending, key)
			}
			s.mu.Unlock()
		}()
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, key, err)
	}
	return nil
}

// noFence runs every write.
func noFence(_ string, write func() error) error { return write() }

// SharedRecords keeps each app's record in the shared storage, at
// podswitch/apps/<app>/record.json, in the form of a record file. Its
// writes go through its fence, so that only the app's leader makes them.
type SharedRecords struct {
	kv    *kv
	fence Fence
}

// NewSharedRecords returns the records kept in st, written through fence
// (nil: no fencing).
func NewSharedRecords(st Storage, fence Fence) *SharedRecords {
	if fence == nil {
		fence = noFence
	}
	return &SharedRecords{kv: newKV(st), fence: fence}
}

// Load returns the record of app: a zero record when there is none, an
// error when it cannot be read or is damaged. A damaged record stays
// where it is (another proxy may be writing it).
func (r *SharedRecords) Load(app string) (engine.AppRecord, error) {
	if !engine.ValidName(app) {
		return engine.AppRecord{}, fmt.Errorf("app name %q", app)
	}
	key := appKey(app, "record.json")
	b, err := r.kv.load(context.Background(), key)
	if errors.Is(err, fs.ErrNotExist) {
		return engine.AppRecord{}, nil
	}
	if err != nil {
		return engine.AppRecord{}, err
	}
	rec, err := decodeRecord(app, b)
	if err != nil {
		return engine.AppRecord{}, fmt.Errorf("%s is damaged: %w: %w", key, engine.ErrRecordDamaged, err)
	}
	return rec, nil
}

// Save replaces the record of app through the fence, and returns once the
// storage has it. When the fence refuses, Save returns its error and
// writes nothing.
func (r *SharedRecords) Save(app string, rec engine.AppRecord) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	b, err := json.MarshalIndent(recordFile{App: app, Record: rec}, "", "  ")
	if err != nil {
		return err
	}
	if err := r.fence(app, func() error { return r.kv.store(context.Background(), appKey(app, "record.json"), b) }); err != nil {
		return fmt.Errorf("saving the record of %s: %w", app, err)
	}
	return nil
}

// Archive moves the record of app aside, through the fence, to
// podswitch/removed/<app>-<UTC time>.json, where it stays for a person to
// read; a missing record is fine.
func (r *SharedRecords) Archive(app string) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	key := appKey(app, "record.json")
	b, err := r.kv.load(context.Background(), key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	to := removedDir + "/" + app + "-" + time.Now().UTC().Format("20060102T150405.000000000Z") + ".json"
	err = r.fence(app, func() error {
		if err := r.kv.store(context.Background(), to, b); err != nil {
			return err
		}
		return r.kv.del(context.Background(), key)
	})
	if err != nil {
		return fmt.Errorf("archiving the record of %s: %w", app, err)
	}
	return nil
}

// Apps returns the apps that have a record, sorted.
func (r *SharedRecords) Apps() ([]string, error) {
	ctx := context.Background()
	names, err := r.kv.list(ctx, appsDir)
	if err != nil {
		return nil, err
	}
	var apps []string
	for _, app := range names {
		if !engine.ValidName(app) {
			continue
		}
		// List rather than Exists, which cannot tell a missing key from
		// a storage that does not answer.
		files, err := r.kv.list(ctx, appsDir+"/"+app)
		if err != nil {
			return nil, err
		}
		if slices.Contains(files, "record.json") {
			apps = append(apps, app)
		}
	}
	return apps, nil
}

// SharedHistory keeps each app's deployments in the shared storage, at
// podswitch/apps/<app>/history.json, in the form of a history file. Like
// History, Save only records the deployments and wakes a background
// writer, which writes the newest state of every app that changed, in
// order, through the fence; a write the fence refuses is dropped (the
// app's new leader owns its history).
type SharedHistory struct {
	kv    *kv
	fence Fence
	log   *zap.Logger
	w     *historyWriter
}

// NewSharedHistory returns a history kept in st, written through fence
// (nil: no fencing). Close it to write what is pending.
func NewSharedHistory(st Storage, fence Fence, log *zap.Logger) *SharedHistory {
	if fence == nil {
		fence = noFence
	}
	if log == nil {
		log = zap.NewNop()
	}
	h := &SharedHistory{kv: newKV(st), fence: fence, log: log}
	h.w = newHistoryWriter(h.write, log)
	return h
}

// Load returns the deployments of app, oldest first: the newest state
// saved in this process since the last Forget, or else what the storage
// holds (nothing when it cannot be read).
func (h *SharedHistory) Load(app string) []engine.Deployment {
	if !engine.ValidName(app) {
		return nil
	}
	if ds, ok := h.w.newest(app); ok {
		return ds
	}
	ds, err := h.Read(context.Background(), app)
	if err != nil {
		h.log.Error("reading deployment history", zap.String("app", app), zap.Error(err))
		return nil
	}
	return ds
}

// Read returns the deployments of app the storage holds, oldest first
// (none when it holds none), whatever this process saved.
func (h *SharedHistory) Read(ctx context.Context, app string) ([]engine.Deployment, error) {
	if !engine.ValidName(app) {
		return nil, fmt.Errorf("app name %q", app)
	}
	key := appKey(app, "history.json")
	b, err := h.kv.load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f historyFile
	if err := json.Unmarshal(b, &f); err != nil || f.App != app {
		if err == nil {
			err = fmt.Errorf("it is the history of app %q", f.App)
		}
		return nil, fmt.Errorf("%s is damaged: %w", key, err)
	}
	return trimHistory(f.Deployments), nil
}

// Save records the deployments of app (oldest first) and has them written
// in the background. It is called with the app's lock held: it does not
// touch the storage.
func (h *SharedHistory) Save(app string, deployments []engine.Deployment) { h.w.save(app, deployments) }

// Forget drops what this process saved of app and has not written yet,
// when it stops leading the app, so that the next Load reads the storage.
// A write already under way still goes through the fence.
func (h *SharedHistory) Forget(app string) { h.w.forget(app) }

// Flush writes every app whose newest state is not written yet, and
// returns when it is written (or refused, or failed: a failed write is
// tried again with the next save).
func (h *SharedHistory) Flush() { h.w.flush() }

// Close writes what is pending and ends the background writer. Saves after
// Close are written at once.
func (h *SharedHistory) Close() { h.w.close() }

// write writes the history of app through the fence; a refusal is an
// error that is errRefused.
func (h *SharedHistory) write(app string, ds []engine.Deployment) error {
	b, err := encodeHistory(app, ds)
	if err != nil {
		return err
	}
	called := false
	err = h.fence(app, func() error {
		called = true
		return h.kv.store(context.Background(), appKey(app, "history.json"), b)
	})
	if err != nil && !called {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	return err
}

// Interface guards
var (
	_ engine.Store   = (*SharedRecords)(nil)
	_ engine.History = (*SharedHistory)(nil)
)
