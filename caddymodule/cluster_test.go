package caddymodule

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap/zaptest"

	"github.com/podswitch/podswitch/internal/engine"
)

// testProxy is a cluster member over st, with config hash config and a
// manager that runs no app.
func testProxy(t *testing.T, st certmagic.Storage, proxy, config string) *cluster {
	t.Helper()
	sw := new(swapStorage)
	sw.set(st)
	f, _, err := joinCluster(context.Background(), sw, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(sw, proxy, f, zaptest.NewLogger(t).Named(proxy))
	c.leaseDur.Store(int64(2 * time.Second))
	c.config.Store(config)
	m := engine.NewManager(engine.Deps{Logger: zaptest.NewLogger(t)})
	c.start(m)
	t.Cleanup(func() { m.Close(); c.close() })
	return c
}

// waitBeat waits until c has seen n live proxies.
func waitBeat(t *testing.T, c *cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.peers)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d proxies, want %d", c.proxy, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterDrift: a proxy whose podswitch config differs from a live
// leader's takes no lease, even a free one, and says which proxies differ;
// one with the leader's config does; once the leader is gone, the other
// takes leases again. Every proxy joins one cluster (one id).
func TestClusterDrift(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	a := testProxy(t, st, "a", "config-x")
	b := testProxy(t, st, "b", "config-y")
	c := testProxy(t, st, "c", "config-x")
	if a.id != b.id || b.id != c.id {
		t.Fatalf("cluster ids %s %s %s: want one", a.id, b.id, c.id)
	}
	if _, _, err := a.Campaign(context.Background(), "blog"); err != nil {
		t.Fatal(err)
	}
	// Each sees the other two once a's heartbeat says it leads blog.
	for _, p := range []*cluster{a, b, c} {
		waitBeat(t, p, 3)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !b.drifted() {
		if time.Now().After(deadline) {
			t.Fatal("b does not see that its config differs from the leader's")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := b.status("blog"); st.Leader != "a" || st.Leading || len(st.Drift) != 2 {
		t.Errorf("b's view of blog: leader %q leading %v drift %v; want a, false, [a c]", st.Leader, st.Leading, st.Drift)
	}
	if st := a.status("blog"); !st.Leading || len(st.Drift) != 1 || st.Drift[0] != "b" {
		t.Errorf("a's view of blog: leading %v drift %v; want true, [b]", st.Leading, st.Drift)
	}

	// shop's lease is free: b, whose config differs, does not take it
	// (for three terms); c takes it at once.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	_, _, err := b.Campaign(ctx, "shop")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b campaigning for a free lease with a config that differs: %v, want it to wait", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	_, epoch, err := c.Campaign(ctx, "shop")
	cancel()
	if err != nil || epoch != 1 {
		t.Fatalf("c campaigning for shop: epoch %d, %v", epoch, err)
	}

	// a and c leave (resigning, their heartbeats removed): b takes blog.
	for _, p := range []*cluster{a, c} {
		for _, app := range []string{"blog", "shop"} {
			if al := p.leaseOf(app); al.epoch != 0 {
				p.Resign(app, al.epoch)
			}
		}
		p.close()
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	term, epoch, err := b.Campaign(ctx, "blog")
	if err != nil {
		t.Fatalf("b campaigning once alone: %v", err)
	}
	if epoch != 2 {
		t.Errorf("b took blog at epoch %d, want 2 (epochs only grow)", epoch)
	}
	if term.Err() != nil {
		t.Errorf("b's term ended at once: %v", context.Cause(term))
	}
	if !b.Valid("blog", epoch) {
		t.Error("b's term is not valid")
	}
}

// TestClusterFence: a record is written only by the app's leader, under
// its lease; another proxy's write is refused and changes nothing.
func TestClusterFence(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	a := testProxy(t, st, "a", "x")
	b := testProxy(t, st, "b", "x")
	if _, _, err := a.Campaign(context.Background(), "blog"); err != nil {
		t.Fatal(err)
	}
	rec := engine.AppRecord{Pause: &engine.PauseRecord{Timeout: time.Minute}}
	if err := a.records.Save("blog", rec); err != nil {
		t.Fatalf("the leader's write: %v", err)
	}
	if err := b.records.Save("blog", engine.AppRecord{}); err == nil {
		t.Fatal("a follower's write was accepted")
	}
	got, err := b.records.Load("blog")
	if err != nil || got.Pause == nil {
		t.Fatalf("record after the follower's refused write: %+v, %v; want the leader's", got, err)
	}
}

// The first proxy makes the cluster with its own instance id and release
// key, so that the containers it ran alone stay its own; the next joins
// it; a storage of another cluster (or of none) is refused at a reload.
func TestClusterJoin(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	sw := new(swapStorage)
	sw.set(st)
	own := "0123456789abcdef0123456789abcdef"
	key := []byte("0123456789abcdef0123456789abcdef")
	f, created, err := joinCluster(context.Background(), sw, own, key)
	if err != nil || !created || f.ID != own {
		t.Fatalf("first join: %+v created %v, %v; want the proxy's own id", f, created, err)
	}
	g, created, err := joinCluster(context.Background(), sw, "ffffffffffffffffffffffffffffffff", nil)
	if err != nil || created || g != f {
		t.Fatalf("second join: %+v created %v, %v; want %+v", g, created, err, f)
	}
	if err := sameCluster(st, own); err != nil {
		t.Errorf("the same storage refused: %v", err)
	}
	if err := sameCluster(st, "ffffffffffffffffffffffffffffffff"); err == nil {
		t.Error("a storage of another cluster accepted")
	}
	if err := sameCluster(&certmagic.FileStorage{Path: t.TempDir()}, own); err == nil {
		t.Error("a storage of no cluster accepted")
	}
}

// lockLog is a storage that records the locks taken and released through
// it.
type lockLog struct {
	certmagic.Storage
	mu               sync.Mutex
	locked, unlocked []string
}

func (l *lockLog) Lock(ctx context.Context, name string) error {
	l.mu.Lock()
	l.locked = append(l.locked, name)
	l.mu.Unlock()
	return l.Storage.Lock(ctx, name)
}

func (l *lockLog) Unlock(ctx context.Context, name string) error {
	l.mu.Lock()
	l.unlocked = append(l.unlocked, name)
	l.mu.Unlock()
	return l.Storage.Unlock(ctx, name)
}

// A lock taken before a reload swapped the storage value is released
// through the value that took it (a Redis client knows only its own).
func TestSwapStorageUnlocksThroughTheTaker(t *testing.T) {
	dir := t.TempDir()
	old := &lockLog{Storage: &certmagic.FileStorage{Path: dir}}
	cur := &lockLog{Storage: &certmagic.FileStorage{Path: dir}}
	sw := new(swapStorage)
	sw.set(old)
	if err := sw.Lock(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	sw.set(cur)
	if err := sw.Unlock(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if len(old.unlocked) != 1 || len(cur.unlocked) != 0 {
		t.Errorf("unlocked through the old value %v, the new %v; want the old", old.unlocked, cur.unlocked)
	}
	if err := sw.Lock(context.Background(), "x"); err != nil || len(cur.locked) != 1 {
		t.Errorf("a new lock goes through the new value: %v %v", cur.locked, err)
	}
	_ = sw.Unlock(context.Background(), "x")
}
