package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

const guardHash = "$2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG"

// guardCases are Caddyfile sites, and whether their dashboard is reachable
// without auth.
var guardCases = []struct {
	name, site string
	warn       bool
}{
	{"no auth", "http://:{port} {\n\tpodswitch_dashboard\n}\n", true},
	{"basic_auth", "http://:{port} {\n\tbasic_auth {\n\t\tadmin " + guardHash + "\n\t}\n\tpodswitch_dashboard\n}\n", false},
	{"basic_auth written after", "http://:{port} {\n\tpodswitch_dashboard\n\tbasic_auth {\n\t\tadmin " + guardHash + "\n\t}\n}\n", false},
	{"handle_path with basic_auth", "http://:{port} {\n\thandle_path /ops/* {\n\t\tbasic_auth {\n\t\t\tadmin " + guardHash + "\n\t\t}\n\t\tpodswitch_dashboard\n\t}\n\thandle {\n\t\trespond ok\n\t}\n}\n", false},
	{"handle_path without auth", "http://:{port} {\n\thandle_path /ops/* {\n\t\tpodswitch_dashboard\n\t}\n\thandle {\n\t\trespond ok\n\t}\n}\n", true},
	{"basic_auth on another path", "http://:{port} {\n\tbasic_auth /admin/* {\n\t\tadmin " + guardHash + "\n\t}\n\tpodswitch_dashboard\n}\n", true},
	{"forward_auth", "http://:{port} {\n\tforward_auth 127.0.0.1:9091 {\n\t\turi /api/verify\n\t}\n\tpodswitch_dashboard\n}\n", false},
	{"remote_ip matcher", "http://:{port} {\n\t@office remote_ip 10.0.0.0/8\n\tpodswitch_dashboard @office\n}\n", false},
	{"bound to loopback", "http://:{port} {\n\tbind 127.0.0.1 [::1]\n\tpodswitch_dashboard\n}\n", false},
	{"bound to all", "http://:{port} {\n\tbind 0.0.0.0\n\tpodswitch_dashboard\n}\n", true},
}

// adaptGuardSite adapts site (with a podswitch app whose Podman is nowhere)
// to a config.
func adaptGuardSite(t *testing.T, site string) []byte {
	t.Helper()
	const global = "{\n\tpodswitch {\n\t\tpodman unix:///nonexistent/podswitch-test.sock\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t}\n\t}\n}\n"
	site = strings.ReplaceAll(site, "{port}", "20200")
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+site), nil)
	if err != nil {
		t.Fatalf("adapt %q: %v", site, err)
	}
	return out
}

// TestUnguardedDashboards runs the check on the adapted JSON, as it finds
// the routes not provisioned yet.
func TestUnguardedDashboards(t *testing.T) {
	for _, c := range guardCases {
		var cfg struct {
			Apps struct {
				HTTP caddyhttp.App `json:"http"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(adaptGuardSite(t, c.site), &cfg); err != nil {
			t.Fatal(err)
		}
		warn := false
		for _, srv := range cfg.Apps.HTTP.Servers {
			if !loopbackOnly(srv.Listen) && unguardedDashboards(srv.Routes, false) > 0 {
				warn = true
			}
		}
		if warn != c.warn {
			t.Errorf("%s: unguarded=%v, want %v", c.name, warn, c.warn)
		}
	}
}

// TestUnguardedDashboardsProvisioned runs the check on routes whose
// handlers are loaded, as it finds the routes provisioned before the
// dashboard's.
func TestUnguardedDashboardsProvisioned(t *testing.T) {
	sub := func(routes ...caddyhttp.Route) caddyhttp.MiddlewareHandler {
		return &caddyhttp.Subroute{Routes: routes}
	}
	route := func(h ...caddyhttp.MiddlewareHandler) caddyhttp.Route { return caddyhttp.Route{Handlers: h} }
	auth := &caddyauth.Authentication{}
	fwd := &reverseproxy.Handler{HandleResponse: []caddyhttp.ResponseHandler{{}}}
	for name, c := range map[string]struct {
		routes caddyhttp.RouteList
		want   int
	}{
		"bare":                   {caddyhttp.RouteList{route(new(Dashboard))}, 1},
		"auth first":             {caddyhttp.RouteList{route(auth), route(new(Dashboard))}, 0},
		"auth in a subroute":     {caddyhttp.RouteList{route(sub(route(auth), route(new(Dashboard))))}, 0},
		"auth in a sibling sub":  {caddyhttp.RouteList{route(sub(route(auth))), route(sub(route(new(Dashboard))))}, 1},
		"forward_auth":           {caddyhttp.RouteList{route(fwd, new(Dashboard))}, 0},
		"plain proxy is no auth": {caddyhttp.RouteList{route(&reverseproxy.Handler{}), route(new(Dashboard))}, 1},
		"two, one guarded":       {caddyhttp.RouteList{route(sub(route(auth, new(Dashboard)))), route(sub(route(new(Dashboard))))}, 1},
	} {
		if got := unguardedDashboards(c.routes, false); got != c.want {
			t.Errorf("%s: %d unguarded, want %d", name, got, c.want)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:2020":                 true,
		"tcp/127.0.0.1:2020":             true,
		"[::1]:2020":                     true,
		"localhost:2020":                 true,
		"unix//run/caddy.sock":           true,
		":2020":                          false,
		"0.0.0.0:2020":                   false,
		"192.168.1.5:2020":               false,
		"127.0.0.1:2020 10.0.0.1:2020":   false,
		"127.0.0.1:2020 [::1]:2020":      true,
		"{env.PODSWITCH_NO_SUCH_X}:2020": false,
	} {
		if got := loopbackOnly(strings.Fields(listen)); got != want {
			t.Errorf("%q: loopback only = %v, want %v", listen, got, want)
		}
	}
	if loopbackOnly(nil) {
		t.Error("no listen address: loopback only")
	}
}

// TestDashboardWarnsWithoutAuth provisions each config the way `caddy
// validate` does and reads Caddy's log: the warning is there exactly when
// the dashboard is reachable without auth, once per server.
func TestDashboardWarnsWithoutAuth(t *testing.T) {
	for _, c := range guardCases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			t.Setenv("XDG_DATA_HOME", t.TempDir())
			var cfg caddy.Config
			if err := json.Unmarshal(adaptGuardSite(t, c.site), &cfg); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(t.TempDir(), "caddy.log")
			logging := `{"logs": {"default": {"writer": {"output": "file", "filename": ` + strconvQuote(logFile) + `}, "encoder": {"format": "json"}}}}`
			if err := json.Unmarshal([]byte(logging), &cfg.Logging); err != nil {
				t.Fatal(err)
			}
			cfg.StorageRaw = json.RawMessage(`{"module": "file_system", "root": ` + strconvQuote(t.TempDir()) + `}`)
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, line := range strings.Split(string(data), "\n") {
				if !strings.Contains(line, "dashboard is reachable without authentication") {
					continue
				}
				n++
				var entry map[string]any
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if entry["level"] != "warn" || entry["listen"] == nil || !strings.Contains(entry["fix"].(string), "basic_auth") {
					t.Errorf("warning without its fields: %s", line)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[c.warn]; n != want {
				t.Errorf("%d warnings, want %d; log:\n%s", n, want, data)
			}
		})
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
