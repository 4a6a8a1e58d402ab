package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// findGateRoute returns the route (with its matchers) whose first handler
// is podswitch_gate, wherever it is in the adapted config v.
func findGateRoute(v any) map[string]any {
	switch v := v.(type) {
	case map[string]any:
		if hs, ok := v["handle"].([]any); ok && len(hs) > 0 {
			if h, ok := hs[0].(map[string]any); ok && h["handler"] == "podswitch_gate" {
				return v
			}
		}
		for _, x := range v {
			if r := findGateRoute(x); r != nil {
				return r
			}
		}
	case []any:
		for _, x := range v {
			if r := findGateRoute(x); r != nil {
				return r
			}
		}
	}
	return nil
}

// TestDirectiveAdapt checks what the podswitch site directive adapts to,
// independently of the golden files: one route of podswitch_gate then
// reverse_proxy with the app's containers as upstreams and the defaults,
// which any subdirective the user writes overrides, 0 included.
func TestDirectiveAdapt(t *testing.T) {
	site := func(body string) string {
		return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t}\n\t}\n}\n\n:8080 {\n\t" + body + "\n}\n"
	}
	type want struct {
		match                     string // the route's matcher set, as JSON; "" for none
		tryDuration, tryInterval  time.Duration
		failDuration, streamDelay time.Duration
		transport                 string // the transport, as JSON
		header                    string // an upstream header the proxy sets, if any
	}
	defaults := want{
		tryDuration: 5 * time.Second, tryInterval: 100 * time.Millisecond,
		failDuration: 2 * time.Second, streamDelay: time.Hour,
		transport: `{"dial_timeout":1000000000,"protocol":"http"}`,
	}
	tests := []struct {
		name      string
		caddyfile string
		want      want
	}{
		{"defaults (golden file)", readCaddyfileTest(t, "directive_defaults"), defaults},
		{"matcher and an override (golden file)", readCaddyfileTest(t, "directive_matcher_override"), func() want {
			w := defaults
			w.match, w.tryDuration = `[{"path":["/api/*"]}]`, 10*time.Second
			return w
		}()},
		{"zero values override too", site("podswitch blog {\n\t\tlb_try_duration 0\n\t\tfail_duration 0\n\t\tstream_close_delay 0\n\t}"), func() want {
			w := defaults
			w.tryDuration, w.failDuration, w.streamDelay = 0, 0, 0
			return w
		}()},
		{"a transport of the user's", site("podswitch blog {\n\t\ttransport http {\n\t\t\tread_timeout 5s\n\t\t}\n\t\tlb_try_interval 1s\n\t}"), func() want {
			w := defaults
			w.transport, w.tryInterval = `{"dial_timeout":1000000000,"protocol":"http","read_timeout":5000000000}`, time.Second
			return w
		}()},
		{"a transport with its own dial_timeout", site("podswitch blog {\n\t\ttransport http {\n\t\t\tdial_timeout 3s\n\t\t}\n\t}"), func() want {
			w := defaults
			w.transport = `{"dial_timeout":3000000000,"protocol":"http"}`
			return w
		}()},
		{"a transport with dial_timeout 0", site("podswitch blog {\n\t\ttransport http {\n\t\t\tdial_timeout 0\n\t\t\tread_timeout 5s\n\t\t}\n\t}"), func() want {
			w := defaults
			w.transport = `{"protocol":"http","read_timeout":5000000000}`
			return w
		}()},
		{"an argument that reads like a refused subdirective", site("podswitch blog {\n\t\theader_up X-Route to\n\t}"), func() want {
			w := defaults
			w.header = "X-Route: to"
			return w
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := mustAdapt(t, []byte(tc.caddyfile), false)
			var cfg any
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			route := findGateRoute(cfg)
			if route == nil {
				t.Fatalf("no route starting with podswitch_gate in:\n%s", out)
			}
			match, _ := json.Marshal(route["match"])
			if route["match"] == nil {
				match = nil
			}
			if string(match) != tc.want.match {
				t.Errorf("route matchers %s, want %q", match, tc.want.match)
			}
			hs := route["handle"].([]any)
			if len(hs) != 2 {
				t.Fatalf("route handlers %v, want podswitch_gate and reverse_proxy", hs)
			}
			if gate := hs[0].(map[string]any); gate["app"] != "blog" || len(gate) != 2 {
				t.Errorf("gate %v, want {handler: podswitch_gate, app: blog}", gate)
			}
			raw, _ := json.Marshal(hs[1])
			var rp reverseproxy.Handler
			if err := json.Unmarshal(raw, &rp); err != nil {
				t.Fatal(err)
			}
			if hs[1].(map[string]any)["handler"] != "reverse_proxy" {
				t.Errorf("second handler %s, want reverse_proxy", raw)
			}
			if got := string(rp.DynamicUpstreamsRaw); got != `{"app":"blog","source":"podswitch"}` {
				t.Errorf("dynamic upstreams %s, want the source podswitch for app blog", got)
			}
			if len(rp.Upstreams) != 0 {
				t.Errorf("static upstreams %v, want none", rp.Upstreams)
			}
			if rp.LoadBalancing == nil || rp.HealthChecks == nil || rp.HealthChecks.Passive == nil {
				t.Fatalf("reverse_proxy without load_balancing or passive health checks: %s", raw)
			}
			for _, c := range []struct {
				what      string
				got, want time.Duration
			}{
				{"lb_try_duration", time.Duration(rp.LoadBalancing.TryDuration), tc.want.tryDuration},
				{"lb_try_interval", time.Duration(rp.LoadBalancing.TryInterval), tc.want.tryInterval},
				{"fail_duration", time.Duration(rp.HealthChecks.Passive.FailDuration), tc.want.failDuration},
				{"stream_close_delay", time.Duration(rp.StreamCloseDelay), tc.want.streamDelay},
			} {
				if c.got != c.want {
					t.Errorf("%s %s, want %s", c.what, c.got, c.want)
				}
			}
			if got := string(rp.TransportRaw); got != tc.want.transport {
				t.Errorf("transport %s, want %s", got, tc.want.transport)
			}
			if tc.want.header != "" {
				name, value, _ := strings.Cut(tc.want.header, ": ")
				if rp.Headers == nil || rp.Headers.Request == nil || rp.Headers.Request.Set.Get(name) != value {
					t.Errorf("reverse_proxy headers %s, want %s set", raw, tc.want.header)
				}
			}
		})
	}
}
