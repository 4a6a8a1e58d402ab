package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/lease"
)

// Caddy's storages are Storages.
var _ Storage = (*certmagic.FileStorage)(nil)

// memStorage is a Storage in memory, like certmagic.FileStorage (List
// gives full keys of files and folders; listing a missing folder is an
// error that is fs.ErrNotExist). before, when set, runs ahead of every
// call, outside the lock: it can fail the call or hold it (ignoring the
// call's context).
type memStorage struct {
	mu     sync.Mutex
	data   map[string][]byte
	locks  map[string]bool
	stores []kvPair // every Store that landed, in order
	before func(op, key string) error
	busy   sync.WaitGroup // calls under way
}

type kvPair struct {
	key   string
	value []byte
}

func newMem() *memStorage { return &memStorage{data: map[string][]byte{}, locks: map[string]bool{}} }

func (m *memStorage) setBefore(f func(op, key string) error) {
	m.mu.Lock()
	m.before = f
	m.mu.Unlock()
}

func (m *memStorage) enter(op, key string) error {
	m.busy.Add(1)
	m.mu.Lock()
	before := m.before
	m.mu.Unlock()
	if before != nil {
		return before(op, key)
	}
	return nil
}

func (m *memStorage) Lock(ctx context.Context, name string) error {
	defer m.busy.Done()
	if err := m.enter("lock", name); err != nil {
		return err
	}
	for {
		m.mu.Lock()
		if !m.locks[name] {
			m.locks[name] = true
			m.mu.Unlock()
			return nil
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (m *memStorage) Unlock(_ context.Context, name string) error {
	defer m.busy.Done()
	if err := m.enter("unlock", name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.locks, name)
	return nil
}

func (m *memStorage) Store(_ context.Context, key string, value []byte) error {
	defer m.busy.Done()
	if err := m.enter("store", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[key] = slices.Clone(value)
	m.stores = append(m.stores, kvPair{key, slices.Clone(value)})
	return nil
}

func (m *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	defer m.busy.Done()
	if err := m.enter("load", key); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return slices.Clone(b), nil
}

func (m *memStorage) Delete(_ context.Context, key string) error {
	defer m.busy.Done()
	if err := m.enter("delete", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.data {
		if k == key || strings.HasPrefix(k, key+"/") {
			delete(m.data, k)
		}
	}
	return nil
}

func (m *memStorage) Exists(_ context.Context, key string) bool {
	defer m.busy.Done()
	if m.enter("exists", key) != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.data {
		if k == key || strings.HasPrefix(k, key+"/") {
			return true
		}
	}
	return false
}

func (m *memStorage) List(_ context.Context, dir string, recursive bool) ([]string, error) {
	defer m.busy.Done()
	if err := m.enter("list", dir); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var keys []string
	for k := range m.data {
		rest, ok := strings.CutPrefix(k, dir+"/")
		if !ok {
			continue
		}
		if !recursive {
			rest, _, _ = strings.Cut(rest, "/")
		}
		if !seen[rest] {
			seen[rest] = true
			keys = append(keys, dir+"/"+rest)
		}
	}
	if keys == nil {
		return nil, fs.ErrNotExist
	}
	return keys, nil
}

// has reports whether key holds a value.
func (m *memStorage) has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.data[key]
	return ok
}

// storeCount returns how many Stores landed.
func (m *memStorage) storeCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.stores)
}

// eachStorage runs f on a memStorage and on a certmagic.FileStorage.
func eachStorage(t *testing.T, f func(t *testing.T, st Storage)) {
	t.Run("memory", func(t *testing.T) { f(t, newMem()) })
	t.Run("file", func(t *testing.T) { f(t, &certmagic.FileStorage{Path: t.TempDir()}) })
}

// shortTimeout sets CallTimeout to d for the test.
func shortTimeout(t *testing.T, d time.Duration) {
	old := CallTimeout
	CallTimeout = d
	t.Cleanup(func() { CallTimeout = old })
}

func deployments(n int) []engine.Deployment {
	var ds []engine.Deployment
	for i := 1; i <= n; i++ {
		ds = append(ds, engine.Deployment{ID: int64(i), Kind: engine.KindDeploy, Image: fmt.Sprintf("x:v%d", i), Status: engine.StatusSuccess, StartedAt: time.Unix(int64(i), 0).UTC()})
	}
	return ds
}

// Shared records are written, read back, listed and archived; a missing one
// is empty, a damaged one is an error and stays where it is.
func TestSharedRecords(t *testing.T) {
	eachStorage(t, func(t *testing.T, st Storage) {
		ctx := context.Background()
		r := NewSharedRecords(st, nil)
		if rec, err := r.Load("blog"); err != nil || rec.Serving != nil {
			t.Fatalf("Load of a missing record = %+v, %v", rec, err)
		}
		if apps, err := r.Apps(); err != nil || len(apps) != 0 {
			t.Errorf("Apps of an empty storage = %v, %v", apps, err)
		}
		want := engine.AppRecord{
			Serving:   &engine.ReleaseRecord{ID: "abc", Spec: engine.SpecRecord{Image: "x:v1", EnvSource: map[string]string{"K": "{env.K}"}, Port: 5000}},
			Overrides: engine.Overrides{Image: &engine.ImageOverride{Image: "x:v2", ConfigImage: "x:v1", Op: engine.OpDeploy}},
			Hosted:    []engine.HostedRecord{{ID: "c1", Name: "blog-web-1", Process: "web", Addr: "10.0.0.1:5000"}},
		}
		if err := r.Save("blog", want); err != nil {
			t.Fatal(err)
		}
		got, err := NewSharedRecords(st, nil).Load("blog")
		if err != nil {
			t.Fatal(err)
		}
		if got.Serving.ID != "abc" || got.Serving.Spec.EnvSource["K"] != "{env.K}" || got.Overrides.Image.Image != "x:v2" || len(got.Hosted) != 1 || got.Hosted[0].Addr != "10.0.0.1:5000" {
			t.Errorf("loaded %+v", got)
		}
		if err := r.Save("../evil", want); err == nil {
			t.Error("Save of a bad app name succeeded")
		}

		// An app with a history and no record is not an app with a record.
		if err := st.Store(ctx, "podswitch/apps/other/history.json", []byte(`{"app":"other","deployments":[]}`)); err != nil {
			t.Fatal(err)
		}
		damaged := []byte(`{"app": "broken", "record": {`)
		if err := st.Store(ctx, "podswitch/apps/broken/record.json", damaged); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Load("broken"); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("Load of a damaged record: %v, want an error", err)
		}
		if b, err := st.Load(ctx, "podswitch/apps/broken/record.json"); err != nil || string(b) != string(damaged) {
			t.Errorf("damaged record after Load: %q, %v; want it left as it was", b, err)
		}
		if err := st.Store(ctx, "podswitch/apps/stolen/record.json", []byte(`{"app": "blog", "record": {}}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Load("stolen"); err == nil {
			t.Error("Load of another app's record succeeded")
		}
		if apps, err := r.Apps(); err != nil || !slices.Equal(apps, []string{"blog", "broken", "stolen"}) {
			t.Errorf("Apps = %v, %v; want [blog broken stolen]", apps, err)
		}

		if err := r.Archive("blog"); err != nil {
			t.Fatal(err)
		}
		if err := r.Archive("blog"); err != nil {
			t.Errorf("Archive of a missing record: %v", err)
		}
		if rec, err := r.Load("blog"); err != nil || rec.Serving != nil {
			t.Errorf("record after Archive: %+v, %v", rec, err)
		}
		aside, err := st.List(ctx, "podswitch/removed", false)
		if err != nil || len(aside) != 1 || !strings.HasPrefix(aside[0], "podswitch/removed/blog-") {
			t.Fatalf("records moved aside: %v, %v; want one", aside, err)
		}
		if b, err := st.Load(ctx, aside[0]); err != nil || !strings.Contains(string(b), `"x:v2"`) {
			t.Errorf("record moved aside: %s, %v", b, err)
		}
		if apps, err := r.Apps(); err != nil || !slices.Equal(apps, []string{"broken", "stolen"}) {
			t.Errorf("Apps after Archive = %v, %v", apps, err)
		}
	})
}

// The shared history keeps at most HistoryLimit deployments, gives the
// in-process state back until Forget, and reads the storage otherwise.
func TestSharedHistory(t *testing.T) {
	eachStorage(t, func(t *testing.T, st Storage) {
		ctx := context.Background()
		h := NewSharedHistory(st, nil, nil)
		ds := deployments(70)
		for i := range ds {
			h.Save("blog", ds[:i+1])
		}
		h.Save("other", ds[:1])
		h.Save("../evil", ds[:1])
		h.Close()

		h2 := NewSharedHistory(st, nil, nil)
		defer h2.Close()
		got := h2.Load("blog")
		if len(got) != HistoryLimit || got[0].ID != 21 || got[len(got)-1].ID != 70 || !got[0].StartedAt.Equal(time.Unix(21, 0)) {
			t.Fatalf("loaded %d deployments", len(got))
		}
		if got := h2.Load("none"); got != nil {
			t.Errorf("Load of an app without history = %v", got)
		}
		if got, err := h2.Read(ctx, "none"); got != nil || err != nil {
			t.Errorf("Read of an app without history = %v, %v", got, err)
		}
		if err := st.Store(ctx, "podswitch/apps/broken/history.json", []byte("{")); err != nil {
			t.Fatal(err)
		}
		if got := h2.Load("broken"); got != nil {
			t.Errorf("Load of a damaged history = %v", got)
		}
		if _, err := h2.Read(ctx, "broken"); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("Read of a damaged history: %v", err)
		}

		// Save returns at once and a later Load in the same process sees it;
		// Read sees the storage, once written.
		h2.Save("blog", ds[:2])
		if got := h2.Load("blog"); len(got) != 2 {
			t.Errorf("Load after Save = %d deployments, want 2", len(got))
		}
		h2.Flush()
		if got, err := h2.Read(ctx, "blog"); err != nil || len(got) != 2 {
			t.Errorf("Read after Flush = %d deployments, %v", len(got), err)
		}

		// Another proxy writes the history; Forget makes Load read it.
		other := NewSharedHistory(st, nil, nil)
		other.Save("blog", ds[:3])
		other.Close()
		if got := h2.Load("blog"); len(got) != 2 {
			t.Errorf("Load before Forget = %d deployments, want this process's 2", len(got))
		}
		h2.Forget("blog")
		if got := h2.Load("blog"); len(got) != 3 {
			t.Errorf("Load after Forget = %d deployments, want the storage's 3", len(got))
		}
	})
}

var errNotLeader = errors.New("not the leader")

// A write the fence refuses is not made: Save and Archive return the
// fence's error; the history drops it and says so at debug level.
func TestSharedFence(t *testing.T) {
	st := newMem()
	allow := true
	fence := func(app string, write func() error) error {
		if !allow {
			return errNotLeader
		}
		return write()
	}
	r := NewSharedRecords(st, fence)
	if err := r.Save("blog", engine.AppRecord{Serving: &engine.ReleaseRecord{ID: "abc"}}); err != nil {
		t.Fatal(err)
	}
	allow = false
	before := st.storeCount()
	if err := r.Save("blog", engine.AppRecord{Serving: &engine.ReleaseRecord{ID: "def"}}); !errors.Is(err, errNotLeader) {
		t.Errorf("Save refused by the fence: %v, want errNotLeader", err)
	}
	if err := r.Archive("blog"); !errors.Is(err, errNotLeader) {
		t.Errorf("Archive refused by the fence: %v, want errNotLeader", err)
	}
	if n := st.storeCount(); n != before {
		t.Errorf("%d writes after the fence refused", n-before)
	}
	if rec, err := r.Load("blog"); err != nil || rec.Serving.ID != "abc" {
		t.Errorf("record after refused writes: %+v, %v", rec, err)
	}

	core, logs := observer.New(zapcore.DebugLevel)
	h := NewSharedHistory(st, fence, zap.New(core))
	h.Save("blog", deployments(1))
	h.Close()
	if st.has("podswitch/apps/blog/history.json") {
		t.Error("history written though the fence refused")
	}
	if n := logs.FilterMessage("deployment history not written: the fence refused it").FilterLevelExact(zapcore.DebugLevel).Len(); n != 1 {
		t.Errorf("%d debug entries for the refused write, want 1: %v", n, logs.All())
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("errors logged: %v", logs.All())
	}
}

// The fence the engine uses, a lease's Check: a proxy that does not hold
// the app's lease writes nothing.
func TestSharedFenceLease(t *testing.T) {
	ctx := context.Background()
	st := newMem()
	a := lease.New(st, "podswitch/apps/blog/lease", "a", time.Minute, nil)
	b := lease.New(st, "podswitch/apps/blog/lease", "b", time.Minute, nil)
	epoch, err := a.Try(ctx)
	if err != nil || epoch == 0 {
		t.Fatalf("a takes the lease: %d, %v", epoch, err)
	}
	if got, err := b.Try(ctx); err != nil || got != 0 {
		t.Fatalf("b takes a held lease: %d, %v", got, err)
	}
	fenced := func(l *lease.Lease, epoch uint64) Fence {
		return func(_ string, write func() error) error { return l.Check(ctx, epoch, write) }
	}
	if err := NewSharedRecords(st, fenced(a, epoch)).Save("blog", engine.AppRecord{}); err != nil {
		t.Errorf("holder's Save: %v", err)
	}
	before := st.storeCount()
	if err := NewSharedRecords(st, fenced(b, epoch)).Save("blog", engine.AppRecord{}); !errors.Is(err, lease.ErrNotHolder) {
		t.Errorf("non-holder's Save: %v, want lease.ErrNotHolder", err)
	}
	if n := st.storeCount(); n != before {
		t.Errorf("%d writes by a non-holder", n-before)
	}
}

// A storage call that hangs, ignoring its context, fails after CallTimeout;
// a later write of the same key waits for it, so that the hung write never
// lands after a newer one.
func TestSharedTimeout(t *testing.T) {
	shortTimeout(t, 50*time.Millisecond)
	st := newMem()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(func() { free(); st.busy.Wait() })
	st.setBefore(func(op, key string) error {
		<-release
		return nil
	})
	r := NewSharedRecords(st, nil)
	quick := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a hung storage: %v, want context.DeadlineExceeded", what, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s on a hung storage took %v", what, d)
		}
	}
	quick("Load", func() error { _, err := r.Load("blog"); return err })
	quick("Apps", func() error { _, err := r.Apps(); return err })
	quick("Save", func() error { return r.Save("blog", engine.AppRecord{Serving: &engine.ReleaseRecord{ID: "old"}}) })
	h := NewSharedHistory(st, nil, nil)
	quick("Read", func() error { _, err := h.Read(context.Background(), "blog"); return err })
	start := time.Now()
	if got := h.Load("blog"); got != nil || time.Since(start) > time.Second {
		t.Errorf("history Load on a hung storage = %v after %v", got, time.Since(start))
	}
	h.Save("blog", deployments(1))
	start = time.Now()
	h.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("history Close on a hung storage took %v", d)
	}
	m := NewMailbox(st)
	quick("Post", func() error { _, err := m.Post(context.Background(), Op{App: "blog"}); return err })
	quick("Pending", func() error { _, err := m.Pending(context.Background(), "blog"); return err })
	hb := NewHeartbeats(st, nil)
	quick("Beat", func() error { return hb.Beat(context.Background(), Heartbeat{Proxy: "a"}) })
	quick("Peers", func() error { _, err := hb.Peers(context.Background(), time.Minute); return err })

	// The first Save (of "old") is still under way: a newer one waits for
	// it, and fails once its own time is up.
	st.setBefore(nil)
	err := r.Save("blog", engine.AppRecord{Serving: &engine.ReleaseRecord{ID: "new"}})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "earlier write") {
		t.Errorf("Save while an earlier write is under way: %v", err)
	}
	free()
	if err := r.Save("blog", engine.AppRecord{Serving: &engine.ReleaseRecord{ID: "new"}}); err != nil {
		t.Fatal(err)
	}
	st.busy.Wait()
	if rec, err := r.Load("blog"); err != nil || rec.Serving == nil || rec.Serving.ID != "new" {
		t.Errorf("record after the hung write returned: %+v, %v", rec, err)
	}
}

// The background writer never writes an older state of an app after a
// newer one, even while saves, flushes and slow or timed-out writes mix,
// and ends with the newest.
func TestSharedHistoryOrder(t *testing.T) {
	shortTimeout(t, 40*time.Millisecond)
	st := newMem()
	var mu sync.Mutex
	n := 0
	st.setBefore(func(op, key string) error {
		if op != "store" {
			return nil
		}
		mu.Lock()
		n++
		hang := n%25 == 0
		mu.Unlock()
		if hang {
			// Given up on, then lands while newer saves come.
			time.Sleep(50 * time.Millisecond)
		} else {
			time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		}
		return nil
	})
	h := NewSharedHistory(st, nil, nil)
	apps := []string{"a", "b", "c", "d"}
	const saves = 150
	ds := deployments(saves)
	var wg sync.WaitGroup
	for _, app := range apps {
		wg.Go(func() {
			for i := range saves {
				h.Save(app, ds[:i+1])
				if i%10 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			h.Flush()
			time.Sleep(2 * time.Millisecond)
		}
	})
	wg.Wait()
	h.Close()
	st.busy.Wait()

	last := map[string]int64{}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, w := range st.stores {
		var f historyFile
		if err := json.Unmarshal(w.value, &f); err != nil {
			t.Fatal(err)
		}
		top := f.Deployments[len(f.Deployments)-1].ID
		if top < last[f.App] {
			t.Errorf("%s: state %d written after %d", f.App, top, last[f.App])
		}
		last[f.App] = top
	}
	for _, app := range apps {
		if last[app] != saves {
			t.Errorf("%s: last state written %d, want %d", app, last[app], saves)
		}
	}
}
