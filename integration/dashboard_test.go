package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/podswitch/podswitch/internal/browsertest"
	"github.com/podswitch/podswitch/internal/engine"
)

// The dashboard, as docs/dashboard.md mounts it (under handle_path, behind
// basic_auth, next to the app it lists), driven by a real headless Chromium
// against a real Caddy and Podman: the overview lists the apps; an API
// deploy shows on the open page, as starting then success with the new
// image, without a reload; a failed deploy shows its status; the timeline
// has one bar per container and the switch; a crash shows; the page follows
// across a config reload (which ends its stream instead of waiting for
// it), a stop (which does not wait for it either) and a restart.
// Screenshots go to $PODSWITCH_SCREENSHOTS or /tmp/podswitch-screenshots.
func TestDashboard(t *testing.T) {
	browsertest.Path(t)
	app := appCfg{Name: uniqueName("dash"), Image: imageV1, Web: 2, Lines: []string{
		"env LISTEN_DELAY 1s", "env HOOK_DELAY 500ms", "postdeploy /app hook",
		"process worker 1 /app worker", "worker_ready_time 500ms", "drain_timeout 2s", "stop_timeout 5s"}}
	bad := appCfg{Name: uniqueName("dashbad"), Image: imageV1, Web: 1, Lines: []string{
		"env MODE never-listen", "boot_timeout 3s", "stop_timeout 2s",
		// Its timed-out deployments stay as they ended: none is tried again.
		"restart_attempts 0"}}

	const user, password = "ops", "correct horse battery staple"
	out, err := exec.Command(caddyBin, "hash-password", "--plaintext", password).Output()
	if err != nil {
		t.Fatalf("caddy hash-password: %v", err)
	}
	hash := strings.TrimSpace(string(out))
	c := newCaddyProc(t, caddyOpts{}, app, bad)
	dash := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	root := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.extra = fmt.Sprintf(`
http://%s {
	redir /podswitch /podswitch/
	handle_path /podswitch/* {
		basic_auth {
			%s %s
		}
		podswitch_dashboard
	}
	handle {
		podswitch %s
	}
}

http://%s {
	podswitch_dashboard
}
`, dash, user, hash, app.Name, root)
	c.start(app, bad)
	c.mustDeploy(app.Name, imageV1, 90*time.Second)
	if d := c.waitDeployment(bad.Name, imageV1, 60*time.Second); d.Status != engine.StatusTimeoutError {
		t.Fatalf("the never-listening app's deployment: %s %s", d.Status, d.Error)
	}
	c.waitSettled(app.Name, 2, 30*time.Second)

	// basic_auth guards it; the site's other paths still go to the app; at
	// a site root it needs no prefix.
	base := "http://" + dash + "/podswitch/"
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	weight := 0
	for _, p := range []string{"", "assets/app.js", "assets/app.css", "api/apps"} {
		if code, _, _ := httpGet(t, base+p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", base+p, code)
		}
		code, h, body := httpGet(t, base+p, auth)
		if code != http.StatusOK {
			t.Fatalf("GET %s with credentials: %d %s", base+p, code, body)
		}
		if p == "api/apps" {
			for _, name := range []string{app.Name, bad.Name} {
				if !strings.Contains(body, `"name":"`+name+`"`) {
					t.Errorf("the overview lacks app %s: %s", name, body)
				}
			}
			continue
		}
		weight += len(body)
		t.Logf("GET %s: %s, %d bytes", base+p, h.Get("Content-Type"), len(body))
	}
	t.Logf("page weight as served through Caddy (HTML+JS+CSS, uncompressed): %d bytes", weight)
	if code, body := get(t, "http://"+dash+"/"); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("GET / of the dashboard's site: %d %q, want the app", code, body)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noRedirect.Get("http://" + dash + "/podswitch"); err != nil || resp.Header.Get("Location") != "/podswitch/" {
		t.Errorf("GET /podswitch: %v %v, want a redirect to /podswitch/", err, resp)
	} else {
		resp.Body.Close()
	}
	if code, h, _ := httpGet(t, "http://"+root+"/", ""); code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("GET / of the root-mounted dashboard: %d %s", code, h.Get("Content-Type"))
	}
	if code, _, body := httpGet(t, "http://"+root+"/api/apps/"+app.Name, ""); code != http.StatusOK || !strings.Contains(body, imageV1) {
		t.Errorf("GET /api/apps/%s of the root-mounted dashboard: %d %s", app.Name, code, body)
	}

	shots := browsertest.ScreenshotDir(t)
	ctx := browsertest.New(t, 1280, 900)
	b := &page_{t: t, ctx: ctx}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
	// Script errors are kept for the end of the test.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__errors = []; addEventListener('error', e => window.__errors.push(String(e.message)));`}); err != nil {
		t.Fatal(err)
	}

	// The overview lists both apps: the one serving v1, and the failed one.
	b.navigate(base)
	row := func(name string) string { return fmt.Sprintf(`document.querySelector('li.app[data-app=%q]')`, name) }
	b.wait(fmt.Sprintf(`%s && %s`, row(app.Name), row(bad.Name)), 30*time.Second)
	b.wait(fmt.Sprintf(`%s.dataset.level === 'ok' && %[1]s.querySelector('.a-rel [data-image]').dataset.image === %q && %[1]s.querySelector('.a-last [data-status]').dataset.status === 'success'`,
		row(app.Name), imageV1), 10*time.Second)
	b.wait(fmt.Sprintf(`%s.dataset.level === 'bad' && %[1]s.querySelector('.a-last [data-status]').dataset.status === 'timeout-error' && %[1]s.querySelector('.attn').innerText.includes('timeout-error')`,
		row(bad.Name)), 10*time.Second)
	b.wait(`document.getElementById('live').dataset.live === 'on'`, 10*time.Second)
	b.screenshot(filepath.Join(shots, "overview.png"), false)

	// An API deploy shows on the open page, without a reload: starting,
	// then success with the new image.
	b.eval(`window.__marker = 'same page'; window.__seen = {};
		window.__record = () => { for (const li of document.querySelectorAll('li.app')) {
			const s = li.querySelector('.a-last [data-last]'); if (!s) continue;
			const v = s.dataset.image + ' ' + s.querySelector('[data-status]').dataset.status;
			const seen = window.__seen[li.dataset.app] = window.__seen[li.dataset.app] || [];
			if (seen[seen.length - 1] !== v) seen.push(v); } };
		new MutationObserver(window.__record).observe(document.getElementById('view'), {childList: true, subtree: true});
		window.__record(); true`)
	t0 := time.Now()
	if code, body := c.post("/podswitch/apps/"+app.Name+"/deploy", "application/json", `{"image": "`+imageV2+`"}`); code != http.StatusAccepted {
		t.Fatalf("deploy: %d %s", code, body)
	}
	b.wait(fmt.Sprintf(`(window.__seen[%q] || []).includes(%q)`, app.Name, imageV2+" starting"), 30*time.Second)
	t.Logf("the deploy showed as starting on the page %s after the API answered", time.Since(t0).Round(time.Millisecond))
	b.wait(fmt.Sprintf(`(window.__seen[%q] || []).includes(%q) && %s.querySelector('.a-rel [data-image]').dataset.image === %q`,
		app.Name, imageV2+" success", row(app.Name), imageV2), 90*time.Second)
	seen := b.strings(fmt.Sprintf(`window.__seen[%q]`, app.Name))
	if i, j := slices.Index(seen, imageV2+" starting"), slices.Index(seen, imageV2+" success"); i < 0 || j < i {
		t.Errorf("the page showed %v: want %s starting, then success", seen, imageV2)
	}

	// A failed deploy shows its status, live.
	if code, body := c.post("/podswitch/apps/"+bad.Name+"/deploy", "application/json", `{"image": "`+imageV2+`"}`); code != http.StatusAccepted {
		t.Fatalf("deploy to %s: %d %s", bad.Name, code, body)
	}
	b.wait(fmt.Sprintf(`(window.__seen[%q] || []).includes(%q)`, bad.Name, imageV2+" timeout-error"), 60*time.Second)
	seen = b.strings(fmt.Sprintf(`window.__seen[%q]`, bad.Name))
	if i, j := slices.Index(seen, imageV2+" starting"), slices.Index(seen, imageV2+" timeout-error"); i < 0 || j < i {
		t.Errorf("the page showed %v for the failing app: want %s starting, then timeout-error", seen, imageV2)
	}
	if m := b.str(`window.__marker`); m != "same page" {
		t.Errorf("the page was reloaded (marker %q)", m)
	}

	// The app's page: its containers, the history and the timeline of the
	// deploy, once the containers it replaced are gone.
	dep := c.mustDeploy(app.Name, imageV2, 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for dep.RetiredAt.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("the old containers of deployment %d were not stopped: %+v", dep.ID, dep.Containers)
		}
		time.Sleep(100 * time.Millisecond)
		dep = c.deployment(app.Name, dep.ID)
	}
	st := c.waitSettled(app.Name, 2, 30*time.Second)
	b.click(fmt.Sprintf(`li.app[data-app=%q] .a-name a`, app.Name))
	b.wait(fmt.Sprintf(`location.hash === '#/apps/%s' && document.querySelector('.app-head h1')?.innerText === %[1]q`, app.Name), 10*time.Second)
	for _, ct := range st.Containers {
		b.wait(fmt.Sprintf(`(r => r && r.dataset.state === %q && r.innerText.includes(%q) && r.innerText.includes(%q))(document.querySelector('.ctrs tr[data-container=%q]'))`,
			ct.State, string(ct.State), ct.Addr, ct.ID), 10*time.Second)
	}
	b.wait(fmt.Sprintf(`document.querySelector('#tl-title')?.dataset.deployment === '%d' && document.querySelector('.deps tr.sel')?.dataset.deployment === '%[1]d'`, dep.ID), 10*time.Second)
	var newIDs, oldIDs []string
	for _, ct := range dep.Containers {
		if ct.Role == "new" {
			newIDs = append(newIDs, ct.ID)
		} else {
			oldIDs = append(oldIDs, ct.ID)
		}
	}
	b.wait(fmt.Sprintf(`document.querySelectorAll('#timeline .tl-row[data-role=old] .tl-note').length === %d && [...document.querySelectorAll('#timeline .tl-row[data-role=old] .tl-note')].every(n => n.innerText.includes('stopped in') && !n.innerText.includes('…'))`, len(oldIDs)), 10*time.Second)
	gotNew := b.strings(`[...document.querySelectorAll('#timeline .tl-row[data-role=new]')].map(r => r.dataset.container)`)
	gotOld := b.strings(`[...document.querySelectorAll('#timeline .tl-row[data-role=old]')].map(r => r.dataset.container)`)
	slices.Sort(gotNew)
	slices.Sort(gotOld)
	slices.Sort(newIDs)
	slices.Sort(oldIDs)
	if !slices.Equal(gotNew, newIDs) || !slices.Equal(gotOld, oldIDs) || len(newIDs) != 3 || len(oldIDs) != 3 {
		t.Errorf("timeline rows: new %v old %v, want one per container of deployment %d: new %v old %v", gotNew, gotOld, dep.ID, newIDs, oldIDs)
	}
	if n := b.num(`document.querySelectorAll('#timeline .tl-row[data-container] .seg').length`); n < float64(2*len(dep.Containers)) {
		t.Errorf("%d bars in the timeline, want each container's states", int(n))
	}
	rows := b.num(`document.querySelectorAll('#timeline .tl-row[data-role] .track').length`)
	if sw := b.num(`document.querySelectorAll('#timeline .tl-switch').length`); sw != rows || rows != float64(len(dep.Containers)+1) {
		t.Errorf("switch marks %v on %v rows (containers and hook), want one per row", sw, rows)
	}
	if l := b.str(`document.querySelector('#timeline .sw-label')?.innerText || ''`); !strings.HasPrefix(l, "switch +") {
		t.Errorf("switch label %q", l)
	}
	if h := b.str(`document.querySelector('#timeline .tl-row[data-role=hook] .tl-note')?.innerText || ''`); !strings.Contains(h, "exit code 0") {
		t.Errorf("hook row: %q", h)
	}
	b.eval(`window.scrollTo(0, 0); true`)
	b.screenshot(filepath.Join(shots, "app.png"), true)
	b.screenshotOf("#timeline", filepath.Join(shots, "timeline.png"))

	// A narrow window: nothing runs off the side.
	b.viewport(390, 844)
	b.wait(`document.documentElement.scrollWidth <= window.innerWidth`, 5*time.Second)
	b.screenshot(filepath.Join(shots, "app-narrow.png"), false)
	b.eval(`document.getElementById('timeline').scrollIntoView(); true`)
	b.screenshot(filepath.Join(shots, "timeline-narrow.png"), false)
	b.eval(`location.hash = '#/'; true`)
	b.wait(fmt.Sprintf(`%s !== null`, row(bad.Name)), 10*time.Second)
	b.wait(`document.documentElement.scrollWidth <= window.innerWidth`, 5*time.Second)
	b.screenshot(filepath.Join(shots, "overview-narrow.png"), false)
	b.viewport(0, 0)

	// The timeline of the failed deploy: its container never accepted a
	// connection, nothing was switched.
	b.eval(fmt.Sprintf(`location.hash = '#/apps/%s'; true`, bad.Name))
	b.wait(`(document.querySelector('#timeline .tl-head')?.innerText || '').includes('timeout-error') && document.querySelectorAll('#timeline .tl-row[data-role=new]').length === 1 && document.querySelectorAll('#timeline .tl-switch').length === 0`, 10*time.Second)
	b.wait(`(document.querySelector('.attn.box')?.innerText || '').includes('timeout-error')`, 10*time.Second)
	b.screenshot(filepath.Join(shots, "app-failed.png"), true)

	// A serving container that crashes is marked, after it was replaced
	// too (the podswitch.crashed event is kept).
	b.eval(`location.hash = '#/'; true`)
	b.wait(fmt.Sprintf(`%s !== null`, row(app.Name)), 10*time.Second)
	victim := ""
	for _, ct := range st.Containers {
		if ct.Process == engine.WebProcess {
			victim = ct.ID
		}
	}
	podmanCLI(t, "kill", victim)
	b.wait(fmt.Sprintf(`(%s.querySelector('.attn')?.innerText || '').includes('crashed')`, row(app.Name)), 30*time.Second)
	c.waitSettled(app.Name, 2, 60*time.Second)
	b.wait(fmt.Sprintf(`%s.dataset.level === 'warn' && %[1]s.querySelector('.attn').innerText.includes('web container crashed') && %[1]s.querySelector('.attn').innerText.includes('and was replaced') && %[1]s.querySelector('[data-process=web] .words').innerText === '2 ready'`, row(app.Name)), 30*time.Second)
	b.screenshot(filepath.Join(shots, "overview-crash.png"), false)

	// A config reload ends the open streams (Caddy would otherwise keep
	// the old server until its grace period, here eternal) and the page
	// follows the new config by itself.
	b.eval(fmt.Sprintf(`location.hash = '#/apps/%s'; true`, app.Name))
	b.wait(`document.getElementById('live').dataset.live === 'on' && document.querySelector('.ctrs') !== null`, 10*time.Second)
	events := openEvents(t, base+"api/events", auth)
	t0 = time.Now()
	c.forceReload(app, bad)
	t.Logf("reload with open streams took %s", time.Since(t0).Round(time.Millisecond))
	select {
	case <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("a stream of the unloaded config is still open 10s after the reload")
	}
	if code, body := c.post("/podswitch/apps/"+app.Name+"/scale", "application/json", `{"web": 3}`); code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("scale: %d %s", code, body)
	}
	b.wait(`document.querySelectorAll('.ctrs tr[data-state=ready]').length === 4 && document.getElementById('live').dataset.live === 'on'`, 60*time.Second)

	// Stopping Caddy does not wait for the page's stream; started again,
	// Caddy is found again by the page.
	t0 = time.Now()
	if code, body := c.post("/stop", "", ""); code != http.StatusOK {
		t.Fatalf("stop: %d %s", code, body)
	}
	select {
	case <-c.done:
		t.Logf("caddy stopped %s after /stop with the page open", time.Since(t0).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("caddy did not exit within 15s of /stop with a dashboard page open")
	}
	c.cmd = nil
	b.wait(`document.getElementById('live').dataset.live === 'off'`, 10*time.Second)
	c.launch()
	b.wait(`document.getElementById('live').dataset.live === 'on'`, 45*time.Second)
	if code, body := c.post("/podswitch/apps/"+app.Name+"/scale", "application/json", `{"web": 2}`); code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("scale: %d %s", code, body)
	}
	b.wait(`(rs => rs.length === 2 && rs.every(r => r.dataset.state === 'ready'))([...document.querySelectorAll('.ctrs tr[data-state]')].filter(r => r.children[1].innerText === 'web'))`, 60*time.Second)
	if m := b.str(`window.__marker`); m != "same page" {
		t.Errorf("the page was reloaded (marker %q)", m)
	}
	if errs := b.strings(`window.__errors`); len(errs) > 0 {
		t.Errorf("script errors on the page: %v", errs)
	}
	t.Logf("screenshots in %s", shots)
}

// deployment returns GET /podswitch/apps/{app}/deployments/{id}.
func (c *caddyProc) deployment(app string, id int64) engine.Deployment {
	c.t.Helper()
	code, body := c.adminDo(http.MethodGet, fmt.Sprintf("/podswitch/apps/%s/deployments/%d", app, id), "", "")
	if code != http.StatusOK {
		c.t.Fatalf("deployment %d of %s: %d %s", id, app, code, body)
	}
	var d engine.Deployment
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		c.t.Fatal(err)
	}
	return d
}

// forceReload loads the Caddyfile of apps again, as a reload of an
// unchanged file with `Cache-Control: must-revalidate`: Caddy provisions a
// new config and unloads the running one.
func (c *caddyProc) forceReload(apps ...appCfg) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+c.admin+"/load", strings.NewReader(c.caddyfile(apps...)))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("reload: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("reload: %d %s", resp.StatusCode, b)
	}
}

// httpGet does one GET, with an Authorization header if auth is set.
func httpGet(t *testing.T, url, auth string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// openEvents opens an event stream, waits for its first event and returns
// a channel closed when the stream ends.
func openEvents(t *testing.T, url, auth string) <-chan struct{} {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	first := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		once := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") && !once {
				once = true
				close(first)
			}
		}
	}()
	select {
	case <-first:
	case <-ended:
		t.Fatal("the stream ended before its first event")
	case <-time.After(10 * time.Second):
		t.Fatal("no first event within 10s")
	}
	return ended
}

// chromiumPath returns the path of Chromium, which scripts/setup.sh
// installs.
// page_ drives one tab.
type page_ struct {
	t   *testing.T
	ctx context.Context
}

func (p *page_) navigate(url string) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.Navigate(url)); err != nil {
		p.t.Fatalf("navigate %s: %v", url, err)
	}
}

// wait polls the JavaScript condition until it is true, or fails the test
// with what the page shows.
func (p *page_) wait(cond string, timeout time.Duration) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[bool](`!!(()=>{ try { return `+cond+` } catch (e) { return false } })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		text, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`location.href + '\n' + document.body.innerText.slice(0, 3000)`))
		p.t.Fatalf("waiting %s for %s: %v\nthe page shows:\n%s", timeout, cond, err, text)
	}
}

func (p *page_) eval(js string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](js)); err != nil {
		p.t.Fatalf("%s: %v", js, err)
	}
}

func (p *page_) str(js string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		p.t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (p *page_) strings(js string) []string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](js))
	if err != nil {
		p.t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (p *page_) num(js string) float64 {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[float64](js))
	if err != nil {
		p.t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (p *page_) click(sel string) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		p.t.Fatalf("click %s: %v", sel, err)
	}
}

// viewport emulates a window of width×height; 0×0 goes back to the
// browser's own.
func (p *page_) viewport(width, height int64) {
	p.t.Helper()
	var err error
	if width == 0 {
		_, err = chromedp.Call(p.ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
	} else {
		_, err = chromedp.Call(p.ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: width, Height: height, DeviceScaleFactor: 1, Mobile: true})
	}
	if err != nil {
		p.t.Fatalf("viewport %dx%d: %v", width, height, err)
	}
}

func (p *page_) screenshot(path string, full bool) {
	p.t.Helper()
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(p.ctx, shot)
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *page_) screenshotOf(sel, path string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("screenshot of %s: %v", sel, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}
