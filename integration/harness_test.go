// Package integration tests podswitch end to end: a real Podman service, real
// containers of the test app in testapp/, a real Caddy process built from
// cmd/podswitch and real HTTP traffic. scripts/setup.sh (run by `make test`)
// installs and starts what they need.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/podman"
)

const (
	buildTags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"
	imageV1   = "localhost/podswitch-testapp:v1"
	imageV2   = "localhost/podswitch-testapp:v2"
)

var (
	caddyBin string
	rt       *podman.Runtime
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "podswitch-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	// The Caddy under test is built with the race detector unless
	// PODSWITCH_TEST_RACE=0, so that the request path is checked under
	// real load.
	caddyBin = filepath.Join(dir, "caddy")
	args := []string{"build", "-tags", buildTags, "-o", caddyBin}
	if os.Getenv("PODSWITCH_TEST_RACE") != "0" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/podswitch")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building caddy:", err)
		return 1
	}

	rt = podman.New("")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.Ping(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "integration: no Podman service at %s (run `make setup` or scripts/setup.sh first): %v\n", rt.URI(), err)
		return 1
	}
	for _, img := range []string{imageV1, imageV2} {
		if out, err := exec.Command("podman", "--remote", "--url", rt.URI(), "image", "exists", img).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: image %s missing (scripts/setup.sh builds it): %v %s\n", img, err, out)
			return 1
		}
	}
	return m.Run()
}

// appCfg is one app of a test Caddyfile.
type appCfg struct {
	Name  string
	Image string
	Web   int
	// Lines are more subdirectives of the app block, verbatim.
	Lines []string
}

func (a appCfg) block() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\t\tapp %s {\n\t\t\timage %s\n\t\t\tweb %d\n", a.Name, a.Image, a.Web)
	for _, l := range a.Lines {
		fmt.Fprintf(&b, "\t\t\t%s\n", l)
	}
	b.WriteString("\t\t}\n")
	return b.String()
}

// caddyProc is a Caddy process under test.
type caddyProc struct {
	t     testing.TB
	dir   string
	admin string // host:port
	http  string // host:port of the first app's site
	cmd   *exec.Cmd
	apps  []string
	done  chan struct{}
	opts  caddyOpts
	// sites are the host:port of each app that has a site; the first app
	// always has one, at http.
	sites map[string]string
	// extra is appended to the Caddyfile (more sites).
	extra string
}

// caddyOpts shape the Caddyfile of a test.
type caddyOpts struct {
	// proxyLines are subdirectives of each site's podswitch block (or of
	// its reverse_proxy block, with dynamic).
	proxyLines []string
	// dynamic makes the sites use `reverse_proxy { dynamic podswitch
	// <app> }` instead of the podswitch directive the README documents.
	dynamic bool
	// siteApps are more apps that get a site of their own.
	siteApps []string
	// global are more lines of the global options block.
	global []string
	// env are more variables of Caddy's environment (NAME=value).
	env []string
	// podswitch, when set, are the lines of the podswitch option before
	// its apps, instead of `podman <the test service>` (host blocks).
	podswitch []string
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// uniqueName returns an app name no other test run uses, so that leftovers
// of an earlier run can never be adopted.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%x", prefix, time.Now().UnixNano()&0xffffffff)
}

// startCaddy runs Caddy with the apps given. The apps' containers are
// removed when the test ends.
func startCaddy(t testing.TB, apps ...appCfg) *caddyProc {
	t.Helper()
	return startCaddyWith(t, nil, apps...)
}

// startCaddyWith is startCaddy with more subdirectives of the podswitch
// site block.
func startCaddyWith(t testing.TB, proxyLines []string, apps ...appCfg) *caddyProc {
	t.Helper()
	return startCaddyOpts(t, caddyOpts{proxyLines: proxyLines}, apps...)
}

// startCaddyOpts is startCaddy with the Caddyfile shaped by opts.
func startCaddyOpts(t testing.TB, opts caddyOpts, apps ...appCfg) *caddyProc {
	t.Helper()
	c := newCaddyProc(t, opts, apps...)
	c.start(apps...)
	return c
}

// newCaddyProc prepares a Caddy process without starting it.
func newCaddyProc(t testing.TB, opts caddyOpts, apps ...appCfg) *caddyProc {
	t.Helper()
	c := &caddyProc{
		opts:  opts,
		t:     t,
		dir:   t.TempDir(),
		admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		http:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		sites: map[string]string{},
	}
	for _, a := range apps {
		c.apps = append(c.apps, a.Name)
	}
	if len(apps) > 0 {
		c.sites[apps[0].Name] = c.http
	}
	for _, app := range opts.siteApps {
		c.sites[app] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	t.Cleanup(func() { c.cleanup() })
	return c
}

func (c *caddyProc) caddyfile(apps ...appCfg) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin %s\n", c.admin)
	for _, l := range c.opts.global {
		fmt.Fprintf(&b, "\t%s\n", l)
	}
	if c.opts.podswitch != nil {
		b.WriteString("\tpodswitch {\n")
		for _, l := range c.opts.podswitch {
			fmt.Fprintf(&b, "\t\t%s\n", l)
		}
	} else {
		fmt.Fprintf(&b, "\tpodswitch {\n\t\tpodman %s\n", rt.URI())
	}
	for _, a := range apps {
		b.WriteString(a.block())
	}
	b.WriteString("\t}\n}\n\n")
	for _, a := range apps {
		addr, ok := c.sites[a.Name]
		if !ok {
			continue
		}
		if c.opts.dynamic {
			fmt.Fprintf(&b, "http://%s {\n\treverse_proxy {\n\t\tdynamic podswitch %s\n", addr, a.Name)
		} else {
			fmt.Fprintf(&b, "http://%s {\n\tpodswitch %s {\n", addr, a.Name)
		}
		for _, l := range c.opts.proxyLines {
			fmt.Fprintf(&b, "\t\t%s\n", l)
		}
		b.WriteString("\t}\n}\n")
	}
	b.WriteString(c.extra)
	return b.String()
}

// appURL returns the URL of path on app's site.
func (c *caddyProc) appURL(app, path string) string {
	addr, ok := c.sites[app]
	if !ok {
		c.t.Fatalf("app %s has no site", app)
	}
	return "http://" + addr + path
}

func (c *caddyProc) start(apps ...appCfg) {
	c.t.Helper()
	path := filepath.Join(c.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(c.caddyfile(apps...)), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.launch()
}

// launch runs Caddy on the Caddyfile in its folder and waits for the admin
// endpoint.
func (c *caddyProc) launch() {
	t := c.t
	t.Helper()
	path := filepath.Join(c.dir, "Caddyfile")
	logf, err := os.OpenFile(filepath.Join(c.dir, "caddy.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+c.dir, "XDG_CONFIG_HOME="+c.dir, "HOME="+c.dir)
	cmd.Env = append(cmd.Env, c.opts.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.cmd = cmd
	done := make(chan struct{})
	c.done = done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	// Up once the podswitch API lists the config's apps: the engine
	// follows a config once Caddy runs it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.admin + "/podswitch/apps")
		if err == nil {
			var apps []engine.AppStatus
			derr := json.NewDecoder(resp.Body).Decode(&apps)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && derr == nil && len(apps) >= c.configuredApps() {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("caddy exited at start:\n%s", c.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy admin did not answer: %v\n%s", err, c.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// configuredApps returns how many apps the Caddyfile in c's folder has.
func (c *caddyProc) configuredApps() int {
	b, _ := os.ReadFile(filepath.Join(c.dir, "Caddyfile"))
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "app ") {
			n++
		}
	}
	return n
}

// kill ends Caddy with SIGKILL, as a crash would.
func (c *caddyProc) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	c.cmd = nil
}

func (c *caddyProc) logs() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "caddy.log"))
	// Keep the podswitch lines and errors; the rest is noise.
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "podswitch") || strings.Contains(l, `"error"`) || strings.Contains(l, "WARNING: DATA RACE") || !strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// stop ends Caddy the way `caddy stop` does; containers keep running.
func (c *caddyProc) stop() {
	if c.cmd == nil {
		return
	}
	resp, err := http.Post("http://"+c.admin+"/stop", "", nil)
	if err == nil {
		resp.Body.Close()
	}
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.cmd = nil
}

func (c *caddyProc) cleanup() {
	c.stop()
	b, _ := os.ReadFile(filepath.Join(c.dir, "caddy.log"))
	if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
		c.t.Errorf("the race detector fired in caddy:\n%s", c.logs())
	} else if c.t.Failed() {
		c.t.Logf("caddy log:\n%s", c.logs())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, app := range c.apps {
		list, _ := rt.List(ctx, app)
		for _, ci := range list {
			_ = rt.Remove(ctx, ci.ID)
		}
	}
}

// reload loads a new Caddyfile through the admin API, as `caddy reload` does.
func (c *caddyProc) reload(apps ...appCfg) {
	c.t.Helper()
	for _, a := range apps {
		if !contains(c.apps, a.Name) {
			c.apps = append(c.apps, a.Name)
		}
	}
	cf := c.caddyfile(apps...)
	code, body := c.post("/load", "text/caddyfile", cf)
	if code != http.StatusOK {
		c.t.Fatalf("reload: %d %s", code, body)
	}
	// As `caddy reload` of an edited file: the next start reads it.
	if err := os.WriteFile(filepath.Join(c.dir, "Caddyfile"), []byte(cf), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (c *caddyProc) post(path, ctype, body string) (int, string) {
	c.t.Helper()
	return c.adminDo(http.MethodPost, path, ctype, body)
}

// adminDo sends one request to Caddy's admin endpoint and returns status
// and body.
func (c *caddyProc) adminDo(method, path, ctype, body string) (int, string) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+c.admin+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// status returns GET /podswitch/apps/{app}.
func (c *caddyProc) status(app string) engine.AppStatus {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/podswitch/apps/" + app)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("status of %s: %d %s", app, resp.StatusCode, b)
	}
	var st engine.AppStatus
	if err := json.Unmarshal(b, &st); err != nil {
		c.t.Fatalf("status of %s: %v in %s", app, err, b)
	}
	return st
}

// waitDeployment waits until the newest deployment of app that runs image
// has ended, and returns it.
func (c *caddyProc) waitDeployment(app, image string, timeout time.Duration) engine.Deployment {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.status(app)
		for _, d := range st.Deployments {
			if d.Image == image {
				if d.Status.Ended() {
					return d
				}
				break
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no ended deployment of %s for %s after %s: %+v", image, app, timeout, st.Deployments)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustDeploy waits for the deployment of image to end and fails the test
// unless it succeeded.
func (c *caddyProc) mustDeploy(app, image string, timeout time.Duration) engine.Deployment {
	c.t.Helper()
	d := c.waitDeployment(app, image, timeout)
	if d.Status != engine.StatusSuccess {
		c.t.Fatalf("deploy of %s to %s: %s %s", image, app, d.Status, d.Error)
	}
	return d
}

// assertReleaseGone fails the test if Podman still has a container of
// release.
func assertReleaseGone(t *testing.T, app, release string) {
	t.Helper()
	for _, ci := range podmanContainers(t, app) {
		if ci.Labels[engine.LabelRelease] == release {
			t.Errorf("container %s of release %s is still there", ci.Name, release)
		}
	}
}

// waitReady waits until app serves with want ready web containers and no
// container in any other state.
func (c *caddyProc) waitSettled(app string, want int, timeout time.Duration) engine.AppStatus {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.status(app)
		ready, other := 0, 0
		for _, ct := range st.Containers {
			if ct.State == engine.StateReady && ct.Process == engine.WebProcess {
				ready++
			} else if ct.Process == engine.WebProcess {
				other++
			}
		}
		if ready == want && other == 0 {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("app %s did not settle at %d ready web containers: %+v", app, want, st.Containers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *caddyProc) url(path string) string { return "http://" + c.http + path }

// webIDs returns the sorted IDs of app's web containers as Caddy reports.
func webIDs(st engine.AppStatus) []string {
	var ids []string
	for _, c := range st.Containers {
		if c.Process == engine.WebProcess {
			ids = append(ids, c.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// podmanContainers lists app's containers as Podman has them.
func podmanContainers(t *testing.T, app string) []engine.ContainerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	list, err := rt.List(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// load sends GET requests at a constant rate and counts what failed: a
// transport error or any status but 200.
type load struct {
	ok, failed atomic.Int64
	// dropped counts requests Caddy's config reload dropped: see
	// reloadDrop.
	dropped  atomic.Int64
	mu       sync.Mutex
	errs     []string
	versions map[string]int
	// hosts counts the answers of each container (the test app's host=,
	// its short id).
	hosts   map[string]int
	stop    chan struct{}
	wg      sync.WaitGroup
	start   time.Time
	elapsed time.Duration
	// allowDrops is how many requests dropped by Caddy's config reload
	// (see reloadDrop) the test lets pass: none unless it reloads.
	allowDrops int64
	// latencies of the requests that got an answer, for percentiles.
	lat []time.Duration
	// failStarts are when the failed requests were sent.
	failStarts []time.Time
}

func startLoad(t *testing.T, url string, rps int) *load {
	t.Helper()
	l := &load{stop: make(chan struct{}), versions: map[string]int{}, hosts: map[string]int{}}
	// A fixed pool of connections, opened before the load starts, as
	// browsers and HTTP clients keep them. Go's http.Server drops (EOF) a
	// request it reads on a brand-new connection after its Shutdown began,
	// which a Caddy config reload does to the old server: a client that
	// opens connections in bursts at the moment of a reload can see that,
	// whatever the proxy behind does. See README (limits).
	const workers = 128
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers},
	}
	var warm sync.WaitGroup
	for range workers {
		warm.Go(func() {
			if resp, err := client.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	warm.Wait()
	l.start = time.Now()
	tokens := make(chan struct{}, rps)
	l.wg.Go(func() {
		defer close(tokens)
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
				select {
				case tokens <- struct{}{}:
				default: // the workers are behind: the rate shows it
				}
			}
		}
	})
	for range workers {
		l.wg.Go(func() {
			for range tokens {
				l.one(client, url)
			}
		})
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// tracedGet does a GET and says whether the connection it last used was a
// reused one.
func tracedGet(client *http.Client, url string) (resp *http.Response, reused bool, err error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	}))
	resp, err = client.Do(req)
	return resp, reused, err
}

func (l *load) one(client *http.Client, url string) {
	t0 := time.Now()
	defer func() {
		d := time.Since(t0)
		l.mu.Lock()
		l.lat = append(l.lat, d)
		l.mu.Unlock()
	}()
	resp, reused, err := tracedGet(client, url)
	if err != nil {
		if reloadDrop(err, reused) {
			l.dropped.Add(1)
			return
		}
		l.failSent(t0, err.Error())
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		l.failSent(t0, err.Error())
		return
	}
	if resp.StatusCode != http.StatusOK {
		l.failSent(t0, fmt.Sprintf("status %d: %s", resp.StatusCode, b))
		return
	}
	l.ok.Add(1)
	v, rest, _ := strings.Cut(strings.TrimPrefix(string(b), "version="), " ")
	h := strings.TrimSpace(strings.TrimPrefix(rest, "host="))
	l.mu.Lock()
	l.versions[v]++
	l.hosts[h]++
	l.mu.Unlock()
}

// failSent counts a request sent at sent that failed.
func (l *load) failSent(sent time.Time, msg string) {
	l.mu.Lock()
	l.failStarts = append(l.failStarts, sent)
	l.mu.Unlock()
	l.fail(msg)
}

func (l *load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+msg)
	}
	l.mu.Unlock()
}

// reloadDrop tells the one failure that is not podswitch's: Go's
// http.Server, once its Shutdown has begun (a Caddy config reload does that
// to the old server), closes a connection whose request it has just read,
// without an answer. It can only hit a brand-new connection the old server
// had accepted (a reused one gets an answer or is retried by the client),
// and it shows as io.EOF with no response. Anything podswitch gets wrong
// behind Caddy shows as a 502/503 instead, which still fails the test. The
// count is logged; see README (limits).
func reloadDrop(err error, reused bool) bool {
	return !reused && errors.Is(err, io.EOF)
}

// finish stops the load and returns requests sent and their rate.
func (l *load) finish() (total int64, rate float64) {
	select {
	case <-l.stop:
	default:
		// The rate is over the time requests were sent, not the time the
		// last answers took.
		l.elapsed = time.Since(l.start)
		close(l.stop)
		l.wg.Wait()
	}
	total = l.ok.Load() + l.failed.Load() + l.dropped.Load()
	return total, float64(total) / l.elapsed.Seconds()
}

// check stops the load and fails the test if any request failed or the load
// was not sent at least at minRate.
func (l *load) check(t *testing.T, minRate float64) {
	t.Helper()
	total, rate := l.finish()
	t.Logf("load: %d requests in %s (%.0f/s), %d failed, %d dropped by the reload race, versions %v, latency p50 %s p99 %s max %s",
		total, l.elapsed.Round(time.Millisecond), rate, l.failed.Load(), l.dropped.Load(), l.versions,
		l.percentile(50), l.percentile(99), l.percentile(100))
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed; first: %s", n, total, strings.Join(l.errs, "\n"))
	}
	if n := l.dropped.Load(); n > l.allowDrops {
		t.Errorf("%d requests dropped on fresh connections (EOF), the test allows %d", n, l.allowDrops)
	}
	if rate < minRate {
		t.Errorf("load ran at %.0f requests/s, under the %.0f/s the test needs", rate, minRate)
	}
}

// waitVersion waits until the load got an answer of version v (the test
// app's version=), or fails the test after timeout.
func (l *load) waitVersion(t *testing.T, v string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		n := l.versions[v]
		l.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the load got no answer of %s within %s", v, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAnswers waits until the load got n more answers than when it was
// called (of any status), or fails the test after timeout: a change made
// just before is seen by that much load.
func (l *load) waitAnswers(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	from := l.ok.Load() + l.failed.Load()
	deadline := time.Now().Add(timeout)
	for l.ok.Load()+l.failed.Load() < from+n {
		if time.Now().After(deadline) {
			t.Fatalf("the load got fewer than %d answers within %s", n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// percentile returns the p-th percentile of the latencies seen.
func (l *load) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lat) == 0 {
		return 0
	}
	s := slices.Clone(l.lat)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i].Round(time.Millisecond)
}

// watcher sends one request after another and records each change of the
// version that answers, in order.
type watcher struct {
	mu      sync.Mutex
	changes []string
	errs    []string
	stop    chan struct{}
	done    chan struct{}
}

func startWatcher(url string) *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			resp, reused, err := tracedGet(client, url)
			if err != nil {
				w.mu.Lock()
				if !reloadDrop(err, reused) {
					w.errs = append(w.errs, err.Error())
				}
				w.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			v, _, _ := strings.Cut(strings.TrimPrefix(string(b), "version="), " ")
			if resp.StatusCode != http.StatusOK {
				v = fmt.Sprintf("status-%d", resp.StatusCode)
			}
			w.mu.Lock()
			if n := len(w.changes); n == 0 || w.changes[n-1] != v {
				w.changes = append(w.changes, v)
			}
			w.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *watcher) finish() []string {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.changes...)
}

// get does one GET and returns status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// execPodman runs the podman command line against the test's service.
func execPodman(args ...string) ([]byte, error) {
	return exec.Command("podman", append([]string{"--remote", "--url", rt.URI()}, args...)...).CombinedOutput()
}

// podmanCLI runs the podman command line against the test's service.
func podmanCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", append([]string{"--remote", "--url", rt.URI()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// inspect asks Podman about one container.
func inspect(t *testing.T, id string) (engine.ContainerInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return rt.Inspect(ctx, id)
}

func mustRead(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// rawLogs returns everything Caddy logged.
func (c *caddyProc) rawLogs() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "caddy.log"))
	return string(b)
}

// echoConn is an upgraded connection to the test app's /echo, through
// Caddy: it stands for a WebSocket.
type echoConn struct {
	conn net.Conn
	rd   *bufio.Reader
}

// dialEcho opens an upgraded connection to /echo at addr (host:port).
func dialEcho(t *testing.T, addr string) *echoConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", addr)
	rd := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade: %d %s", resp.StatusCode, b)
	}
	return &echoConn{conn: conn, rd: rd}
}

// echo sends line and returns the answer: "<container hostname> <line>".
func (e *echoConn) echo(line string) (string, error) {
	_ = e.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(e.conn, "%s\n", line); err != nil {
		return "", err
	}
	s, err := e.rd.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// host returns the hostname of the container at the other end (Podman
// names it after the container's short id).
func (e *echoConn) host(t *testing.T) string {
	t.Helper()
	s, err := e.echo("hello")
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	h, _, _ := strings.Cut(s, " ")
	return h
}

// pid returns the process id of the running Caddy.
func (c *caddyProc) pid() int {
	if c.cmd == nil {
		c.t.Fatal("caddy is not running")
	}
	return c.cmd.Process.Pid
}

// unixConns counts the unix-socket connections process pid has open (for
// Caddy: to the Podman service), as `ss -xp` shows them.
func unixConns(t *testing.T, pid int) int {
	t.Helper()
	out, err := exec.Command("ss", "-xpH").Output()
	if err != nil {
		t.Fatalf("ss -xpH: %v", err)
	}
	n := 0
	needle := fmt.Sprintf("pid=%d,", pid)
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, needle) {
			n++
		}
	}
	return n
}

// servicePattern matches the command line of the tests' Podman API
// service (scripts/setup.sh starts it), and not those of the extra hosts.
func servicePattern() string {
	return "podman system service .*" + regexp.QuoteMeta(rt.URI()) + "$"
}

// podmanServicePID returns the process id of the Podman API service.
func podmanServicePID(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("pgrep", "-of", servicePattern()).Output()
	if err != nil {
		t.Fatalf("finding the podman service: %v", err)
	}
	var pid int
	if _, err := fmt.Sscan(string(out), &pid); err != nil {
		t.Fatalf("podman service pid %q: %v", out, err)
	}
	return pid
}
