package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap/zaptest"
)

// Tests of several proxies over one store and one runtime: a fake lease
// the test hands from one proxy to the other.

// fakeLeases is one app lease shared by the proxies of a test: the test
// says who holds it (give); a term ends when it is given away.
type fakeLeases struct {
	mu     sync.Mutex
	holder string
	epoch  uint64
	end    context.CancelCauseFunc
	pools  map[string]*Manager // by proxy, for Unused
	resign []string
	// early, when set, ends a holder's term without its knowing (a
	// frozen leader): Valid turns false, the term's context stays.
	frozen bool
	// elsewhere is what ConfiguredElsewhere answers.
	elsewhere bool
}

func (f *fakeLeases) give(proxy string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.end != nil && !f.frozen {
		f.end(errors.New("taken by " + proxy))
	}
	f.holder, f.end, f.frozen = proxy, nil, false
	f.epoch++
}

// freeze ends the holder's term as its clock would, without the holder
// hearing of it: only Valid knows.
func (f *fakeLeases) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
}

// view is one proxy's Leadership over the fake.
type view struct {
	f     *fakeLeases
	proxy string
}

func (v view) Campaign(ctx context.Context, app string) (context.Context, uint64, error) {
	for {
		v.f.mu.Lock()
		if v.f.holder == v.proxy && v.f.end == nil {
			term, end := context.WithCancelCause(context.Background())
			v.f.end = end
			e := v.f.epoch
			v.f.mu.Unlock()
			return term, e, nil
		}
		v.f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (v view) Valid(app string, epoch uint64) bool {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	return v.f.holder == v.proxy && v.f.epoch == epoch && !v.f.frozen
}

func (v view) Resign(app string, epoch uint64) {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	v.f.resign = append(v.f.resign, v.proxy)
}

func (v view) ConfiguredElsewhere(app string) bool {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	return v.f.elsewhere
}

func (v view) Unused(ctx context.Context, app, addr string) {
	for {
		used := false
		v.f.mu.Lock()
		for p, m := range v.f.pools {
			if p == v.proxy {
				continue
			}
			if pl := m.Pool(app).Load(); pl != nil && slices.Contains(pl.Addrs, addr) {
				used = true
			}
		}
		v.f.mu.Unlock()
		if !used {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// twoProxies returns managers a and b over one runtime and store, sharing
// a fake lease that a holds; run, when set, gives each proxy's runtime.
func twoProxies(t *testing.T, rt *fakeRuntime, st Store, run func(proxy string) Runtime) (a, b *Manager, f *fakeLeases) {
	f = &fakeLeases{pools: map[string]*Manager{}}
	deps := func(proxy string) Deps {
		var r Runtime = rt
		if run != nil {
			r = run(proxy)
		}
		return Deps{
			Runtime: r, Prober: &fakeProber{rt: rt}, Logger: zaptest.NewLogger(t).Named(proxy),
			Store: st, Instance: "cluster", Leadership: view{f: f, proxy: proxy},
			InFlight: func(string) int { return 0 },
		}
	}
	a, b = NewManager(deps("a")), NewManager(deps("b"))
	f.pools["a"], f.pools["b"] = a, b
	f.give("a")
	return a, b, f
}

// killWatch is a runtime that checks, at every SIGTERM, that no other
// proxy still routes to the container.
type killWatch struct {
	*fakeRuntime
	t     *testing.T
	other func() *Manager
}

func (k killWatch) Kill(ctx context.Context, id, signal string) error {
	if c, ok := k.fakeRuntime.Get(id); ok && signal == "SIGTERM" && c.IP != "" {
		if pl := k.other().Pool(appName).Load(); pl != nil {
			for _, a := range pl.Addrs {
				if strings.HasPrefix(a, c.IP+":") {
					k.t.Errorf("SIGTERM to %s while the other proxy still routes to %s", id, a)
				}
			}
		}
	}
	return k.fakeRuntime.Kill(ctx, id, signal)
}

// TestLeaderAndFollower: proxy a leads and deploys, proxy b follows its
// record (pool, switch, pause); old containers are stopped only once b no
// longer routes to them; the lease handed to b makes it adopt everything
// with no container started or stopped, and a's fenced runtime refuses.
func TestLeaderAndFollower(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		var a, b *Manager
		a, b, f := twoProxies(t, rt, st, func(proxy string) Runtime {
			other := func() *Manager { return a }
			if proxy == "a" {
				other = func() *Manager { return b }
			}
			return killWatch{fakeRuntime: rt, t: t, other: other}
		})
		spec := appSpec(t, "blog:v1", 2)
		a.Apply([]AppSpec{spec})
		b.Apply([]AppSpec{spec})

		waitFor(t, "a leads and serves 2", time.Minute, func() bool {
			p := a.Pool(appName).Load()
			return a.App(appName) != nil && p != nil && len(p.Addrs) == 2
		})
		if b.App(appName) != nil || !b.Follows(appName) {
			t.Fatalf("b leads the app too")
		}
		waitFor(t, "b routes as a", 5*time.Second, func() bool {
			pa, pb := a.Pool(appName).Load(), b.Pool(appName).Load()
			return pb != nil && pb.Release == pa.Release && slices.Equal(pb.Addrs, pa.Addrs)
		})
		v1 := slices.Clone(a.Pool(appName).Load().Addrs)

		// A deploy on a: b switches, and the old containers get SIGTERM
		// only once b left them (killWatch).
		if _, err := a.App(appName).Deploy("blog:v2", ""); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b follows the switch", time.Minute, func() bool {
			pa, pb := a.Pool(appName).Load(), b.Pool(appName).Load()
			return pa != nil && !slices.Equal(pa.Addrs, v1) && pb != nil && slices.Equal(pb.Addrs, pa.Addrs)
		})
		waitFor(t, "v1 stopped", time.Minute, func() bool {
			list, _ := rt.List(context.Background(), appName)
			n := 0
			for _, c := range list {
				if c.Running {
					n++
				}
			}
			return n == 2
		})

		// Pause on the leader holds requests on the follower.
		if err := a.App(appName).Pause(time.Minute); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b paused", 5*time.Second, func() bool { g := b.Pool(appName).Gate(); return g != nil && !g.Maintenance })
		if err := a.App(appName).Resume(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b resumed", 5*time.Second, func() bool { return b.Pool(appName).Gate() == nil })

		// The lease goes to b: a stops leading without stopping anything,
		// b adopts without starting anything.
		runs, stops := len(rt.Runs()), len(rt.Kills())
		v2 := slices.Clone(a.Pool(appName).Load().Addrs)
		f.give("b")
		waitFor(t, "b leads", time.Minute, func() bool { return b.App(appName) != nil && a.App(appName) == nil })
		waitFor(t, "b adopted", time.Minute, func() bool {
			s := b.App(appName)
			return s != nil && s.Status().Release != nil
		})
		settle(10 * time.Second)
		if got := len(rt.Runs()); got != runs {
			t.Errorf("%d containers started after the lease moved", got-runs)
		}
		if got := len(rt.Kills()); got != stops {
			t.Errorf("%d signals sent after the lease moved: %v", got-stops, rt.Kills()[stops:])
		}
		if pb := b.Pool(appName).Load(); pb == nil || !slices.Equal(pb.Addrs, v2) {
			t.Errorf("b's pool after taking over: %v, want %v", pb, v2)
		}
		if pa := a.Pool(appName).Load(); pa == nil || !slices.Equal(pa.Addrs, v2) {
			t.Errorf("a's pool as a follower: %v, want %v", pa, v2)
		}

		// A leader whose term ran out unheard (frozen) changes nothing:
		// its runtime refuses.
		f.freeze()
		if _, err := b.App(appName).Restart("", ""); err == nil {
			settle(5 * time.Second)
		}
		if got := len(rt.Runs()); got != runs {
			t.Errorf("%d containers started by a leader whose term ran out", got-runs)
		}
		f.give("a")
		waitFor(t, "a leads again", time.Minute, func() bool { return a.App(appName) != nil })
		a.Close()
		b.Close()
	})
}

// hangStore is a Store whose Load hangs while hang is set (a storage that
// stopped answering).
type hangStore struct {
	*memStore
	mu   sync.Mutex
	hang chan struct{}
}

func (h *hangStore) Load(app string) (AppRecord, error) {
	h.mu.Lock()
	ch := h.hang
	h.mu.Unlock()
	if ch != nil {
		<-ch
		return AppRecord{}, errors.New("storage: context deadline exceeded")
	}
	return h.memStore.Load(app)
}

func (h *hangStore) stop() {
	h.mu.Lock()
	h.hang = make(chan struct{})
	h.mu.Unlock()
}

func (h *hangStore) resume() {
	h.mu.Lock()
	close(h.hang)
	h.hang = nil
	h.mu.Unlock()
}

// TestFollowerWithoutStorage: while the record cannot be read (a read
// hangs), a follower keeps routing to the containers it knew and keeps
// checking them: one that dies leaves its pool, though the record still
// names it; the pool and the pause follow the record again once it reads.
func TestFollowerWithoutStorage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := &hangStore{memStore: newMemStore()}
		a, b, _ := twoProxies(t, rt, st, nil)
		spec := appSpec(t, "blog:v1", 3)
		a.Apply([]AppSpec{spec})
		b.Apply([]AppSpec{spec})
		waitFor(t, "b routes to 3", time.Minute, func() bool {
			p := b.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 3
		})
		st.stop()
		settle(2 * time.Second)
		// One of the three dies: a's checks and b's own take it out; the
		// record b cannot read still names it.
		list, _ := rt.List(context.Background(), appName)
		rt.ExitQuietly(list[0].ID, 137)
		waitFor(t, "b drops the dead container without its record", 10*time.Second, func() bool {
			p := b.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 2
		})
		if err := a.App(appName).Pause(time.Minute); err != nil {
			t.Fatal(err)
		}
		settle(3 * time.Second)
		if b.Pool(appName).Gate() != nil {
			t.Fatal("b changed its gate without a record")
		}
		st.resume()
		waitFor(t, "b follows the record again", 10*time.Second, func() bool {
			return b.Pool(appName).Gate() != nil
		})
		waitFor(t, "b routes to the replacement", time.Minute, func() bool {
			pa, pb := a.Pool(appName).Load(), b.Pool(appName).Load()
			return pb != nil && len(pb.Addrs) == 3 && slices.Equal(pa.Addrs, pb.Addrs)
		})
		a.Close()
		b.Close()
	})
}

// An app that leaves the leader's config while another proxy still has it
// is given up to that proxy, not stopped; once no other proxy has it, its
// removal stops it.
func TestRemovedHereConfiguredElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		a, b, f := twoProxies(t, rt, st, nil)
		spec := appSpec(t, "blog:v1", 2)
		a.Apply([]AppSpec{spec})
		b.Apply([]AppSpec{spec})
		waitFor(t, "a serves", time.Minute, func() bool {
			p := a.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 2
		})
		f.mu.Lock()
		f.elsewhere = true
		f.mu.Unlock()
		a.Apply(nil)
		waitFor(t, "a resigned", 10*time.Second, func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return slices.Contains(f.resign, "a")
		})
		if n := len(rt.Kills()); n != 0 {
			t.Fatalf("%d signals sent when the app left a config another proxy has: %v", n, rt.Kills())
		}
		// b takes it and adopts; then it leaves b's config too, with no
		// other proxy having it: b stops it.
		f.give("b")
		waitFor(t, "b leads", time.Minute, func() bool { return b.App(appName) != nil })
		waitFor(t, "b adopted", time.Minute, func() bool { return b.App(appName).Status().Release != nil })
		f.mu.Lock()
		f.elsewhere = false
		f.mu.Unlock()
		b.Apply(nil)
		waitFor(t, "b stopped the app", 2*time.Minute, func() bool {
			list, _ := rt.List(context.Background(), appName)
			for _, c := range list {
				if c.Running {
					return false
				}
			}
			return true
		})
		a.Close()
		b.Close()
	})
}

// idle_timeout across proxies: traffic through the follower alone keeps
// the app awake (its heartbeat tells the leader); once it stops, the app
// sleeps and the follower holds requests behind a waking gate; one of them
// wakes the app through the leader, and goes on once it is awake.
func TestIdleAcrossProxies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		a, b, _ := twoProxies(t, rt, st, nil)
		spec := appSpec(t, "blog:v1", 2)
		spec.IdleTimeout = 30 * time.Second
		a.Apply([]AppSpec{spec})
		b.Apply([]AppSpec{spec})
		waitFor(t, "b routes to 2", time.Minute, func() bool {
			p := b.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 2
		})
		// The heartbeats, every second: what b served, a hears of.
		stop := make(chan struct{})
		beats := make(chan struct{})
		go func() {
			defer close(beats)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				if b.TakeTraffic(appName) {
					a.TrafficElsewhere(appName)
				}
			}
		}()
		for range 12 {
			if v := <-request(b.Pool(appName)); v != Through {
				t.Fatalf("a request through b: verdict %d", v)
			}
			settle(10 * time.Second)
		}
		if a.App(appName).Status().Idle != nil {
			t.Fatal("the app fell asleep while b served it")
		}
		waitFor(t, "asleep after 30s without traffic", 2*time.Minute, func() bool { return a.App(appName).Status().Idle != nil })
		waitFor(t, "b's waking gate", 5*time.Second, func() bool {
			g := b.Pool(appName).Gate()
			return g != nil && g.Waking
		})
		v := request(b.Pool(appName))
		waitFor(t, "the request through b wakes the app", time.Minute, func() bool {
			st := a.App(appName).Status()
			return st.Idle == nil && st.LastWake != nil
		})
		select {
		case got := <-v:
			if got != Through {
				t.Fatalf("the held request: verdict %d, want through", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request b held was not let through after the wake")
		}
		if p := b.Pool(appName).Load(); p == nil || len(p.Addrs) == 0 {
			t.Fatalf("b's pool after the wake: %v", p)
		}
		close(stop)
		<-beats
		a.Close()
		b.Close()
	})
}

// A canary in service gets its share through the follower too: the
// follower's pool has the canary's containers and rules once the leader's
// record lists them; an abort on the leader takes it away on both.
func TestCanaryThroughFollower(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		a, b, _ := twoProxies(t, rt, st, nil)
		spec := appSpec(t, "blog:v1", 2)
		a.Apply([]AppSpec{spec})
		b.Apply([]AppSpec{spec})
		waitFor(t, "b routes to 2", time.Minute, func() bool {
			p := b.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 2
		})
		rules := CanaryRules{Percent: 25, Header: "X-Beta"}
		if _, err := a.App(appName).Canary("blog:v2", "", rules); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the canary in service on a", time.Minute, func() bool {
			p := a.Pool(appName).Load()
			return p != nil && p.Canary != nil && len(p.Canary.Addrs) > 0
		})
		waitFor(t, "b routes the canary as a", 5*time.Second, func() bool {
			pa, pb := a.Pool(appName).Load(), b.Pool(appName).Load()
			return pb != nil && pb.Canary != nil && pb.Canary.Release == pa.Canary.Release &&
				pb.Canary.CanaryRules == rules && slices.Equal(pb.Canary.Addrs, pa.Canary.Addrs) && slices.Equal(pb.Addrs, pa.Addrs)
		})
		// b's own share: a quarter of its new clients.
		got := 0
		for range 100 {
			if b.Pool(appName).Load().Canary.NewClient() {
				got++
			}
		}
		if got != 25 {
			t.Errorf("b sent %d of 100 new clients to the canary, want 25", got)
		}
		if err := a.App(appName).Abort(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b drops the canary", 5*time.Second, func() bool {
			p := b.Pool(appName).Load()
			return p != nil && p.Canary == nil
		})
		a.Close()
		b.Close()
	})
}
