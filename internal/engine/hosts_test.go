package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap/zaptest"
)

// hostsHarness is a Manager over a HostSet of fake hosts a and b, inside a
// synctest bubble.
type hostsHarness struct {
	*harness
	hs    *HostSet
	hosts map[string]*fakeRuntime

	smu    sync.Mutex
	states []string // "host:state" in order
}

// multiProber accepts a connection where one of the fake hosts has a
// container listening.
type multiProber struct{ rts []*fakeRuntime }

func (p multiProber) Probe(ctx context.Context, addr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ip, _, _ := net.SplitHostPort(addr)
	for _, rt := range p.rts {
		rt.mu.Lock()
		cut := rt.cut && strings.HasPrefix(ip, rt.net+".")
		rt.mu.Unlock()
		if cut {
			// The host's link is down: the dial times out.
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
		if rt.Listening(addr) {
			return nil
		}
	}
	return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

func newHostsHarness(t *testing.T, names ...string) *hostsHarness {
	t.Helper()
	rts := map[string]*fakeRuntime{}
	for i, n := range names {
		rt := newFakeRuntime()
		rt.net = fmt.Sprintf("10.0.%d", i+1)
		rts[n] = rt
	}
	return hostsHarnessOn(t, names, rts, nil)
}

// hostsHarnessOn is a harness over the fake hosts given (as a restart of
// podswitch finds them), with store when set.
func hostsHarnessOn(t *testing.T, names []string, fakes map[string]*fakeRuntime, store Store) *hostsHarness {
	t.Helper()
	h := &hostsHarness{harness: &harness{t: t, inflight: map[string]int{}}, hosts: fakes}
	h.hs = NewHostSet(zaptest.NewLogger(t).Named("hosts"))
	var cfgs []HostConfig
	var rts []*fakeRuntime
	for i, n := range names {
		rt := fakes[n]
		rts = append(rts, rt)
		cfgs = append(cfgs, HostConfig{Name: n, Runtime: rt, Address: fmt.Sprintf("192.0.2.%d", i+1), Key: n})
	}
	h.hs.Update(cfgs, 10*time.Second)
	h.hs.OnState(func(st HostStatus, _ HostState) {
		h.smu.Lock()
		h.states = append(h.states, st.Name+":"+string(st.State))
		h.smu.Unlock()
	})
	h.m = NewManager(Deps{
		Runtime:  h.hs,
		Hosts:    h.hs,
		Prober:   multiProber{rts},
		InFlight: h.inFlight,
		Store:    store,
		Logger:   zaptest.NewLogger(t),
		Notify: func(ev Event) {
			h.mu.Lock()
			h.events = append(h.events, ev)
			h.mu.Unlock()
		},
	})
	t.Cleanup(h.close)
	return h
}

// close ends the manager and the host set, as an exit of podswitch: the
// containers keep running.
func (h *hostsHarness) close() {
	h.m.Close()
	h.hs.Close()
}

// spread returns, per host, how many live containers of process the app
// has of release (any when empty).
func (h *hostsHarness) spread(s *Supervisor, release, process string) map[string]int {
	out := map[string]int{}
	for _, c := range s.Status().Containers {
		if c.Process == process && (release == "" || c.Release == release) && (c.State == StateReady || c.State == StateBooted || c.State == StateStarting || c.State == StateUnhealthy) {
			out[c.Host]++
		}
	}
	return out
}

func (h *hostsHarness) sawState(s string) bool {
	h.smu.Lock()
	defer h.smu.Unlock()
	return slices.Contains(h.states, s)
}

func TestHostsSpreadEachProcessType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "b", "a")
		spec := appSpec(t, "localhost/blog:v1", 4, worker(3))
		s, _ := h.deployFirst(spec)
		if got := h.spread(s, "", WebProcess); !maps.Equal(got, map[string]int{"a": 2, "b": 2}) {
			t.Errorf("web spread = %v, want a:2 b:2", got)
		}
		// 3 workers: the tie goes to a, by name.
		if got := h.spread(s, "", "worker"); !maps.Equal(got, map[string]int{"a": 2, "b": 1}) {
			t.Errorf("worker spread = %v, want a:2 b:1", got)
		}
		for _, c := range s.Status().Containers {
			if HostOf(c.ID) != c.Host || c.Host == "" {
				t.Errorf("container %s: host %q", c.ID, c.Host)
			}
		}
		// Each host ran its own containers.
		for name, rt := range h.hosts {
			for _, r := range rt.Runs() {
				if r.Host != name {
					t.Errorf("host %s ran a container placed on %q", name, r.Host)
				}
			}
		}
		// A new release is spread too, and the pool is the four of it.
		v2 := appSpec(t, "localhost/blog:v2", 4, worker(3))
		h.m.Apply([]AppSpec{v2})
		synctest.Wait()
		d := h.waitDone(s, h.newest(s).ID)
		if d.Status != StatusSuccess {
			t.Fatalf("deploy v2: %s %s", d.Status, d.Error)
		}
		settle(time.Minute)
		if got := h.spread(s, v2.ReleaseID(), WebProcess); !maps.Equal(got, map[string]int{"a": 2, "b": 2}) {
			t.Errorf("v2 web spread = %v, want a:2 b:2", got)
		}
		if n := len(h.m.Pool(appName).Load().Addrs); n != 4 {
			t.Errorf("pool has %d upstreams, want 4", n)
		}
		if got := h.spread(s, spec.ReleaseID(), WebProcess); len(got) != 0 {
			t.Errorf("v1 web still runs: %v", got)
		}
	})
}

func TestHostsOnlyTheAppsHosts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b", "c")
		spec := appSpec(t, "localhost/blog:v1", 3)
		spec.Hosts = []string{"b", "c"}
		s, _ := h.deployFirst(spec)
		if got := h.spread(s, "", WebProcess); !maps.Equal(got, map[string]int{"b": 2, "c": 1}) {
			t.Errorf("web spread = %v, want b:2 c:1", got)
		}
		if n := len(h.hosts["a"].Runs()); n != 0 {
			t.Errorf("host a ran %d containers, want 0", n)
		}
	})
}

// A host whose containers stop answering: they leave the pool at once, the
// host is lost after host_down_after and they are replaced on the other
// host; when it comes back, they are stopped (SIGTERM first) only once
// their replacements serve, and the count converges.
func TestHostsLostThenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		spec := appSpec(t, "localhost/blog:v1", 4, worker(2))
		s, _ := h.deployFirst(spec)
		var onB []string
		for _, c := range s.Status().Containers {
			if c.Host == "b" {
				onB = append(onB, c.ID)
			}
		}
		if len(onB) != 3 {
			t.Fatalf("containers on b = %v, want 2 web and 1 worker", onB)
		}

		cut := time.Now()
		h.hosts["b"].SetCut(true)
		h.hosts["b"].SetDown(true)
		waitFor(t, "b's containers out of the pool", 3*time.Second, func() bool {
			p := h.m.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 2
		})
		if took := time.Since(cut); took > 2*time.Second {
			t.Errorf("out of the pool after %s (virtual), want within 2s", took)
		}
		for _, u := range h.m.Pool(appName).Load().Addrs {
			if !strings.HasPrefix(u, "10.0.1.") {
				t.Errorf("pool dials %s, not a container of host a", u)
			}
		}
		waitFor(t, "host b lost", 20*time.Second, func() bool { return h.hs.State("b") == HostLost })
		if !h.sawState("b:unreachable") {
			t.Errorf("host b was never unreachable before lost: %v", h.states)
		}
		waitFor(t, "replacements on a", 30*time.Second, func() bool {
			return maps.Equal(h.spread(s, "", WebProcess), map[string]int{"a": 4, "b": 0}) ||
				maps.Equal(h.spread(s, "", WebProcess), map[string]int{"a": 4})
		})
		waitFor(t, "worker replaced on a", 30*time.Second, func() bool { return h.spread(s, "", "worker")["a"] == 2 })
		waitFor(t, "pool of four on a", 10*time.Second, func() bool {
			p := h.m.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 4
		})
		if n := len(h.hosts["b"].Kills()); n != 0 {
			t.Fatalf("b got %d signals while unreachable", n)
		}

		// b comes back: its old containers are stopped, SIGTERM first.
		h.hosts["b"].SetDown(false)
		h.hosts["b"].SetCut(false)
		waitFor(t, "b's containers removed", 2*time.Minute, func() bool {
			list, _ := h.hosts["b"].List(context.Background(), appName)
			return len(list) == 0
		})
		for _, id := range onB {
			_, local := splitID(id)
			sigs := h.hosts["b"].Signals(local)
			if len(sigs) == 0 || sigs[0].Signal != "SIGTERM" {
				t.Errorf("container %s of b got %v, want SIGTERM first", id, sigs)
			}
		}
		waitFor(t, "host b up", 10*time.Second, func() bool { return h.hs.State("b") == HostUp })
		// Spread again, one container at a time, new-first.
		waitFor(t, "spread again", 2*time.Minute, func() bool {
			return maps.Equal(h.spread(s, "", WebProcess), map[string]int{"a": 2, "b": 2}) &&
				maps.Equal(h.spread(s, "", "worker"), map[string]int{"a": 1, "b": 1})
		})
		settle(time.Minute)
		if got := h.spread(s, "", WebProcess); !maps.Equal(got, map[string]int{"a": 2, "b": 2}) {
			t.Errorf("web spread = %v, want a:2 b:2 (converged)", got)
		}
		if p := h.m.Pool(appName).Load(); p == nil || len(p.Addrs) != 4 {
			t.Errorf("pool = %+v, want four", p)
		}
	})
}

// A host whose API is down while its containers answer keeps serving;
// nothing is replaced and nothing new goes there.
func TestHostsAPIDownContainersServe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		spec := appSpec(t, "localhost/blog:v1", 4)
		s, _ := h.deployFirst(spec)
		runsA := len(h.hosts["a"].Runs())
		h.hosts["b"].SetDown(true)
		waitFor(t, "host b unmanaged", 10*time.Second, func() bool { return h.hs.State("b") == HostUnmanaged })
		settle(time.Minute) // several resyncs and host_down_after
		if p := h.m.Pool(appName).Load(); p == nil || len(p.Addrs) != 4 {
			t.Fatalf("pool changed while b's API was down: %+v", p)
		}
		if got := h.spread(s, "", WebProcess); !maps.Equal(got, map[string]int{"a": 2, "b": 2}) {
			t.Errorf("web spread = %v, want a:2 b:2 (nothing replaced)", got)
		}
		if n := len(h.hosts["a"].Runs()); n != runsA {
			t.Errorf("a ran %d more containers", n-runsA)
		}
		// A scale-up meanwhile goes to a only.
		up := spec
		up.Processes = []ProcessSpec{{Name: WebProcess, Count: 5}}
		h.m.Apply([]AppSpec{up})
		waitFor(t, "fifth container", 10*time.Second, func() bool { return h.spread(s, "", WebProcess)["a"] == 3 })
		h.hosts["b"].SetDown(false)
		waitFor(t, "host b up", 10*time.Second, func() bool { return h.hs.State("b") == HostUp })
	})
}

func TestHostsImageMissingOnOneHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		h.hosts["b"].OnImage("localhost/blog:v9", behavior{NoImage: true})
		_, err := h.hs.ImageID(context.Background(), "localhost/blog:v9")
		var he *HostImageError
		if !errors.As(err, &he) || !errors.Is(err, ErrImageNotFound) || !slices.Equal(he.Hosts, []string{"b"}) {
			t.Fatalf("ImageID = %v, want a HostImageError naming b", err)
		}
		if !strings.Contains(MissingImageMessage("localhost/blog:v9", err), "missing on host b") {
			t.Errorf("message = %q", MissingImageMessage("localhost/blog:v9", err))
		}
		// Only the app's hosts are asked.
		if _, err := h.hs.ImageID(WithHosts(context.Background(), []string{"a"}), "localhost/blog:v9"); err != nil {
			t.Errorf("ImageID on a only = %v", err)
		}
		// Different IDs on two hosts are refused too.
		h.hosts["a"].Tag("localhost/blog:v3", "aaaa0000aaaa0000")
		h.hosts["b"].Tag("localhost/blog:v3", "bbbb0000bbbb0000")
		if _, err := h.hs.ImageID(context.Background(), "localhost/blog:v3"); !errors.As(err, &he) || !strings.Contains(err.Error(), "one image everywhere") {
			t.Errorf("ImageID with two IDs = %v", err)
		}
	})
}

// A restart of podswitch while a host is cut off (its API and its
// containers do not answer): the app is adopted at once with the
// containers the record has there, out of the pool since they do not
// answer; once the host is lost they are replaced on the other host,
// new-first, and when it comes back they are stopped.
func TestHostsAdoptWithoutAHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		fakes := map[string]*fakeRuntime{"a": newFakeRuntime(), "b": newFakeRuntime()}
		fakes["a"].net, fakes["b"].net = "10.0.1", "10.0.2"
		h := hostsHarnessOn(t, []string{"a", "b"}, fakes, store)
		spec := appSpecKept(t, "localhost/blog:v1", 4)
		s, _ := h.deployFirst(spec)
		var onA []string
		for _, c := range s.Status().Containers {
			if c.Host == "a" {
				onA = append(onA, c.ID)
			}
		}
		slices.Sort(onA)
		h.close()
		settle(time.Second)

		fakes["b"].SetDown(true)
		fakes["b"].SetCut(true)
		h2 := hostsHarnessOn(t, []string{"a", "b"}, fakes, store)
		h2.m.Apply([]AppSpec{spec})
		waitFor(t, "a's two serve", 3*time.Second, func() bool {
			p := h2.m.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 2
		})
		s2 := h2.m.App(appName)
		waitFor(t, "host b lost", 30*time.Second, func() bool { return h2.hs.State("b") == HostLost })
		waitFor(t, "adopted without b, four on a", time.Minute, func() bool {
			return maps.Equal(h2.spread(s2, "", WebProcess), map[string]int{"a": 4})
		})
		var kept []string
		for _, c := range s2.Status().Containers {
			if slices.Contains(onA, c.ID) && c.State == StateReady {
				kept = append(kept, c.ID)
			}
		}
		slices.Sort(kept)
		if !slices.Equal(kept, onA) {
			t.Errorf("a's containers adopted: %v, want %v", kept, onA)
		}
		if p := h2.m.Pool(appName).Load(); p == nil || len(p.Addrs) != 4 {
			t.Errorf("pool = %+v, want four", p)
		}
		fakes["b"].SetDown(false)
		fakes["b"].SetCut(false)
		waitFor(t, "b's old containers removed", 2*time.Minute, func() bool {
			list, _ := fakes["b"].List(context.Background(), appName)
			return len(list) == 0
		})
		waitFor(t, "spread again", 2*time.Minute, func() bool {
			return maps.Equal(h2.spread(s2, "", WebProcess), map[string]int{"a": 2, "b": 2})
		})
	})
}

// A reload that keeps a host's settings keeps its runtime (the one the new
// config opened is closed); one that changes them closes the old one; a
// host that leaves is closed too.
func TestHostSetUpdateKeepsConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hs := NewHostSet(zaptest.NewLogger(t))
		defer hs.Close()
		closed := map[string]int{}
		var mu sync.Mutex
		cfg := func(name, key string, rt Runtime) HostConfig {
			return HostConfig{Name: name, Runtime: rt, Address: "192.0.2.1", Key: key, Close: func() {
				mu.Lock()
				closed[name+"@"+key]++
				mu.Unlock()
			}}
		}
		a1, a2, b1 := newFakeRuntime(), newFakeRuntime(), newFakeRuntime()
		hs.Update([]HostConfig{cfg("a", "k1", a1), cfg("b", "k1", b1)}, 0)
		hs.Update([]HostConfig{cfg("a", "k1", a2), cfg("b", "k1", newFakeRuntime())}, 0)
		if e := hs.entry("a"); e.cfg.Runtime != a1 {
			t.Errorf("an unchanged host got a new runtime")
		}
		mu.Lock()
		if closed["a@k1"] != 1 || closed["b@k1"] != 1 {
			t.Errorf("closed %v, want the two unused new ones", closed)
		}
		mu.Unlock()
		hs.Update([]HostConfig{cfg("a", "k2", a2)}, 5*time.Second)
		if e := hs.entry("a"); e.cfg.Runtime != a2 {
			t.Errorf("a changed host kept its old runtime")
		}
		if hs.Len() != 1 || hs.DownAfter() != 5*time.Second {
			t.Errorf("hosts %v, down after %s", hs.Names(), hs.DownAfter())
		}
		mu.Lock()
		if closed["a@k1"] != 2 || closed["b@k1"] != 2 {
			t.Errorf("closed %v, want the old a and the old b closed", closed)
		}
		mu.Unlock()
		synctest.Wait()
	})
}

// An app whose hosts no longer include one moves its containers off it,
// new-first: each is retired once its replacement serves.
func TestHostsAppLeavesAHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		spec := appSpec(t, "localhost/blog:v1", 2, worker(2))
		s, _ := h.deployFirst(spec)
		// The pool never has fewer than the two web containers.
		stop, done := make(chan struct{}), make(chan struct{})
		var smallest = 2
		go func() {
			defer close(done)
			for {
				if p := h.m.Pool(appName).Load(); p != nil && len(p.Addrs) < smallest {
					smallest = len(p.Addrs)
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		moved := spec
		moved.Hosts = []string{"a"}
		h.m.Apply([]AppSpec{moved})
		waitFor(t, "everything on a", time.Minute, func() bool {
			return maps.Equal(h.spread(s, "", WebProcess), map[string]int{"a": 2}) &&
				maps.Equal(h.spread(s, "", "worker"), map[string]int{"a": 2})
		})
		waitFor(t, "b emptied", time.Minute, func() bool {
			list, _ := h.hosts["b"].List(context.Background(), appName)
			return len(list) == 0
		})
		close(stop)
		<-done
		if smallest < 2 {
			t.Errorf("the pool had %d web containers at some point, want 2 throughout", smallest)
		}
		if d := h.newest(s); d.Kind != KindDeploy || d.ID != 1 {
			t.Errorf("moving hosts made a deployment: %+v", d)
		}
	})
}

// An app that stops answering on one host is the app's fault, not the
// host's: the host stays up (a refused connection says it is there), and
// with unhealthy_timeout 0 the container is kept out of the pool but never
// replaced.
func TestHostsAppFaultIsNotAHostLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		spec := appSpec(t, "localhost/blog:v1", 2)
		spec.UnhealthyTimeout = 0
		s, _ := h.deployFirst(spec)
		var onB string
		for _, c := range s.Status().Containers {
			if c.Host == "b" {
				onB = c.ID
			}
		}
		_, local := splitID(onB)
		h.hosts["b"].Unlisten(local)
		waitFor(t, "b's container out of the pool", 5*time.Second, func() bool {
			p := h.m.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 1
		})
		settle(time.Minute)
		if st := h.hs.State("b"); st != HostUp {
			t.Errorf("host b is %s, want up: its app does not answer, the host does", st)
		}
		if h.sawState("b:unreachable") || h.sawState("b:lost") {
			t.Errorf("host b changed state: %v", h.states)
		}
		if got := h.spread(s, "", WebProcess); !maps.Equal(got, map[string]int{"a": 1, "b": 1}) {
			t.Errorf("web spread = %v, want a:1 b:1 (nothing replaced)", got)
		}
	})
}

// A restart of podswitch while a host's API does not answer but its
// containers do: the record says what runs there, so the app is adopted
// at once with them, serving, and nothing is replaced ("unmanaged" holds
// across a restart); when the API comes back nothing changes.
func TestHostsRestartWithAnUnmanagedHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		fakes := map[string]*fakeRuntime{"a": newFakeRuntime(), "b": newFakeRuntime()}
		fakes["a"].net, fakes["b"].net = "10.0.1", "10.0.2"
		h := hostsHarnessOn(t, []string{"a", "b"}, fakes, store)
		spec := appSpecKept(t, "localhost/blog:v1", 4, worker(2))
		s, _ := h.deployFirst(spec)
		settle(time.Second)
		before := webIDsOf(s)
		if n := len(store.get(appName).Hosted); n != 6 {
			t.Fatalf("the record has %d hosted containers, want 6: %+v", n, store.get(appName).Hosted)
		}
		h.close()
		settle(time.Second)

		fakes["b"].SetDown(true)
		runs := len(fakes["a"].Runs()) + len(fakes["b"].Runs())
		h2 := hostsHarnessOn(t, []string{"a", "b"}, fakes, store)
		h2.m.Apply([]AppSpec{spec})
		waitFor(t, "pool of four", 3*time.Second, func() bool {
			p := h2.m.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 4
		})
		s2 := h2.m.App(appName)
		settle(time.Minute) // past host_down_after and several resyncs
		if got := webIDsOf(s2); !slices.Equal(got, before) {
			t.Errorf("web containers after the restart %v, want %v", got, before)
		}
		if got := h2.spread(s2, "", "worker"); !maps.Equal(got, map[string]int{"a": 1, "b": 1}) {
			t.Errorf("workers %v, want a:1 b:1", got)
		}
		if n := len(fakes["a"].Runs()) + len(fakes["b"].Runs()); n != runs {
			t.Errorf("%d containers ran after the restart, want none", n-runs)
		}
		if st := h2.hs.State("b"); st != HostUnmanaged {
			t.Errorf("host b is %s, want unmanaged", st)
		}
		fakes["b"].SetDown(false)
		waitFor(t, "host b up", 10*time.Second, func() bool { return h2.hs.State("b") == HostUp })
		settle(time.Minute)
		if got := webIDsOf(s2); !slices.Equal(got, before) {
			t.Errorf("web containers once b answered %v, want %v", got, before)
		}
	})
}

// webIDsOf returns the sorted IDs of s's ready web containers.
func webIDsOf(s *Supervisor) []string {
	var ids []string
	for _, c := range s.Status().Containers {
		if c.Process == WebProcess && c.State == StateReady {
			ids = append(ids, c.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// A host that comes back without the release's image (the deploy checked
// the hosts that were up) fails one create, then is passed over: the
// containers go to the other host rather than failing there until the
// type gives up.
func TestHostsPassOverAHostWithoutTheImage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		h.hosts["b"].SetDown(true)
		waitFor(t, "host b unmanaged", 10*time.Second, func() bool { return h.hs.State("b") == HostUnmanaged })
		spec := appSpec(t, "localhost/blog:v1", 2)
		s, _ := h.deployFirst(spec)
		h.hosts["b"].OnImage("localhost/blog:v1", behavior{RunErr: "localhost/blog:v1: image not known"})
		h.hosts["b"].SetDown(false)
		waitFor(t, "host b up", 10*time.Second, func() bool { return h.hs.State("b") == HostUp })
		up := spec
		up.Processes = []ProcessSpec{{Name: WebProcess, Count: 4}}
		h.m.Apply([]AppSpec{up})
		waitFor(t, "four on a", time.Minute, func() bool {
			return maps.Equal(h.spread(s, "", WebProcess), map[string]int{"a": 4})
		})
		if n := len(h.hosts["b"].Runs()); n > 2 {
			t.Errorf("b was tried %d times, want at most the two creates before it was passed over", n)
		}
		for _, ev := range h.events {
			if ev.Name == EventGaveUp {
				t.Errorf("gave up: %+v", ev)
			}
		}
	})
}

// A scale down keeps each type spread over the hosts: it cuts from the
// host that has the most.
func TestHostsScaleDownKeepsTheSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHostsHarness(t, "a", "b")
		spec := appSpec(t, "localhost/blog:v1", 6)
		s, _ := h.deployFirst(spec)
		down := spec
		down.Processes = []ProcessSpec{{Name: WebProcess, Count: 2}}
		h.m.Apply([]AppSpec{down})
		waitFor(t, "two web containers", time.Minute, func() bool {
			n := 0
			for _, c := range s.Status().Containers {
				if c.Process == WebProcess {
					n++
				}
			}
			return n == 2
		})
		if got := h.spread(s, "", WebProcess); !maps.Equal(got, map[string]int{"a": 1, "b": 1}) {
			t.Errorf("web spread after the scale down = %v, want a:1 b:1", got)
		}
		settle(time.Minute)
		if n := len(h.hosts["a"].Runs()) + len(h.hosts["b"].Runs()); n != 6 {
			t.Errorf("%d containers ran, want the first 6 only (nothing moved)", n)
		}
	})
}
