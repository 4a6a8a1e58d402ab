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
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/emersion/go-smtp"

	"github.com/podswitch/podswitch/internal/engine"
)

// adaptNotifyCaddyfile adapts body as `caddy adapt` does.
func adaptNotifyCaddyfile(body string) ([]byte, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, errors.New("the caddyfile adapter is not registered")
	}
	out, _, err := adapter.Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// notifyApp wraps lines in an app "blog" whose block holds them: the first
// of lines is on line 5.
func notifyApp(lines ...string) string {
	return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t\t" +
		strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n\t}\n}\n"
}

func TestNotifyCaddyfile(t *testing.T) {
	caddyfile := notifyApp(
		"notify {",
		"	webhook https://hooks.example.com/services/T0/B0 {",
		`		header Authorization "Bearer {env.HOOK_TOKEN}"`,
		"		header X-Team ops",
		"		header X-Team on-call",
		"		timeout 5s",
		"		attempts 3",
		"		events deployment gave_up",
		"	}",
		"	email {",
		"		host smtp.example.com",
		"		port 2525",
		"		username podswitch",
		"		password {env.SMTP_PASSWORD}",
		`		from "podswitch <ops@example.com>"`,
		"		to alice@example.com bob@example.com",
		"		to carol@example.com",
		"		tls opportunistic",
		"		subject_prefix [prod]",
		"		events gave_up deployment_failed crashed",
		"		timeout 20s",
		"	}",
		"}",
		"web 2",
	)
	out, err := adaptNotifyCaddyfile(caddyfile)
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, withLineNumbers(caddyfile))
	}
	var cfg struct {
		Apps struct {
			Podswitch App `json:"podswitch"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	blog := cfg.Apps.Podswitch.Apps["blog"]
	if blog == nil || blog.Notify == nil {
		t.Fatalf("no notify in %s", out)
	}
	if blog.Web == nil || *blog.Web != 2 {
		t.Errorf("the app's block goes on after notify: web = %v", blog.Web)
	}
	wantHook := &WebhookConfig{
		URL: "https://hooks.example.com/services/T0/B0",
		Headers: http.Header{
			"Authorization": {"Bearer {env.HOOK_TOKEN}"},
			"X-Team":        {"ops", "on-call"},
		},
		Timeout:  caddy.Duration(5 * time.Second),
		Attempts: 3,
		Events:   []string{"deployment", "gave_up"},
	}
	if got, _ := json.Marshal(blog.Notify.Webhook); !bytes.Equal(got, mustJSON(t, wantHook)) {
		t.Errorf("webhook\n got %s\nwant %s", got, mustJSON(t, wantHook))
	}
	wantEmail := &EmailConfig{
		Host: "smtp.example.com", Port: 2525, Username: "podswitch", Password: "{env.SMTP_PASSWORD}",
		From: "podswitch <ops@example.com>", To: []string{"alice@example.com", "bob@example.com", "carol@example.com"},
		TLS: "opportunistic", SubjectPrefix: "[prod]", Events: []string{"gave_up", "deployment_failed", "crashed"},
		Timeout: caddy.Duration(20 * time.Second),
	}
	if got, _ := json.Marshal(blog.Notify.Email); !bytes.Equal(got, mustJSON(t, wantEmail)) {
		t.Errorf("email\n got %s\nwant %s", got, mustJSON(t, wantEmail))
	}
	// The JSON uses the documented names.
	for _, key := range []string{`"notify":{"webhook":{"url":`, `"headers":{`, `"subject_prefix":"[prod]"`, `"tls":"opportunistic"`} {
		if !bytes.Contains(out, []byte(key)) {
			t.Errorf("adapted JSON lacks %s:\n%s", key, out)
		}
	}

	// The short forms.
	out, err = adaptNotifyCaddyfile(notifyApp("notify {", "	webhook http://127.0.0.1:9000/hook", "}"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"notify":{"webhook":{"url":"http://127.0.0.1:9000/hook"}}`; !bytes.Contains(out, []byte(want)) {
		t.Errorf("adapted JSON lacks %s:\n%s", want, out)
	}
	out, err = adaptNotifyCaddyfile(notifyApp("notify {", "	email {", "		host 127.0.0.1", "		from a@example.com",
		"		to b@example.com", "		tls none", "	}", "}"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"notify":{"email":{"host":"127.0.0.1","from":"a@example.com","to":["b@example.com"],"tls":"none"}}`; !bytes.Contains(out, []byte(want)) {
		t.Errorf("adapted JSON lacks %s:\n%s", want, out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withLineNumbers numbers the lines of s, for failure messages.
func withLineNumbers(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		fmt.Fprintf(&b, "%3d %s\n", i+1, l)
	}
	return b.String()
}

var notifyErrLineRE = regexp.MustCompile(`Caddyfile:(\d+)`)

func TestNotifyCaddyfileErrors(t *testing.T) {
	email := func(lines ...string) []string {
		out := []string{"notify {", "	email {"}
		for _, l := range lines {
			out = append(out, "		"+l)
		}
		return append(out, "	}", "}")
	}
	hook := func(lines ...string) []string {
		out := []string{"notify {", "	webhook https://hooks.example.com/x {"}
		for _, l := range lines {
			out = append(out, "		"+l)
		}
		return append(out, "	}", "}")
	}
	full := []string{"host smtp.example.com", "from ops@example.com", "to a@example.com"}
	tests := []struct {
		name  string
		lines []string
		want  string
		line  int
	}{
		{"notify with an argument", []string{"notify foo {", "	webhook https://x.example.com/", "}"}, `notify: takes no argument, got "foo"`, 5},
		{"notify without block", []string{"notify"}, "notify: want a block with webhook and/or email", 5},
		{"notify with an empty block", []string{"notify {", "}"}, "notify: want a block with webhook and/or email", 5},
		{"unknown notifier", []string{"notify {", "	slack https://x.example.com/", "}"}, `notify: unknown subdirective "slack"`, 6},
		{"webhook without URL", []string{"notify {", "	webhook", "}"}, "webhook: want a URL", 6},
		{"webhook without scheme", []string{"notify {", "	webhook hooks.example.com/x", "}"}, "want an http:// or https:// URL", 6},
		{"webhook ftp", []string{"notify {", "	webhook ftp://hooks.example.com/x", "}"}, "want an http:// or https:// URL", 6},
		{"webhook without host", []string{"notify {", "	webhook https:///x", "}"}, "no host", 6},
		{"webhook two URLs", []string{"notify {", "	webhook https://a.example.com/ https://b.example.com/", "}"}, `webhook: want one URL, got also "https://b.example.com/"`, 6},
		{"webhook twice", []string{"notify {", "	webhook https://a.example.com/", "	webhook https://b.example.com/", "}"}, "notify: webhook is set twice", 7},
		{"header with one value", hook("header X-Team"), "webhook header: want header <name> <value>", 7},
		{"header with a bad name", hook(`header "X Team" ops`), `webhook header: "X Team" is not a header name`, 7},
		{"attempts 0", hook("attempts 0"), `attempts: "0" is not a number of attempts`, 7},
		{"timeout abc", hook("timeout abc"), `timeout: "abc" is not a duration`, 7},
		{"timeout 0", hook("timeout 0s"), `timeout: "0s" must be positive`, 7},
		{"unknown event", hook("events deployment crash"), `events: unknown event "crash"`, 7},
		{"events without names", hook("events"), "events: want one event name or more", 7},
		{"unknown webhook subdirective", hook("header A b", "retries 3"), `webhook: unknown subdirective "retries"`, 8},
		{"email without host", email("from ops@example.com", "to a@example.com"), "email: host required", 6},
		{"empty email", email(), "email: host, from, to required", 6},
		{"email without block", []string{"notify {", "	email", "}"}, "email: host, from, to required", 6},
		{"email with an argument", []string{"notify {", "	email smtp.example.com {", "	}", "}"}, `email: takes no argument, got "smtp.example.com"`, 6},
		{"email twice", []string{"notify {", "	email {", "		host h", "		from a@example.com", "		to b@example.com", "	}", "	email {", "	}", "}"},
			"notify: email is set twice", 11},
		{"email bad port", email("port 99999"), `port: "99999" is not a port number`, 7},
		{"email bad tls", email(append(full, "tls starttls")...), `tls "starttls": want none, opportunistic or mandatory`, 10},
		{"email bad from", email("host h", "from ops-at-example.com"), `from: "ops-at-example.com" is not an e-mail address`, 8},
		{"email bad to", email("host h", "from ops@example.com", "to a@example.com b@"), `to: "b@" is not an e-mail address`, 9},
		{"email to without address", email("to"), "to: want one address or more", 7},
		{"email password with two values", email("password s3cret m0re"), "password: want one value, got more", 7},
		{"email password without username", email(append(full, "password s3cret")...), "email: password is set but username is not", 6},
		{"email unknown subdirective", email("host h", "sender a@example.com"), `email: unknown subdirective "sender"`, 8},
		{"email unknown event", email(append(full, "events gave_up failed")...), `events: unknown event "failed"`, 10},
		{"email timeout negative", email(append(full, "timeout -1s")...), `timeout: "-1s" must be positive`, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			caddyfile := notifyApp(tc.lines...)
			out, err := adaptNotifyCaddyfile(caddyfile)
			if err == nil {
				t.Fatalf("adapt succeeded, want an error containing %q; input:\n%s\noutput:\n%s", tc.want, withLineNumbers(caddyfile), out)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			var lines []string
			for _, m := range notifyErrLineRE.FindAllStringSubmatch(msg, -1) {
				lines = append(lines, m[1])
			}
			if want := []string{fmt.Sprint(tc.line)}; !slices.Equal(lines, want) {
				t.Errorf("error %q names lines %v, want exactly Caddyfile:%d; input:\n%s", msg, lines, tc.line, withLineNumbers(caddyfile))
			}
			for _, secret := range []string{"s3cret", "m0re"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q shows the password", msg)
				}
			}
		})
	}
}

// ---- delivery through a loaded Caddy config ----

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
