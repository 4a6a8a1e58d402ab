package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/podswitch/podswitch/internal/engine"
)

// restartAPI asks for a restart through the admin API and returns the
// deployment it started.
func (c *caddyProc) restartAPI(app, body string) engine.Deployment {
	c.t.Helper()
	code, out := c.post("/podswitch/apps/"+app+"/restart", "application/json", body)
	if code != http.StatusAccepted && code != http.StatusOK {
		c.t.Fatalf("restart: %d %s", code, out)
	}
	var resp struct {
		Deployment engine.Deployment `json:"deployment"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Deployment.ID == 0 {
		c.t.Fatalf("restart answer %s: %v", out, err)
	}
	return resp.Deployment
}

// waitDeploymentID waits until deployment id of app has ended.
func (c *caddyProc) waitDeploymentID(app string, id int64, timeout time.Duration) engine.Deployment {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, d := range c.status(app).Deployments {
			if d.ID == id && d.Status.Ended() {
				return d
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("deployment %d of %s did not end within %s", id, app, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Under constant load, a restart of an app of 3 web containers replaces all
// three, and scaling it 1 → 4 → 2 adds and removes containers, with no
// failed request.
func TestRestartAndScaleUnderLoad(t *testing.T) {
	app := uniqueName("rs")
	cfg := appCfg{Name: app, Image: imageV1, Web: 3, Lines: []string{"drain_timeout 10s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 3, 30*time.Second))
	l := startLoad(t, c.url("/"), loadRate)
	l.allowDrops = 5 // it reloads under load: see reloadDrop
	time.Sleep(500 * time.Millisecond)

	d := c.restartAPI(app, "")
	if d.Kind != engine.KindRestart {
		t.Errorf("restart made a %q deployment", d.Kind)
	}
	if got := c.waitDeploymentID(app, d.ID, 60*time.Second); got.Status != engine.StatusSuccess {
		t.Fatalf("restart: %s %s", got.Status, got.Error)
	}
	after := webIDs(c.waitSettled(app, 3, 60*time.Second))
	for _, id := range after {
		if slices.Contains(before, id) {
			t.Errorf("restart kept container %s", id)
		}
	}

	steps := []int{1, 4, 2}
	prev := after
	for _, n := range steps {
		cfg.Web = n
		c.reload(cfg)
		now := webIDs(c.waitSettled(app, n, 60*time.Second))
		kept := 0
		for _, id := range now {
			if slices.Contains(prev, id) {
				kept++
			}
		}
		if want := min(n, len(prev)); kept != want {
			t.Errorf("scale %d → %d kept %d containers, want %d", len(prev), n, kept, want)
		}
		prev = now
	}
	time.Sleep(500 * time.Millisecond)
	l.check(t, loadRate/2)
}

// A restart whose new containers can never boot is retried with growing
// delays, gives up after restart_attempts, sends the webhook and the e-mail,
// and the old containers serve throughout.
func TestRestartGivesUpAndNotifies(t *testing.T) {
	hooks := make(chan map[string]any, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		hooks <- m
	}))
	t.Cleanup(receiver.Close)
	mails, smtpPort := startSMTP(t)

	app := uniqueName("gu")
	// Containers booted from now + 6s on exit at once: the first deploy
	// succeeds, every restart attempt after that crashes.
	crashAfter := time.Now().Add(6 * time.Second).Unix()
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{
		fmt.Sprintf("env CRASH_AFTER %d", crashAfter),
		"restart_attempts 3",
		"boot_timeout 5s",
		"notify {",
		"\twebhook " + receiver.URL,
		"\temail {",
		fmt.Sprintf("\t\thost 127.0.0.1\n\t\t\t\tport %d", smtpPort),
		"\t\ttls none",
		"\t\tfrom podswitch@example.com",
		"\t\tto ops@example.com",
		"\t}",
		"}",
	}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 2, 30*time.Second))
	for time.Now().Unix() < crashAfter {
		time.Sleep(100 * time.Millisecond)
	}
	l := startLoad(t, c.url("/"), 100)
	d := c.restartAPI(app, "")
	got := c.waitDeploymentID(app, d.ID, 120*time.Second)
	l.check(t, 75)
	if got.Status != engine.StatusCrashedError || !strings.Contains(got.Error, "code 4") {
		t.Errorf("restart ended %s %q, want crashed-error with the exit code", got.Status, got.Error)
	}
	if now := webIDs(c.status(app)); !slices.Equal(now, before) {
		t.Errorf("web containers %v after the failed restart, want the old %v", now, before)
	}

	// Growing delays between attempts, from the engine's own log.
	delays := c.retryDelays()
	t.Logf("retry delays: %v", delays)
	if len(delays) < 2 {
		t.Fatalf("want at least 2 retries logged for 3 attempts, got %v", delays)
	}
	if delays[len(delays)-1] <= delays[0] {
		t.Errorf("delays do not grow: %v", delays)
	}

	var gaveUp map[string]any
	deadline := time.After(30 * time.Second)
	for gaveUp == nil {
		select {
		case m := <-hooks:
			if m["event"] == engine.EventGaveUp {
				gaveUp = m
			}
		case <-deadline:
			t.Fatal("no gave_up webhook")
		}
	}
	if gaveUp["app"] != app {
		t.Errorf("webhook for app %v, want %s", gaveUp["app"], app)
	}
	select {
	case m := <-mails:
		if !strings.Contains(m.subject+m.body, app) {
			t.Errorf("e-mail does not name the app: %q %q", m.subject, m.body)
		}
		if m.to != "ops@example.com" {
			t.Errorf("e-mail to %q", m.to)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no e-mail")
	}
}

// retryDelays reads the backoff delays the engine logged, in order.
func (c *caddyProc) retryDelays() []time.Duration {
	var out []time.Duration
	for _, l := range strings.Split(c.rawLogs(), "\n") {
		var e struct {
			Msg   string  `json:"msg"`
			Delay float64 `json:"delay"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "container failed to boot, retrying" {
			out = append(out, time.Duration(e.Delay*float64(time.Second)))
		}
	}
	return out
}

type mail struct{ to, subject, body string }

type smtpBackend struct{ out chan mail }

func (b *smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &smtpSession{b: b}, nil
}

type smtpSession struct {
	b  *smtpBackend
	mu sync.Mutex
	to string
}

func (*smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.mu.Lock()
	s.to = to
	s.mu.Unlock()
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	m, err := netmail.ReadMessage(r)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(m.Body)
	s.mu.Lock()
	to := s.to
	s.mu.Unlock()
	s.b.out <- mail{to: to, subject: m.Header.Get("Subject"), body: string(body)}
	return nil
}
func (*smtpSession) Reset()        {}
func (*smtpSession) Logout() error { return nil }

// startSMTP runs a real SMTP server (emersion/go-smtp) on loopback.
func startSMTP(t *testing.T) (<-chan mail, int) {
	t.Helper()
	b := &smtpBackend{out: make(chan mail, 16)}
	srv := smtp.NewServer(b)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b.out, l.Addr().(*net.TCPAddr).Port
}
