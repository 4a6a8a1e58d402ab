package integration

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Several podswitch proxies (issue 15): Caddy processes on one machine, each
// with its own admin and site ports and its own data dir, that share Caddy's
// storage (a shared directory, or the tests' redis-server that
// scripts/setup.sh --tests starts), one leader per app.

const (
	// proxiesLease is the podswitch lease_duration of the proxies.
	proxiesLease = 3 * time.Second
	// takeoverSlack is what a takeover may take past the lease after the
	// leader died: a follower judges the lease expired by its own clock
	// since it last saw the record change, which it reads every sixth of
	// the lease (up to a third past the lease in all); then a storage
	// round trip, the test's next status poll and a loaded machine.
	takeoverSlack = proxiesLease/3 + 1500*time.Millisecond
	// followerSwitchMax is the bound from the leader's switch to
	// every follower's; it bounds a follower's following of a pause too
	// (the issue: "within about a second").
	followerSwitchMax = 2 * time.Second
	// storageOutage is how long the issue stops Redis for.
	storageOutage = 10 * time.Second
	// The load sent through each proxy (two race-built Caddys on two
	// cores), and the rate below which it does not count.
	proxiesRPS     = 100
	proxiesMinRate = proxiesRPS / 2

	redisHost = "127.0.0.1"
	redisPort = "6379"
)

// leaseForBench, when set, is the lease_duration of the proxies instead of
// proxiesLease's (a benchmark measures at the default).
var leaseForBench string

// startProxies runs n Caddy processes with the apps given, each with its own
// admin and site ports and data dir, sharing storage: "file" (a shared
// directory, `storage file_system <dir>`) or "redis" (the tests'
// redis-server, under a key prefix of this test's). Every app has a site on
// each proxy (c.appURL). The proxies are stopped, all at once, before the
// harness removes the apps' containers.
func startProxies(t testing.TB, n int, storage string, apps ...appCfg) []*caddyProc {
	t.Helper()
	opts, shared := proxiesOpts(t, storage, apps...)
	ps := make([]*caddyProc, n)
	for i := range ps {
		ps[i] = newCaddyProc(t, opts, apps...)
		sharedStores.Store(ps[i], shared)
	}
	// Registered after each proxy's own cleanup, so it runs before them.
	t.Cleanup(func() { stopProxies(ps) })
	for _, c := range ps {
		c.start(apps...)
	}
	return ps
}

// sharedStore is where proxies started together keep their shared state:
// a directory (file) or a key prefix of the tests' redis-server.
type sharedStore struct {
	kind, dir, prefix string
}

// sharedStores maps each proxy startProxies started to its sharedStore.
var sharedStores sync.Map

// proxiesOpts shapes the Caddyfile of proxies that share storage ("file" or
// "redis"; see startProxies).
func proxiesOpts(t testing.TB, storage string, apps ...appCfg) (caddyOpts, sharedStore) {
	t.Helper()
	if len(apps) == 0 {
		t.Fatal("startProxies: no app")
	}
	var global []string
	shared := sharedStore{kind: storage}
	switch storage {
	case "file":
		shared.dir = t.TempDir()
		global = []string{"storage file_system " + shared.dir}
	case "redis":
		shared.prefix = redisKeyPrefix(t)
		global = []string{
			"storage redis {",
			"\thost " + redisHost,
			"\tport " + redisPort,
			"\tkey_prefix " + shared.prefix,
			"}",
		}
	default:
		t.Fatalf("startProxies: storage %q, want file or redis", storage)
	}
	var siteApps []string
	for _, a := range apps[1:] {
		siteApps = append(siteApps, a.Name)
	}
	return caddyOpts{
		global:    global,
		podswitch: []string{"podman " + rt.URI(), "lease_duration " + cmp.Or(leaseForBench, proxiesLease.String())},
		siteApps:  siteApps,
	}, shared
}

// leaseRecord is the part of an app's lease record (internal/lease.Record)
// the tests read.
type leaseRecord struct {
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
}

// leaseOf reads app's lease record straight from the storage that c
// shares (key podswitch/apps/<app>/lease). Safe in any goroutine.
func leaseOf(c *caddyProc, app string) (leaseRecord, error) {
	v, ok := sharedStores.Load(c)
	if !ok {
		return leaseRecord{}, fmt.Errorf("proxy %s was not started by startProxies", c.admin)
	}
	shared := v.(sharedStore)
	key := "podswitch/apps/" + app + "/lease"
	var b []byte
	switch shared.kind {
	case "file":
		var err error
		if b, err = os.ReadFile(filepath.Join(shared.dir, filepath.FromSlash(key))); err != nil {
			return leaseRecord{}, err
		}
	case "redis":
		// caddy-storage-redis keeps {"value": <base64>, ...} under
		// <prefix>/<key> (no compression, no encryption here).
		out, err := redisCLI("--raw", "get", shared.prefix+"/"+key)
		if err != nil {
			return leaseRecord{}, err
		}
		var sd struct {
			Value []byte `json:"value"`
		}
		if err := json.Unmarshal([]byte(out), &sd); err != nil {
			return leaseRecord{}, fmt.Errorf("redis value of %s: %v in %q", key, err, out)
		}
		b = sd.Value
	}
	var rec leaseRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return leaseRecord{}, fmt.Errorf("lease record of %s: %v in %q", app, err, b)
	}
	return rec, nil
}

// stopProxies stops every running proxy at once, a frozen one continued
// first (its /stop would never answer): else the first one stopped would
// have its containers removed by its cleanup while another proxy still
// leads the app and replaces them.
func stopProxies(ps []*caddyProc) {
	var wg sync.WaitGroup
	for _, c := range ps {
		if c.cmd == nil {
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		wg.Go(c.stop)
	}
	wg.Wait()
}

// clusterView is the "cluster" field of GET /podswitch/apps/{app} in shared
// mode (issue 15's contract). It is decoded here, not through
// engine.AppStatus, which need not carry it.
type clusterView struct {
	Leader  string         `json:"leader"`
	Epoch   uint64         `json:"epoch"`
	This    string         `json:"this"`
	Leading bool           `json:"leading"`
	Proxies []clusterProxy `json:"proxies"`
}

type clusterProxy struct {
	Proxy    string   `json:"proxy"`
	Version  string   `json:"version"`
	Config   string   `json:"config"`
	Differs  bool     `json:"differs"`
	LeaderOf []string `json:"leader_of"`
}

func (v clusterView) String() string {
	return fmt.Sprintf("this %s: leader %s, epoch %d, leading %v", v.This, v.Leader, v.Epoch, v.Leading)
}

// statusClient bounds the status requests of the proxies' tests: a frozen
// proxy does not answer.
var statusClient = &http.Client{Timeout: 2 * time.Second}

// clusterOf returns the cluster part of app's status on the proxy at admin
// (host:port). Safe in any goroutine.
func clusterOf(admin, app string) (clusterView, error) {
	resp, err := statusClient.Get("http://" + admin + "/podswitch/apps/" + app)
	if err != nil {
		return clusterView{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return clusterView{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return clusterView{}, fmt.Errorf("GET status of %s on %s: %d %s", app, admin, resp.StatusCode, b)
	}
	var st struct {
		Cluster *clusterView `json:"cluster"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return clusterView{}, fmt.Errorf("status of %s on %s: %v", app, admin, err)
	}
	if st.Cluster == nil {
		return clusterView{}, fmt.Errorf("status of %s on %s has no cluster field (not in shared mode?)", app, admin)
	}
	return *st.Cluster, nil
}

// leaderOf waits until exactly one of the running proxies (those killed are
// passed over; a frozen one must not be passed) says it leads app and all
// name it as leader, and returns it and the others.
func leaderOf(t testing.TB, proxies []*caddyProc, app string) (*caddyProc, []*caddyProc) {
	t.Helper()
	const timeout = 30 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		var leaders, others []*caddyProc
		var seen []string
		names := map[string]bool{}
		answered := true
		for _, c := range proxies {
			if c.cmd == nil {
				continue
			}
			cv, err := clusterOf(c.admin, app)
			if err != nil {
				answered = false
				seen = append(seen, err.Error())
				continue
			}
			seen = append(seen, cv.String())
			names[cv.Leader] = true
			if cv.Leading && cv.This == cv.Leader {
				leaders = append(leaders, c)
			} else {
				others = append(others, c)
			}
		}
		if answered && len(leaders) == 1 && len(names) == 1 {
			return leaders[0], others
		}
		if time.Now().After(deadline) {
			t.Fatalf("no single leader of %s that every proxy names within %s: %s", app, timeout, strings.Join(seen, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLeading waits until c says it leads app, and returns what it said and
// when the test saw it.
func waitLeading(t *testing.T, c *caddyProc, app string, timeout time.Duration) (clusterView, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cv, err := clusterOf(c.admin, app)
		if err == nil && cv.Leading && cv.This == cv.Leader {
			return cv, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy %s does not lead %s after %s: %v %v", c.admin, app, timeout, cv, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFollowing waits until c says it follows leader for app at epoch
// minEpoch or later.
func waitFollowing(t *testing.T, c *caddyProc, app, leader string, minEpoch uint64, timeout time.Duration) clusterView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cv, err := clusterOf(c.admin, app)
		if err == nil && !cv.Leading && cv.Leader == leader && cv.Epoch >= minEpoch {
			return cv
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy %s does not follow %s at epoch %d or later for %s after %s: %v %v", c.admin, leader, minEpoch, app, timeout, cv, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAdopted waits until c, leading app at epoch, has taken over the app's
// containers, as its log says: until then it refuses operations ("the app
// is starting").
func waitAdopted(t *testing.T, c *caddyProc, app string, epoch uint64) {
	t.Helper()
	c.waitLog(fmt.Sprintf("adopted running containers of %s at epoch %d", app, epoch), 30*time.Second, func(l logLine) bool {
		e, _ := l.Fields["epoch"].(float64)
		return l.Msg == "adopted running containers" && l.str("app") == app && uint64(e) == epoch
	})
}

// epochWatch polls the cluster status of app on some proxies, and the
// app's lease record in their storage, and records what each said, to
// check that the epoch never goes back.
type epochWatch struct {
	app  string
	mu   sync.Mutex
	obs  []epochObs
	stop chan struct{}
	wg   sync.WaitGroup
}

type epochObs struct {
	at    time.Time // when the answer was read
	proxy string    // admin address, or "the lease record"
	cv    clusterView
}

func newEpochWatch(app string) *epochWatch {
	return &epochWatch{app: app, stop: make(chan struct{})}
}

// record adds an answer read by the test itself.
func (w *epochWatch) record(admin string, cv clusterView) {
	w.mu.Lock()
	w.obs = append(w.obs, epochObs{at: time.Now(), proxy: admin, cv: cv})
	w.mu.Unlock()
}

// add polls c from now on. Only answers read after the call are recorded,
// so a proxy added once it was continued says only what it computed awake.
func (w *epochWatch) add(c *caddyProc) {
	admin := c.admin
	w.wg.Go(func() {
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if cv, err := clusterOf(admin, w.app); err == nil {
				w.record(admin, cv)
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// addLease polls app's lease record in the storage c shares from now on.
func (w *epochWatch) addLease(c *caddyProc) {
	w.wg.Go(func() {
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			// A record read while it is being written may not parse: the
			// next read will.
			if rec, err := leaseOf(c, w.app); err == nil {
				w.record("the lease record", clusterView{Leader: rec.Holder, Epoch: rec.Epoch})
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// finish stops the polls and returns every answer in the order read.
func (w *epochWatch) finish() []epochObs {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.obs)
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// checkEpochs fails the test if the lease record's epoch went back, or a
// proxy reported an epoch lower than one it had reported. A proxy that
// said it led at an epoch lower than one already seen elsewhere (a frozen
// leader's status in the moment after it wakes, before it drops the term
// its own clock ended; its writes are fenced all the same) is logged, with
// how long it said so.
func checkEpochs(t *testing.T, obs []epochObs) {
	t.Helper()
	last := map[string]uint64{}
	var highest uint64
	stale := map[string][2]time.Time{}
	for _, o := range obs {
		if prev, ok := last[o.proxy]; ok && o.cv.Epoch < prev {
			t.Errorf("%s: %s reported epoch %d after %d", o.at.Format("15:04:05.000"), o.proxy, o.cv.Epoch, prev)
		}
		last[o.proxy] = o.cv.Epoch
		if o.cv.Leading && o.cv.Epoch < highest {
			span, ok := stale[o.proxy]
			if !ok {
				span[0] = o.at
			}
			span[1] = o.at
			stale[o.proxy] = span
		}
		highest = max(highest, o.cv.Epoch)
	}
	for proxy, span := range stale {
		t.Logf("note: proxy %s said it led at an epoch below %d from %s to %s (%s)", proxy, highest,
			span[0].Format("15:04:05.000"), span[1].Format("15:04:05.000"), span[1].Sub(span[0]).Round(time.Millisecond))
	}
}

// ctrState is what Podman says of one container: a container that was
// restarted or replaced shows a new start time or a new ID.
type ctrState struct {
	ID, Status, StartedAt string
}

// containerStates returns the app's containers as Podman has them, by ID.
// Call it at rest: a container removed between the list and the inspect
// fails the test.
func containerStates(t *testing.T, app string) map[string]ctrState {
	t.Helper()
	out := map[string]ctrState{}
	var ids []string
	for _, ci := range podmanContainers(t, app) {
		ids = append(ids, ci.ID)
	}
	if len(ids) == 0 {
		return out
	}
	text := podmanCLI(t, append([]string{"inspect", "--format", "{{.Id}} {{.State.Status}} {{.State.StartedAt}}"}, ids...)...)
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("podman inspect: line %q", l)
		}
		out[f[0]] = ctrState{ID: f[0], Status: f[1], StartedAt: strings.Join(f[2:], " ")}
	}
	return out
}

// sameContainers fails the test, saying when, if got differs from want.
func sameContainers(t *testing.T, when string, want, got map[string]ctrState) {
	t.Helper()
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			t.Errorf("%s: container %.12s (%s, started %s) is gone", when, id, w.Status, w.StartedAt)
		case g != w:
			t.Errorf("%s: container %.12s was %s started %s, is %s started %s", when, id, w.Status, w.StartedAt, g.Status, g.StartedAt)
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s: container %.12s (%s, started %s) is new", when, id, g.Status, g.StartedAt)
		}
	}
}

func stateIDs(m map[string]ctrState) []string {
	var ids []string
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// answerOf splits the test app's answer "version=V host=H".
func answerOf(body string) (version, host string) {
	v, rest, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(body), "version="), " ")
	return v, strings.TrimPrefix(rest, "host=")
}

// waitServes waits until app's site on c answers 200, from version (any
// version if empty).
func waitServes(t testing.TB, c *caddyProc, app, version string, timeout time.Duration) {
	t.Helper()
	url := c.appURL(app, "/")
	deadline := time.Now().Add(timeout)
	for {
		var got string
		resp, err := statusClient.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			v, _ := answerOf(string(b))
			if resp.StatusCode == http.StatusOK && (version == "" || v == version) {
				return
			}
			got = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			got = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s through %s does not answer %q within %s: %s", app, c.admin, version, timeout, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAnsweredBy waits until app's site on c answers from the container
// whose ID starts with host (the test app's host is its short ID).
func waitAnsweredBy(t *testing.T, c *caddyProc, app, id string, timeout time.Duration) {
	t.Helper()
	url := c.appURL(app, "/")
	deadline := time.Now().Add(timeout)
	for {
		resp, err := statusClient.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if _, h := answerOf(string(b)); resp.StatusCode == http.StatusOK && h != "" && strings.HasPrefix(id, h) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s through %s was not answered by container %.12s within %s", app, c.admin, id, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitReleaseStopped waits until Podman runs no container of release.
func waitReleaseStopped(t *testing.T, app, release string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		running := 0
		for _, ci := range podmanContainers(t, app) {
			if ci.Labels[engine.LabelRelease] == release && ci.Running {
				running++
			}
		}
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d containers of %s's release %s still run after %s", running, app, release, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitOnlyRelease waits until the app's containers are n, all running,
// none of release old.
func waitOnlyRelease(t *testing.T, app, old string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list := podmanContainers(t, app)
		ok := len(list) == n
		for _, ci := range list {
			ok = ok && ci.Running && ci.Labels[engine.LabelRelease] != old
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var got []string
			for _, ci := range list {
				got = append(got, fmt.Sprintf("%.12s %s running=%v", ci.ID, ci.Labels[engine.LabelRelease], ci.Running))
			}
			t.Fatalf("%s does not run %d containers, none of release %s, after %s: %v", app, n, old, timeout, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// versionTimes sends one GET after another and records, for each version
// that answered, when the first and the last request it answered were
// sent. Failures are the load's to count.
type versionTimes struct {
	mu          sync.Mutex
	first, last map[string]time.Time
	stop, done  chan struct{}
}

func watchVersions(url string) *versionTimes {
	w := &versionTimes{first: map[string]time.Time{}, last: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			sent := time.Now()
			resp, err := client.Get(url)
			if err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				v, _ := answerOf(string(b))
				w.mu.Lock()
				if _, ok := w.first[v]; !ok {
					w.first[v] = sent
				}
				w.last[v] = sent
				w.mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *versionTimes) finish() (first, last map[string]time.Time) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first, w.last
}

// pendingGet is one GET in flight.
type pendingGet struct {
	sent time.Time
	done chan struct{}
	code int
	body string
	err  error
}

func startGet(url string) *pendingGet {
	g := &pendingGet{sent: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		client := &http.Client{Timeout: 2 * time.Minute}
		resp, err := client.Get(url)
		if err != nil {
			g.err = err
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		g.code, g.body, g.err = resp.StatusCode, string(b), err
	}()
	return g
}

func (g *pendingGet) answered() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// adminRequest sends one request to the admin endpoint at admin (host:port).
// Safe in any goroutine.
func adminRequest(admin, method, path, body string, timeout time.Duration) (int, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+admin+path, rd)
	if err != nil {
		return 0, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// --- the tests' redis-server ------------------------------------------------

// redisCLI runs redis-cli against the tests' redis-server, bounded: a
// frozen server never answers.
func redisCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", redisHost, "-p", redisPort}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli %s: %v %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// redisKeyPrefix checks that the tests' redis-server answers and returns a
// key prefix of this test's; its keys are deleted when the test ends.
func redisKeyPrefix(t testing.TB) string {
	t.Helper()
	if out, err := redisCLI("ping"); err != nil || out != "PONG" {
		t.Fatalf("no redis-server answers on %s:%s (run `bash scripts/setup.sh --tests`): %q %v", redisHost, redisPort, out, err)
	}
	prefix := uniqueName("podswitch-it")
	t.Cleanup(func() {
		out, err := redisCLI("--scan", "--pattern", prefix+"*")
		if err != nil {
			t.Logf("listing the test's redis keys: %v", err)
			return
		}
		var keys []string
		for _, k := range strings.Fields(out) {
			if k == prefix || strings.HasPrefix(k, prefix+"/") {
				keys = append(keys, k)
			}
		}
		for len(keys) > 0 {
			n := min(len(keys), 200)
			if _, err := redisCLI(append([]string{"unlink"}, keys[:n]...)...); err != nil {
				t.Logf("deleting the test's redis keys: %v", err)
				return
			}
			keys = keys[n:]
		}
	})
	return prefix
}

// redisPID returns the process id of the redis-server the tests use, as it
// says itself.
func redisPID(t *testing.T) int {
	t.Helper()
	out, err := redisCLI("info", "server")
	if err != nil {
		t.Fatalf("redis-server on %s:%s: %v (run `bash scripts/setup.sh --tests`)", redisHost, redisPort, err)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("redis process_id %q: %v", v, err)
			}
			return pid
		}
	}
	t.Fatalf("redis INFO server has no process_id:\n%s", out)
	return 0
}

// procStopped says whether process pid is stopped (state T).
func procStopped(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false, err
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok || rest == "" {
		return false, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return rest[0] == 'T', nil
}

var (
	redisMu     sync.Mutex
	redisFrozen int // pid of the redis-server redisStop froze
)

// redisStop makes the tests' redis-server unavailable until redisStart:
// it freezes it with SIGSTOP (continued when the test ends, whatever
// happens). A freeze, not a shutdown: the server keeps its keys, as a
// Redis that comes back after an outage does (the tests' server has no
// persistence, so a shutdown and a start would come back empty, which is
// a wipe of the shared state, not an outage); and it is the harder outage
// for a client, a network partition or a hung server: the kernel still
// accepts connections and every call hangs until its own timeout instead
// of failing at once, which shows that podswitch bounds its storage calls.
func redisStop(t *testing.T) {
	t.Helper()
	pid := redisPID(t)
	redisMu.Lock()
	if redisFrozen != 0 {
		redisMu.Unlock()
		t.Fatal("redisStop: redis is already stopped")
	}
	redisFrozen = pid
	redisMu.Unlock()
	t.Cleanup(func() {
		redisMu.Lock()
		defer redisMu.Unlock()
		if redisFrozen == pid {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			redisFrozen = 0
		}
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP redis-server %d: %v", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		stopped, err := procStopped(pid)
		if err != nil {
			t.Fatal(err)
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server %d is not stopped 5s after SIGSTOP", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// redisStart continues the redis-server redisStop froze and waits until it
// answers.
func redisStart(t *testing.T) {
	t.Helper()
	redisMu.Lock()
	pid := redisFrozen
	redisFrozen = 0
	redisMu.Unlock()
	if pid == 0 {
		t.Fatal("redisStart: redis is not stopped")
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT redis-server %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := redisCLI("ping")
		if err == nil && out == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server does not answer 10s after SIGCONT: %q %v", out, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- the scenarios ----------------------------------------------------------

// TestProxies runs two proxies that share Caddy's storage, first a shared
// directory, then Redis, through the scenarios of issue 15 in turn, on the
// same two Caddys, in the order 1, 4, 3, 2, 6, 5 of the list: a
// deploy sent to the follower under load on both; pause through one proxy;
// the leader frozen past its lease; the leader killed during a deploy; Redis
// stopped for 10s (Redis only); both proxies killed and started again. A
// scenario that fails ends the run of its storage: the next would start from
// a state nobody knows.
func TestProxies(t *testing.T) {
	for _, storage := range []string{"file", "redis"} {
		t.Run(storage, func(t *testing.T) { proxiesScenarios(t, storage) })
	}
}

func proxiesScenarios(t *testing.T, storage string) {
	a := appCfg{Name: uniqueName("px"), Image: imageV1, Web: 2, Lines: []string{"drain_timeout 2s", "stop_timeout 5s"}}
	// b's new containers take 2s to listen: its deploys have a window in
	// which to kill the leader.
	b := appCfg{Name: uniqueName("pxk"), Image: imageV1, Web: 2, Lines: []string{"env LISTEN_DELAY 2s", "drain_timeout 2s", "stop_timeout 5s", "boot_timeout 30s"}}
	ps := startProxies(t, 2, storage, a, b)
	for _, app := range []appCfg{a, b} {
		leader, _ := leaderOf(t, ps, app.Name)
		leader.mustDeploy(app.Name, imageV1, 2*time.Minute)
		leader.waitSettled(app.Name, app.Web, time.Minute)
		for _, c := range ps {
			waitServes(t, c, app.Name, "v1", 30*time.Second)
		}
	}

	// sub runs a scenario as a subtest, with the proxies reporting to it.
	sub := func(name string, fn func(t *testing.T)) bool {
		return t.Run(name, func(t *testing.T) {
			parents := make([]testing.TB, len(ps))
			for i, c := range ps {
				parents[i], c.t = c.t, t
			}
			defer func() {
				for i, c := range ps {
					c.t = parents[i]
				}
			}()
			fn(t)
		})
	}
	if !sub("deploy through the follower", func(t *testing.T) { proxiesDeployThroughFollower(t, ps, a) }) {
		return
	}
	if !sub("pause holds both", func(t *testing.T) { proxiesPause(t, ps, a) }) {
		return
	}
	if !sub("the command line through the follower", func(t *testing.T) { proxiesCLI(t, ps, a) }) {
		return
	}
	if !sub("canary through the follower", func(t *testing.T) { proxiesCanary(t, ps, a) }) {
		return
	}
	if !sub("leader frozen past its lease", func(t *testing.T) { proxiesFreezeLeader(t, ps, a) }) {
		return
	}
	if !sub("leader killed during a deploy", func(t *testing.T) { proxiesKillLeaderDuringDeploy(t, ps, b) }) {
		return
	}
	// Scenario 6 stops Redis; a shared directory has no server to stop.
	if storage == "redis" {
		if !sub("redis stopped", func(t *testing.T) { proxiesStorageOutage(t, ps, a) }) {
			return
		}
	}
	if !sub("both killed and restarted", func(t *testing.T) { proxiesRestartAll(t, ps, a, b) }) {
		return
	}
	sub("config drift", func(t *testing.T) { proxiesDrift(t, ps, a, b) })
}

// A follower reloaded with a podswitch config that differs from the
// leader's is named by both proxies' status and cluster view, and warned
// of in the leader's log; the same config again clears it. Nothing of the
// apps changes meanwhile.
func proxiesDrift(t *testing.T, ps []*caddyProc, apps ...appCfg) {
	leader, followers := leaderOf(t, ps, apps[0].Name)
	f := followers[0]
	fv, err := clusterOf(f.admin, apps[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	before := containerStates(t, apps[0].Name)
	changed := slices.Clone(apps)
	changed[0].Lines = append(slices.Clone(changed[0].Lines), "env DRIFT 1")
	f.reload(changed...)
	drift := func(c *caddyProc) []string {
		code, body := c.api(http.MethodGet, "/podswitch/apps/"+apps[0].Name, "")
		if code != http.StatusOK {
			t.Fatalf("status on %s: %d %s", c.admin, code, body)
		}
		var st struct {
			Cluster struct {
				Drift []string `json:"config_drift"`
			} `json:"cluster"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		return st.Cluster.Drift
	}
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Contains(drift(leader), fv.This) || len(drift(f)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("drift not shown within 15s: the leader names %v (want %s), the follower %v", drift(leader), fv.This, drift(f))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(leader.logs(), "the podswitch config of other proxies differs from this one's") {
		t.Error("the leader's log has no warning of the drift")
	}
	if out, err := exec.Command(caddyBin, "podswitch", "cluster", "--address", leader.admin).CombinedOutput(); err != nil || !strings.Contains(string(out), "(differs)") {
		t.Errorf("caddy podswitch cluster on the leader does not mark the follower: %v\n%s", err, out)
	}
	f.reload(apps...)
	deadline = time.Now().Add(15 * time.Second)
	for len(drift(leader)) > 0 || len(drift(f)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("drift still shown 15s after the same config: leader %v, follower %v", drift(leader), drift(f))
		}
		time.Sleep(100 * time.Millisecond)
	}
	sameContainers(t, "after a follower's config differed and came back", before, containerStates(t, apps[0].Name))
}

// The command line works on the follower: a scale with --wait is carried
// out by the leader and followed to its end from the follower; status and
// cluster name the leader and both proxies.
func proxiesCLI(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	f := followers[0]
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, caddyBin, append([]string{"podswitch"}, append(args, "--address", f.admin)...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, n := range []int{3, app.Web} {
		out, err := cli("scale", app.Name, fmt.Sprintf("web=%d", n), "--wait")
		if err != nil {
			t.Fatalf("caddy podswitch scale web=%d --wait through the follower: %v\n%s", n, err, out)
		}
		if got := leader.status(app.Name).Processes["web"]; got != n {
			t.Fatalf("after scale web=%d through the follower, the leader wants web=%d:\n%s", n, got, out)
		}
		leader.waitSettled(app.Name, n, time.Minute)
	}
	lv, err := clusterOf(leader.admin, app.Name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cli("status", app.Name)
	if err != nil || !strings.Contains(out, "leader:     "+lv.This) || !strings.Contains(out, "another proxy leads it") {
		t.Errorf("caddy podswitch status through the follower does not name the leader %s: %v\n%s", lv.This, err, out)
	}
	out, err = cli("cluster")
	if err != nil || !strings.Contains(out, lv.This) || strings.Count(out, "\n") < 3 {
		t.Errorf("caddy podswitch cluster through the follower: %v\n%s", err, out)
	}
}

// A canary started through the follower gets the requests its header
// asks for through both proxies, and the others go to the serving
// release; an abort through the follower ends it on both.
func proxiesCanary(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	f := followers[0]
	serving, _ := answerOf(func() string { _, b := get(t, leader.appURL(app.Name, "/")); return b }())
	canaryImage, canaryVersion := imageV1, "v1"
	if serving == "v1" {
		canaryImage, canaryVersion = imageV2, "v2"
	}
	base := "/podswitch/apps/" + app.Name
	code, body := f.api(http.MethodPost, base+"/rollout?wait=1", `{"image": "`+canaryImage+`", "percent": 0, "header": "X-Beta"}`)
	if code != http.StatusOK {
		t.Fatalf("rollout through the follower: %d %s", code, body)
	}
	ask := func(c *caddyProc, beta bool) string {
		req, err := http.NewRequest(http.MethodGet, c.appURL(app.Name, "/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if beta {
			req.Header.Set("X-Beta", "1")
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("a request through %s: %v", c.admin, err)
		}
		v, _ := answerOf(mustRead(resp))
		return v
	}
	for _, c := range ps {
		deadline := time.Now().Add(10 * time.Second)
		for ask(c, true) != canaryVersion {
			if time.Now().After(deadline) {
				t.Fatalf("requests with X-Beta through %s do not reach the canary (%s) within 10s", c.admin, canaryVersion)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for range 20 {
			if v := ask(c, false); v != serving {
				t.Fatalf("a request without X-Beta through %s reached %s, want the serving %s (percent 0)", c.admin, v, serving)
			}
		}
	}
	if code, body := f.api(http.MethodPost, base+"/abort", ""); code != http.StatusOK {
		t.Fatalf("abort through the follower: %d %s", code, body)
	}
	for _, c := range ps {
		deadline := time.Now().Add(10 * time.Second)
		for ask(c, true) != serving {
			if time.Now().After(deadline) {
				t.Fatalf("requests with X-Beta through %s still reach the canary 10s after the abort", c.admin)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	leader.waitSettled(app.Name, app.Web, time.Minute)
}

// 1. Load on both proxies; a deploy sent to the follower fails no request on
// either, and the follower's pool switches within 2s of the leader's switch:
// no request sent to the follower later than that is answered by the old
// release.
func proxiesDeployThroughFollower(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	f := followers[0]
	old := leader.status(app.Name).Release.ID
	var loads []*load
	var watches []*versionTimes
	for _, c := range []*caddyProc{leader, f} {
		loads = append(loads, startLoad(t, c.appURL(app.Name, "/"), proxiesRPS))
		watches = append(watches, watchVersions(c.appURL(app.Name, "/")))
	}
	code, body := f.api(http.MethodPost, "/podswitch/apps/"+app.Name+"/deploy?wait=1", `{"image": "`+imageV2+`"}`)
	if code != http.StatusOK {
		t.Fatalf("deploy through the follower: %d %s", code, body)
	}
	d := decodeAPIAnswer(t, body).Deployment
	if d == nil || d.Status != engine.StatusSuccess {
		t.Fatalf("deploy through the follower did not succeed: %s", body)
	}
	// Once the old release's containers stopped, no answer of v1 can come.
	waitReleaseStopped(t, app.Name, old, time.Minute)
	leaderFirst, _ := watches[0].finish()
	followerFirst, followerLast := watches[1].finish()
	for _, l := range loads {
		l.waitVersion(t, "v2", 10*time.Second)
	}
	loads[0].check(t, proxiesMinRate)
	loads[1].check(t, proxiesMinRate)

	switched := d.SwitchedAt
	if switched.IsZero() {
		t.Errorf("the deployment has no switched_at: %s", body)
		switched = leaderFirst["v2"]
	}
	if followerFirst["v2"].IsZero() {
		t.Fatalf("no request through the follower was answered by v2")
	}
	lag := followerLast["v1"].Sub(switched)
	t.Logf("leader switched at %s; through the leader v2 first answered a request sent %s after; through the follower %s after, v1 last %s after",
		switched.Format("15:04:05.000"), leaderFirst["v2"].Sub(switched).Round(time.Millisecond),
		followerFirst["v2"].Sub(switched).Round(time.Millisecond), lag.Round(time.Millisecond))
	if lag > followerSwitchMax {
		t.Errorf("the follower sent a request to v1 %s after the leader's switch, want within %s", lag.Round(time.Millisecond), followerSwitchMax)
	}
}

// 4. A pause through one proxy (the follower) holds requests on both: a
// request sent to each is held (the proxy's status counts the requests it
// holds itself) and not answered; resume through the other proxy releases
// both, answered 200. The leader holds from the moment it acknowledged the
// pause; the follower follows it from the shared record, so a request it
// got before it did is answered, but none sent later than
// followerSwitchMax after the pause was acknowledged may be.
func proxiesPause(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	f := followers[0]
	base := "/podswitch/apps/" + app.Name
	if code, body := f.api(http.MethodPost, base+"/pause", `{"timeout": "60s"}`); code != http.StatusOK {
		t.Fatalf("pause through the follower: %d %s", code, body)
	}
	acked := time.Now()
	held := func(c *caddyProc) func() bool {
		return func() bool {
			p := c.status(app.Name).Paused
			return p != nil && p.Held >= 1
		}
	}
	gl := holdOne(t, leader, app.Name, acked, 0, held(leader))
	gf := holdOne(t, f, app.Name, acked, followerSwitchMax, held(f))
	both := []*caddyProc{leader, f}
	for i, g := range []*pendingGet{gl, gf} {
		if g.answered() {
			t.Fatalf("the request held by %s was answered while paused: %d %q %v", both[i].admin, g.code, g.body, g.err)
		}
	}
	if code, body := leader.api(http.MethodPost, base+"/resume", ""); code != http.StatusOK {
		t.Fatalf("resume through the leader: %d %s", code, body)
	}
	for i, g := range []*pendingGet{gl, gf} {
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("the request held by %s was not answered 30s after the resume", both[i].admin)
		}
		if g.err != nil || g.code != http.StatusOK {
			t.Errorf("the request held by %s: %d %q %v, want 200 after the resume", both[i].admin, g.code, g.body, g.err)
		}
	}
	for _, c := range both {
		deadline := time.Now().Add(10 * time.Second)
		for c.status(app.Name).Paused != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s still shows %s paused 10s after the resume", c.admin, app.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// holdOne sends GETs to app's site on c, one at a time, until held says
// one is held (c holds a request, and this is the only one sent to it), and
// returns it. A GET answered first was sent before c followed the pause:
// see checkLate.
func holdOne(t *testing.T, c *caddyProc, app string, acked time.Time, grace time.Duration, held func() bool) *pendingGet {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := startGet(c.appURL(app, "/"))
		for !g.answered() {
			if held() && !g.answered() {
				t.Logf("%s holds a request sent %s after the pause was acknowledged", c.admin, g.sent.Sub(acked).Round(time.Millisecond))
				return g
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s held no request within 10s of the pause", c.admin)
			}
			time.Sleep(5 * time.Millisecond)
		}
		checkLate(t, c, g, acked, grace)
	}
}

// checkLate fails the test if g, answered while the app was paused, was
// sent later than grace after the pause was acknowledged.
func checkLate(t *testing.T, c *caddyProc, g *pendingGet, acked time.Time, grace time.Duration) {
	t.Helper()
	if late := g.sent.Sub(acked); late > grace {
		t.Fatalf("%s answered a request sent %s after the pause was acknowledged (%d %q %v), want it held",
			c.admin, late.Round(time.Millisecond), g.code, g.body, g.err)
	}
}

// 3. The leader frozen (SIGSTOP) for twice the lease, then continued: the
// other proxy takes over, at a higher epoch, and scales the app while the
// old leader is frozen (so that what the frozen one knew is stale: acting on
// it would stop the new container); once continued it follows the new
// leader, routes to the new container and changes no container; no proxy
// reports an epoch lower than one it reported, nor leads at an epoch lower
// than one already seen. Load through the other proxy fails no request.
func proxiesFreezeLeader(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	s := followers[0]
	before, err := clusterOf(leader.admin, app.Name)
	if err != nil {
		t.Fatal(err)
	}
	web := leader.status(app.Name).Processes[engine.WebProcess]
	start := containerStates(t, app.Name)
	l := startLoad(t, s.appURL(app.Name, "/"), proxiesRPS)
	w := newEpochWatch(app.Name)
	w.record(leader.admin, before)
	w.add(s)
	w.addLease(s)

	pid := leader.pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now()
	thaw := sync.OnceFunc(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	t.Cleanup(thaw)
	took, tookAt := waitLeading(t, s, app.Name, 30*time.Second)
	t.Logf("the other proxy leads %s after the leader froze, epoch %d -> %d", tookAt.Sub(frozenAt).Round(time.Millisecond), before.Epoch, took.Epoch)
	if took.Epoch <= before.Epoch {
		t.Errorf("the takeover's epoch is %d, the frozen leader's was %d: want higher", took.Epoch, before.Epoch)
	}
	waitAdopted(t, s, app.Name, took.Epoch)

	if code, body := s.api(http.MethodPost, "/podswitch/apps/"+app.Name+"/scale?wait=1", fmt.Sprintf(`{"web": %d}`, web+1)); code != http.StatusOK {
		t.Fatalf("scale through the new leader: %d %s", code, body)
	}
	s.waitSettled(app.Name, web+1, time.Minute)
	scaled := containerStates(t, app.Name)
	var added string
	for id := range scaled {
		if _, ok := start[id]; !ok {
			added = id
		}
	}
	if added == "" {
		t.Fatalf("no new container after the scale: %v", stateIDs(scaled))
	}

	// Frozen for twice the lease (the issue: longer than the lease).
	time.Sleep(time.Until(frozenAt.Add(2 * proxiesLease)))
	thaw()
	w.add(leader)
	woke := waitFollowing(t, leader, app.Name, took.This, took.Epoch, 30*time.Second)
	t.Logf("continued after %s, it follows: %v", time.Since(frozenAt).Round(time.Millisecond), woke)
	waitAnsweredBy(t, leader, app.Name, added, 10*time.Second)

	sameContainers(t, "after the frozen leader was continued", scaled, containerStates(t, app.Name))
	var running []string
	for _, c := range scaled {
		if c.Status == "running" {
			running = append(running, c.ID)
		}
	}
	slices.Sort(running)
	if got := webIDs(s.status(app.Name)); !slices.Equal(got, running) {
		t.Errorf("the leader shows web containers %v, Podman runs %v", got, running)
	}
	checkEpochs(t, w.finish())
	l.check(t, proxiesMinRate)
}

// 2. kill -9 of the leader during a deploy (a container of the new release
// created, the deploy not ended): the other proxy takes the lease within the lease time,
// the deploy ends in success, new-first (through the survivor the old
// release answers until the new one does, then only the new one), and no
// request through the survivor fails. The killed proxy is started again.
func proxiesKillLeaderDuringDeploy(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	s := followers[0]
	old := leader.status(app.Name).Release.ID
	start := containerStates(t, app.Name)
	l := startLoad(t, s.appURL(app.Name, "/"), proxiesRPS)
	w := startWatcher(s.appURL(app.Name, "/"))

	code, body := leader.api(http.MethodPost, "/podswitch/apps/"+app.Name+"/deploy", `{"image": "`+imageV2+`"}`)
	if code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("deploy: %d %s", code, body)
	}
	dep := decodeAPIAnswer(t, body).Deployment
	if dep == nil {
		t.Fatalf("deploy: no deployment in %s", body)
	}
	// The deploy has created a container of the new release, which takes
	// LISTEN_DELAY to listen.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, ci := range podmanContainers(t, app.Name) {
			if _, ok := start[ci.ID]; !ok {
				n++
			}
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deploy created no container within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := leader.deployment(app.Name, dep.ID); d.Status.Ended() {
		t.Fatalf("the deploy ended (%s) before the leader could be killed during it", d.Status)
	}
	leader.kill()
	killedAt := time.Now()
	took, tookAt := waitLeading(t, s, app.Name, 30*time.Second)
	after := tookAt.Sub(killedAt)
	t.Logf("the survivor leads %s after the kill (epoch %d)", after.Round(time.Millisecond), took.Epoch)
	if after > proxiesLease+takeoverSlack {
		t.Errorf("the survivor took the lease %s after the kill, want within the lease %s (+%s)", after.Round(time.Millisecond), proxiesLease, takeoverSlack)
	}

	// The survivor starts the interrupted deploy over (a deployment of
	// its own, trigger start); the killed leader's shows as aborted.
	var d engine.Deployment
	for deadline := time.Now().Add(2 * time.Minute); ; {
		st := s.status(app.Name)
		if i := slices.IndexFunc(st.Deployments, func(x engine.Deployment) bool { return x.ID > dep.ID && x.Image == imageV2 }); i >= 0 && st.Deployments[i].Status.Ended() {
			d = st.Deployments[i]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivor did not finish the interrupted deploy within 2m: %+v", st.Deployments)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d.Status != engine.StatusSuccess || d.Trigger != "start" {
		t.Errorf("the deploy started over ended %s (%s), trigger %q, after the takeover; want success, trigger start", d.Status, d.Error, d.Trigger)
	}
	if old := s.deployment(app.Name, dep.ID); old.Status != engine.StatusAborted {
		t.Errorf("the killed leader's deployment %d shows %s on the survivor, want aborted", dep.ID, old.Status)
	}
	t.Logf("deployment %d (trigger %s) ended %s; the killed leader's, %d, shows aborted", d.ID, d.Trigger, d.Status, dep.ID)
	waitOnlyRelease(t, app.Name, old, app.Web, time.Minute)
	l.waitVersion(t, "v2", 30*time.Second)
	l.waitAnswers(t, proxiesRPS, 10*time.Second)
	changes := w.finish()
	l.check(t, proxiesMinRate)
	if !slices.Equal(changes, []string{"v1", "v2"}) {
		t.Errorf("answers through the survivor went %v, want v1 then v2: the old release serves until the new one is ready", changes)
	}

	leader.launch()
	waitServes(t, leader, app.Name, "v2", 30*time.Second)
	leaderOf(t, ps, app.Name)
}

// 6. Redis stopped for 10s: both proxies keep routing (load through each
// with no failure, answers during the outage), no container changes, an
// operation (a deploy of the image it does not serve) sent to either is refused with a 5xx that says
// the shared storage is unavailable, answered while Redis is still down, and
// is not carried out once it is back; then there is a leader again and an
// operation (a scale down) through the follower goes through.
func proxiesStorageOutage(t *testing.T, ps []*caddyProc, app appCfg) {
	leader, followers := leaderOf(t, ps, app.Name)
	f := followers[0]
	base := "/podswitch/apps/" + app.Name
	st := leader.status(app.Name)
	if st.Release == nil {
		t.Fatalf("%s serves no release", app.Name)
	}
	web, serving := st.Processes[engine.WebProcess], st.Release.Image
	if web < 2 {
		t.Fatalf("%s runs %d web containers, the scenario scales down from 2 or more", app.Name, web)
	}
	refusedImage := imageV1
	if serving == imageV1 {
		refusedImage = imageV2
	}
	before := containerStates(t, app.Name)
	var loads []*load
	for _, c := range []*caddyProc{leader, f} {
		loads = append(loads, startLoad(t, c.appURL(app.Name, "/"), proxiesRPS))
	}

	redisStop(t)
	stoppedAt := time.Now()
	end := stoppedAt.Add(storageOutage)
	type answer struct {
		who  string
		code int
		body string
		err  error
	}
	answers := make(chan answer, 2)
	refused := `{"image": "` + refusedImage + `"}`
	for _, c := range []*caddyProc{leader, f} {
		go func() {
			code, body, err := adminRequest(c.admin, http.MethodPost, base+"/deploy", refused, 2*storageOutage)
			answers <- answer{c.admin, code, body, err}
		}()
	}
	for _, l := range loads {
		l.waitAnswers(t, 2*proxiesRPS, time.Until(end))
	}
	for range 2 {
		select {
		case a := <-answers:
			t.Logf("an operation through %s while redis is stopped: %d %s %v", a.who, a.code, strings.TrimSpace(a.body), a.err)
			if a.err != nil || a.code < 500 || !strings.Contains(a.body, "shared storage unavailable") {
				t.Errorf("an operation through %s while redis is stopped: %d %q %v, want a 5xx saying \"shared storage unavailable\"", a.who, a.code, a.body, a.err)
			}
		case <-time.After(time.Until(end)):
			t.Errorf("an operation was not answered within the %s redis was stopped", storageOutage)
		}
	}
	sameContainers(t, "while redis is stopped", before, containerStates(t, app.Name))
	// The outage lasts what the issue says.
	time.Sleep(time.Until(end))
	redisStart(t)
	t.Logf("redis continued after %s", time.Since(stoppedAt).Round(time.Millisecond))

	leader, followers = leaderOf(t, ps, app.Name)
	f = followers[0]
	now, err := clusterOf(leader.admin, app.Name)
	if err != nil {
		t.Fatal(err)
	}
	waitAdopted(t, leader, app.Name, now.Epoch)
	if code, body := f.api(http.MethodPost, base+"/scale?wait=1", fmt.Sprintf(`{"web": %d}`, web-1)); code != http.StatusOK {
		t.Fatalf("scale through the follower after redis came back: %d %s", code, body)
	}
	st = leader.waitSettled(app.Name, web-1, time.Minute)
	for _, d := range st.Deployments {
		if d.StartedAt.After(stoppedAt) {
			t.Errorf("deployment %d (%s of %s, %s) started after redis was stopped: the refused deploy was carried out", d.ID, d.Kind, d.Image, d.Status)
		}
	}
	if st.Release == nil || st.Release.Image != serving {
		t.Errorf("%s serves %+v after the outage, served %s before", app.Name, st.Release, serving)
	}
	for _, l := range loads {
		l.check(t, proxiesMinRate)
	}
}

// 5. Both proxies killed (kill -9) and started again: a leader again for
// each app, both serve, and no container was restarted or replaced.
func proxiesRestartAll(t *testing.T, ps []*caddyProc, apps ...appCfg) {
	before := map[string]map[string]ctrState{}
	for _, a := range apps {
		before[a.Name] = containerStates(t, a.Name)
	}
	for _, c := range ps {
		c.kill()
	}
	for _, c := range ps {
		c.launch()
	}
	for _, a := range apps {
		leader, _ := leaderOf(t, ps, a.Name)
		running := 0
		for _, c := range before[a.Name] {
			if c.Status == "running" {
				running++
			}
		}
		leader.waitSettled(a.Name, running, time.Minute)
		for _, c := range ps {
			waitServes(t, c, a.Name, "", 30*time.Second)
		}
		sameContainers(t, "after both proxies were killed and started again", before[a.Name], containerStates(t, a.Name))
	}
}
