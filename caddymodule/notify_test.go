package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/emersion/go-smtp"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(notifyFailApp{})
	caddy.RegisterModule(recordingHandler{})
}

// notifyFailApp fails its provisioning, to make a reload fail.
type notifyFailApp struct{}

func (notifyFailApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "podswitch_notify_test_fail", New: func() caddy.Module { return new(notifyFailApp) }}
}
func (*notifyFailApp) Provision(caddy.Context) error { return errors.New("failing on purpose") }
func (*notifyFailApp) Start() error                  { return nil }
func (*notifyFailApp) Stop() error                   { return nil }

// recordingHandler is an events handler that records the events it gets.
type recordingHandler struct{}

var recordedEvents = make(chan caddy.Event, 64)

func (recordingHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.podswitch_notify_test", New: func() caddy.Module { return new(recordingHandler) }}
}

func (recordingHandler) Handle(_ context.Context, e caddy.Event) error {
	recordedEvents <- e
	return nil
}

// hookReceiver is an HTTP receiver that keeps the JSON bodies it gets.
type hookReceiver struct {
	*httptest.Server
	bodies chan map[string]any
	auth   chan string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{bodies: make(chan map[string]any, 16), auth: make(chan string, 16)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.auth <- r.Header.Get("Authorization")
		h.bodies <- body
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case b := <-h.bodies:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook got nothing")
		return nil
	}
}

// smtpSink is a go-smtp backend that keeps the messages it gets.
type smtpSink struct{ msgs chan []byte }

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

type sinkSession struct{ s *smtpSink }

func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err == nil {
		ss.s.msgs <- b
	}
	return err
}
func (*sinkSession) Reset()        {}
func (*sinkSession) Logout() error { return nil }

func startSMTPSink(t *testing.T) (*smtpSink, int) {
	sink := &smtpSink{msgs: make(chan []byte, 16)}
	srv := smtp.NewServer(sink)
	srv.Domain = "localhost"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sink, l.Addr().(*net.TCPAddr).Port
}

func (s *smtpSink) nextSubject(t *testing.T) string {
	t.Helper()
	select {
	case b := <-s.msgs:
		m, err := netmail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return m.Header.Get("Subject")
	case <-time.After(10 * time.Second):
		t.Fatal("no e-mail arrived")
		return ""
	}
}

func nextEvent(t *testing.T) caddy.Event {
	t.Helper()
	select {
	case e := <-recordedEvents:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no Caddy event")
		return caddy.Event{}
	}
}

// loadNotifyConfig loads a Caddy config with an events subscription for
// podswitch's events and the podswitch app with apps, whose engine waits
// for a Podman service that does not answer.
func loadNotifyConfig(t *testing.T, apps string, extraApps string) error {
	t.Helper()
	return loadPodswitchConfig(t, apps, `, "events": {"subscriptions": [{"events": ["podswitch.deployment", "podswitch.gave_up", "podswitch.crashed"],
			"handlers": [{"handler": "podswitch_notify_test"}]}]}`+extraApps, "")
}

func TestNotifyDelivers(t *testing.T) {
	caddyTestMu.Lock()
	defer caddyTestMu.Unlock()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("PODSWITCH_TEST_TOKEN", "t0ken")
	t.Setenv("PODSWITCH_TEST_FROM", "ops@example.com")
	hook := newHookReceiver(t)
	sink, smtpPort := startSMTPSink(t)
	apps := fmt.Sprintf(`{
		"blog": {"image": "localhost/blog:v1", "notify": {
			"webhook": {"url": %q, "headers": {"Authorization": ["Bearer {env.PODSWITCH_TEST_TOKEN}"]}},
			"email": {"host": "127.0.0.1", "port": %d, "tls": "none", "from": "{env.PODSWITCH_TEST_FROM}", "to": ["oncall@example.com"]}}},
		"quiet": {"image": "localhost/quiet:v1"}}`, hook.URL+"/hook", smtpPort)
	if err := loadNotifyConfig(t, apps, ""); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	// The engine sends its events to the host, which hands them to the
	// notify target of the config it follows.
	h, _ := waitCommitted(t)

	// A give-up: a Caddy event, a webhook post, an e-mail.
	h.notify(engine.Event{Name: engine.EventGaveUp, App: "blog", Process: "web",
		Message: "restart gave up after 20 attempts: exit status 1", Time: time.Now()})
	e := nextEvent(t)
	if e.Name() != "podswitch.gave_up" {
		t.Errorf("event %q, want podswitch.gave_up", e.Name())
	}
	if e.Data["app"] != "blog" || e.Data["process"] != "web" || !strings.Contains(fmt.Sprint(e.Data["message"]), "gave up") {
		t.Errorf("event data %v", e.Data)
	}
	if origin := e.Origin(); origin == nil || origin.CaddyModule().ID != "podswitch" {
		t.Errorf("event origin %v, want the podswitch app", origin)
	}
	body := hook.next(t)
	if body["event"] != "gave_up" || body["app"] != "blog" || body["process"] != "web" {
		t.Errorf("webhook body %v", body)
	}
	if a := <-hook.auth; a != "Bearer t0ken" {
		t.Errorf("webhook Authorization %q: the placeholder was not replaced", a)
	}
	if subj := sink.nextSubject(t); subj != "[podswitch] blog: restart of web gave up" {
		t.Errorf("e-mail subject %q", subj)
	}

	// A successful deployment: a Caddy event and a webhook post, but no
	// e-mail (by default only give-ups and failures are e-mailed).
	ok := &engine.Deployment{ID: 3, Kind: engine.KindDeploy, Release: "r3", Image: "localhost/blog:v3", Status: engine.StatusSuccess}
	h.notify(engine.Event{Name: engine.EventDeployment, App: "blog", Deployment: ok, Time: time.Now()})
	e = nextEvent(t)
	if e.Name() != "podswitch.deployment" || e.Data["status"] != "success" || e.Data["deployment"] != int64(3) ||
		e.Data["image"] != "localhost/blog:v3" || e.Data["kind"] != "deploy" {
		t.Errorf("event %s %v", e.Name(), e.Data)
	}
	if body := hook.next(t); body["status"] != "success" || body["deployment"] != float64(3) {
		t.Errorf("webhook body %v", body)
	}
	<-hook.auth
	failed := &engine.Deployment{ID: 4, Kind: engine.KindDeploy, Release: "r4", Image: "localhost/blog:v4",
		Status: engine.StatusTimeoutError, Error: "web.1 not ready within 60s",
		Containers: []engine.ContainerRecord{
			{ID: "old1", Process: "web", Role: "old"},
			{ID: "new1", Process: "web", Role: "new", Output: []string{"listening on :8080", "PORT is 5000: ignored"}},
		}}
	h.notify(engine.Event{Name: engine.EventDeployment, App: "blog", Deployment: failed, Message: failed.Error, Time: time.Now()})
	nextEvent(t)
	if body := hook.next(t); body["status"] != "timeout-error" || body["text"] != "web.1 not ready within 60s" ||
		fmt.Sprint(body["output"]) != "[listening on :8080 PORT is 5000: ignored]" {
		t.Errorf("webhook body %v, want the failed container's output", body)
	}
	<-hook.auth
	// The next e-mail is the failure's: the success sent none.
	if subj := sink.nextSubject(t); !strings.Contains(subj, "blog: deploy 4 failed (timeout-error)") {
		t.Errorf("e-mail subject %q", subj)
	}

	// An app without notify: the Caddy event only.
	h.notify(engine.Event{Name: engine.EventCrashed, App: "quiet", Process: "worker", Container: "abc123", Message: "exit status 137"})
	e = nextEvent(t)
	if e.Name() != "podswitch.crashed" || e.Data["app"] != "quiet" || e.Data["container"] != "abc123" {
		t.Errorf("event %s %v", e.Name(), e.Data)
	}

	// A reload that fails leaves the running config's targets in place.
	if err := loadNotifyConfig(t, `{"blog": {"image": "x", "notify": {"webhook": {"url": "http://127.0.0.1:1/other"}}}}`,
		`, "podswitch_notify_test_fail": {}`); err == nil {
		t.Fatal("the failing reload succeeded")
	}
	h.notify(engine.Event{Name: engine.EventGaveUp, App: "blog", Process: "worker", Message: "gave up"})
	nextEvent(t)
	if body := hook.next(t); body["process"] != "worker" {
		t.Errorf("webhook body %v", body)
	}
	<-hook.auth

	// Once Caddy stops, the host and its target are dropped.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if currentHost() != nil || h.target.Load() != nil {
		t.Fatal("the notify target outlived the config")
	}
	h.notify(engine.Event{Name: engine.EventGaveUp, App: "blog", Process: "web"}) // must not panic nor send
	select {
	case b := <-hook.bodies:
		t.Errorf("webhook got %v after Caddy stopped", b)
	case e := <-recordedEvents:
		t.Errorf("Caddy event %s after Caddy stopped", e.Name())
	case <-time.After(200 * time.Millisecond):
	}
}

// TestNotifyJSONErrors: a bad notify config in JSON (caddy run, POST
// /load) fails the provisioning with the app's name and the problem.
func TestNotifyJSONErrors(t *testing.T) {
	caddyTestMu.Lock()
	defer caddyTestMu.Unlock()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	tests := []struct {
		name, notify, want string
	}{
		{"email without host", `{"email": {"from": "a@example.com", "to": ["b@example.com"]}}`, "email: host is required"},
		{"email without to", `{"email": {"host": "h", "from": "a@example.com"}}`, "email: to is required"},
		{"email bad tls", `{"email": {"host": "h", "from": "a@example.com", "to": ["b@example.com"], "tls": "yes"}}`, `tls "yes"`},
		{"webhook bad URL", `{"webhook": {"url": "hooks.example.com/x"}}`, "want an http:// or https:// URL"},
		{"webhook placeholder left empty", `{"webhook": {"url": "{env.PODSWITCH_TEST_UNSET_VAR}"}}`, "want an http:// or https:// URL"},
		{"webhook bad event", `{"webhook": {"url": "https://x.example.com/", "events": ["everything"]}}`, `unknown event "everything"`},
		{"webhook bad header", `{"webhook": {"url": "https://x.example.com/", "headers": {"A B": ["c"]}}}`, `"A B" is not a header name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := loadNotifyConfig(t, `{"blog": {"image": "x", "notify": `+tc.notify+`}}`, "")
			if err == nil {
				_ = caddy.Stop()
				t.Fatalf("load succeeded, want an error containing %q", tc.want)
			}
			if msg := err.Error(); !strings.Contains(msg, `app "blog": notify: `) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want one naming the app and containing %q", msg, tc.want)
			}
		})
	}
}
