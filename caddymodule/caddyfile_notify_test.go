package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
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
