package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/podswitch/podswitch/internal/engine"
)

var update = flag.Bool("update", false, "rewrite the golden files of the Golden tests")

// adaptCaddyfile adapts body with Caddy's caddyfile adapter, as `caddy adapt`
// does, and returns the indented JSON.
func adaptCaddyfile(t *testing.T, body []byte) ([]byte, []caddyconfig.Warning, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("the caddyfile adapter is not registered")
	}
	out, warnings, err := adapter.Adapt(body, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, warnings, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		t.Fatalf("indenting the adapted JSON: %v\n%s", err, out)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), warnings, nil
}

// mustAdapt adapts body and fails the test on an error. Warnings fail it
// too when strict; otherwise they are logged, as Caddy's own adapt tests do
// (the DESIGN.md example aligns its comments, which `caddy fmt` would not).
func mustAdapt(t *testing.T, body []byte, strict bool) []byte {
	t.Helper()
	out, warnings, err := adaptCaddyfile(t, body)
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	for _, w := range warnings {
		report := t.Logf
		if strict {
			report = t.Errorf
		}
		report("adapt warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
	}
	return out
}

// diffLines reports the first line where want and got differ.
func diffLines(want, got []byte) string {
	w := strings.Split(string(want), "\n")
	g := strings.Split(string(got), "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl || i >= len(w) || i >= len(g) {
			return fmt.Sprintf("first difference at line %d:\n want: %q\n  got: %q", i+1, wl, gl)
		}
	}
	return "no difference"
}

// TestGoldenCaddyfileExample adapts the repository's Caddyfile.example and
// compares it with testdata/Caddyfile.example.golden.json. Rewrite the
// golden file with: go test -tags "..." -run Golden -update ./caddymodule/
func TestGoldenCaddyfileExample(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	got := mustAdapt(t, body, true)
	golden := filepath.Join("testdata", "Caddyfile.example.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("adapted ../Caddyfile.example differs from %s (rerun with -update if the change is intended); %s\ngot:\n%s",
			golden, diffLines(want, got), got)
	}

	// Independently of the golden file, the parts the design promises.
	var cfg struct {
		Apps struct {
			Podswitch App `json:"podswitch"`
			HTTP      struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(got, &cfg); err != nil {
		t.Fatal(err)
	}
	demo := cfg.Apps.Podswitch.Apps["demo"]
	if demo == nil {
		t.Fatalf("apps.podswitch.apps.demo missing in:\n%s", got)
	}
	if demo.Image != "localhost/podswitch-testapp:v1" || demo.Web == nil || *demo.Web != 2 {
		t.Errorf("demo: image %q web %v, want localhost/podswitch-testapp:v1 and 2", demo.Image, demo.Web)
	}
	if w := demo.Processes["worker"]; w == nil || w.Count != 1 || !slices.Equal(w.Command, []string{"/app", "worker"}) {
		t.Errorf("demo.processes.worker = %+v, want count 1 command [/app worker]", w)
	}
	if time.Duration(demo.BootTimeout) != 60*time.Second || time.Duration(demo.StopTimeout) != 30*time.Second ||
		demo.DrainTimeout == nil || time.Duration(*demo.DrainTimeout) != 30*time.Second ||
		demo.RestartAttempts == nil || *demo.RestartAttempts != 20 {
		t.Errorf("demo timeouts: %+v", demo)
	}
	if !bytes.Contains(got, []byte(`"dynamic_upstreams": {`)) ||
		!bytes.Contains(got, []byte(`"app": "demo",`)) || !bytes.Contains(got, []byte(`"source": "podswitch"`)) {
		t.Errorf("reverse_proxy has no dynamic_upstreams {source: podswitch, app: demo}:\n%s", got)
	}
}

const adaptSeparator = "----------"

// TestGoldenAdaptFiles runs testdata/adapt/*.caddyfiletest, in the format of
// Caddy's caddytest/integration/caddyfile_adapt: a Caddyfile, a line of
// dashes, the expected JSON. -update rewrites the part after the dashes.
func TestGoldenAdaptFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "adapt", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/adapt/*.caddyfiletest files")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(data), "\n"+adaptSeparator+"\n")
			if !ok {
				t.Fatalf("%s: no %q line", file, adaptSeparator)
			}
			caddyfile += "\n"
			got := mustAdapt(t, []byte(caddyfile), false)
			if *update {
				if err := os.WriteFile(file, []byte(caddyfile+adaptSeparator+"\n"+string(got)), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want != string(got) {
				t.Errorf("%s: adapted JSON differs (rerun with -update if the change is intended); %s\ngot:\n%s",
					file, diffLines([]byte(want), got), got)
			}
			// Whatever the golden file says, every app must give a valid spec.
			var cfg struct {
				Apps struct {
					Podswitch App `json:"podswitch"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(got, &cfg); err != nil {
				t.Fatal(err)
			}
			if len(cfg.Apps.Podswitch.Apps) == 0 {
				t.Fatal("no apps.podswitch.apps")
			}
			for name, c := range cfg.Apps.Podswitch.Apps {
				if _, err := c.Spec(name); err != nil {
					t.Errorf("Spec(%q): %v", name, err)
				}
			}
		})
	}
}

// TestAdaptedSpecs checks what the adapted configs of the golden files mean
// to the engine, so that a wrong golden file cannot pass unnoticed.
func TestAdaptedSpecs(t *testing.T) {
	specOf := func(t *testing.T, caddyfile, app string) engine.AppSpec {
		t.Helper()
		out := mustAdapt(t, []byte(caddyfile), true)
		var cfg struct {
			Apps struct {
				Podswitch App `json:"podswitch"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		spec, err := cfg.Apps.Podswitch.Apps[app].Spec(app)
		if err != nil {
			t.Fatal(err)
		}
		return spec
	}

	t.Run("web 0 and two process types", func(t *testing.T) {
		spec := specOf(t, readCaddyfileTest(t, "web_zero_two_processes"), "jobs")
		want := []engine.ProcessSpec{
			{Name: "web", Count: 0},
			{Name: "clock", Count: 1},
			{Name: "worker", Count: 2, Command: []string{"/app/worker", "--queue", "default"}},
		}
		if !processesEqual(spec.Processes, want) {
			t.Errorf("processes = %+v, want %+v", spec.Processes, want)
		}
		if spec.Port != 8000 || spec.DrainTimeout != 90*time.Second || spec.WorkerReadyTime != 500*time.Millisecond {
			t.Errorf("port %d drain %v worker_ready_time %v, want 8000 1m30s 500ms", spec.Port, spec.DrainTimeout, spec.WorkerReadyTime)
		}
		if spec.Env["REDIS_URL"] != "redis://redis:6379/0" || spec.Env["QUEUE"] != "default" {
			t.Errorf("env = %v", spec.Env)
		}
	})

	t.Run("web with a command", func(t *testing.T) {
		spec := specOf(t, readCaddyfileTest(t, "web_command"), "api")
		want := []engine.ProcessSpec{{Name: "web", Count: 3, Command: []string{"sh", "-c", "exec /app/server --port $PORT"}}}
		if !processesEqual(spec.Processes, want) {
			t.Errorf("processes = %+v, want %+v", spec.Processes, want)
		}
		if spec.Env["GREETING"] != "hello world" {
			t.Errorf("env = %v", spec.Env)
		}
	})

	t.Run("minimal", func(t *testing.T) {
		spec := specOf(t, readCaddyfileTest(t, "minimal_app"), "blog")
		want := []engine.ProcessSpec{{Name: "web", Count: 1}}
		if !processesEqual(spec.Processes, want) || spec.Port != 5000 || spec.BootTimeout != time.Minute {
			t.Errorf("spec = %+v", spec)
		}
	})
}

func readCaddyfileTest(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "adapt", name+".caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	caddyfile, _, ok := strings.Cut(string(data), "\n"+adaptSeparator+"\n")
	if !ok {
		t.Fatalf("%s: no %q line", name, adaptSeparator)
	}
	return caddyfile + "\n"
}

func processesEqual(a, b []engine.ProcessSpec) bool {
	return slices.EqualFunc(a, b, func(x, y engine.ProcessSpec) bool {
		return x.Name == y.Name && x.Count == y.Count && slices.Equal(x.Command, y.Command)
	})
}

var errLineRE = regexp.MustCompile(`Caddyfile:(\d+)`)

// TestCaddyfileErrors: bad input is refused by `caddy adapt` with a message
// that says what is wrong, and the file and line where it is.
func TestCaddyfileErrors(t *testing.T) {
	// app wraps lines in a podswitch global option with one app "blog" whose
	// block holds lines: the first of lines is on line 5.
	app := func(lines ...string) string {
		return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t\t" +
			strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n\t}\n}\n"
	}
	site := func(proxy string) string {
		return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t}\n\t}\n}\n\n" +
			":8080 {\n\treverse_proxy {\n\t\t" + proxy + "\n\t}\n}\n"
	}
	// directive puts body in a site, after a podswitch global option with
	// the apps blog and shop: the first line of body is on line 13.
	directive := func(body string) string {
		return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t}\n" +
			"\t\tapp shop {\n\t\t\timage localhost/shop:v1\n\t\t}\n\t}\n}\n\n" +
			":8080 {\n\t" + body + "\n}\n"
	}
	// only wraps the lines of an app block without an image line: the
	// app's name is on line 3, the first of lines on line 4.
	only := func(lines ...string) string {
		return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n\t}\n}\n"
	}
	tests := []struct {
		name      string
		caddyfile string
		want      string // the error contains this
		line      int    // and names Caddyfile:line
	}{
		{"unknown subdirective in app", app("web 1", "imagee localhost/x"), `app "blog": unknown subdirective "imagee"`, 6},
		{"unknown subdirective in podswitch", "{\n\tpodswitch {\n\t\tpodman unix:///x.sock\n\t\tapps blog\n\t}\n}\n",
			`podswitch: unknown subdirective "apps"`, 4},
		{"short lease_duration", "{\n\tpodswitch {\n\t\tpodman unix:///x.sock\n\t\tlease_duration 1s\n\t}\n}\n",
			`lease_duration: "1s" is too short: want at least 2s`, 4},
		{"bad lease_duration", "{\n\tpodswitch {\n\t\tlease_duration soon\n\t}\n}\n",
			`lease_duration: "soon" is not a duration`, 3},
		{"negative web", app("web -1"), `web: "-1" is not a count`, 5},
		{"web abc", app("web abc"), `web: "abc" is not a count`, 5},
		{"web without count", app("web"), `web: want a count`, 5},
		{"bad duration", app("stop_timeout 30s", "boot_timeout 5x"), `boot_timeout: "5x" is not a duration`, 6},
		{"negative duration", app("drain_timeout -5s"), `drain_timeout: "-5s" must not be negative`, 5},
		{"negative unhealthy_timeout", app("web 1", "unhealthy_timeout -1s"), `unhealthy_timeout: "-1s" must not be negative`, 6},
		{"bad unhealthy_timeout", app("unhealthy_timeout soon"), `unhealthy_timeout: "soon" is not a duration`, 5},
		{"unhealthy_timeout given twice", app("unhealthy_timeout 5s", "unhealthy_timeout 6s"), `app "blog": unhealthy_timeout is given twice`, 6},
		{"short idle_timeout", app("web 1", "idle_timeout 2s"), `idle_timeout: "2s" is too short: want at least 5s, or 0 (never)`, 6},
		{"negative idle_timeout", app("idle_timeout -5m"), `idle_timeout: "-5m" must not be negative`, 5},
		{"long rest_check_interval", app("web 1", "rest_check_interval 1h"), `rest_check_interval: "1h" is too long: want at most 5m0s`, 6},
		{"duration with two values", app("stop_timeout 5s 6s"), `stop_timeout: want one value, got also "6s"`, 5},
		{"missing image", "{\n\tpodswitch {\n\t\tpodman unix:///x.sock\n\t\tapp blog {\n\t\t\tweb 2\n\t\t\tenv A b\n\t\t}\n\t}\n}\n",
			`app "blog": image is required`, 4},
		{"missing image, empty block", "{\n\tpodswitch {\n\t\tapp blog {\n\t\t}\n\t}\n}\n", `app "blog": image is required`, 3},
		{"image without value", "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage\n\t\t}\n\t}\n}\n", `image: want one value`, 4},
		{"env with one arg", app("env RAILS_ENV"), `env RAILS_ENV: no value; if you wrote {$RAILS_ENV} or another {$VAR}, that variable is not set`, 5},
		{"env with three args", app("env A b c"), `env: want env <NAME> <value>`, 5},
		{"zero memory", app("web 1", "memory 0"), `memory "0": want at least 6m`, 6},
		{"bad memory unit", app("memory 64x"), `memory "64x": unknown unit "x"`, 5},
		{"zero cpus", app("cpus 0"), `cpus "0": want a positive number`, 5},
		{"relative volume", app("volume data/x:/data"), `host path "data/x" is relative`, 5},
		{"relative volume target", app("volume data:data"), `target "data": want an absolute path`, 5},
		{"bad network name", app("network my/net"), `network "my/net": not a network name`, 5},
		{"network given twice", app("network a", "network b"), `app "blog": network is given twice`, 6},
		{"zero memory in web block", app("web 1 {", "\tmemory 0", "}"), `memory "0": want at least 6m`, 6},
		{"unknown setting in process block", app("process worker 1 {", "\tport 80", "}"), `process worker: unknown setting "port"`, 6},
		{"user without value", app("user"), `user: want a value`, 5},
		{"env PORT", app("env PORT 1"), `env PORT: PORT is set by podswitch`, 5},
		{"env name with =", app(`"env" "A=B" c`), `env: "A=B" is not a variable name`, 5},
		{"port 70000", app("port 70000"), `port: "70000" is not a port number`, 5},
		{"port 0", app("port 0"), `port: "0" is not a port number`, 5},
		{"restart_attempts negative", app("restart_attempts -1"), `restart_attempts: "-1" is not a count`, 5},
		{"app name with uppercase", "{\n\tpodswitch {\n\t\tapp Blog {\n\t\t\timage x\n\t\t}\n\t}\n}\n",
			`app "Blog": a name is lowercase letters, digits and dashes`, 3},
		{"app without name", "{\n\tpodswitch {\n\t\tapp\n\t}\n}\n", `app: want a name`, 3},
		{"duplicate app", "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage x\n\t\t}\n\t\tapp blog {\n\t\t\timage y\n\t\t}\n\t}\n}\n",
			`app "blog" is defined twice`, 6},
		{"duplicate process type", app("process worker 1", "web 2", "process worker 2 /w"), `process "worker" is defined twice`, 7},
		{"process web", app("process web 1"), `process web: set web containers with: web <count>`, 5},
		{"process bad type", app("process Worker 1"), `process "Worker": a type is lowercase letters`, 5},
		{"process negative count", app("process worker -2"), `worker: "-2" is not a count`, 5},
		{"podswitch given twice", "{\n\tpodswitch {\n\t\tapp a {\n\t\t\timage x\n\t\t}\n\t}\n\tpodswitch {\n\t\tapp b {\n\t\t\timage y\n\t\t}\n\t}\n}\n",
			`podswitch: the global option may appear only once`, 7},
		{"podswitch with an argument", "{\n\tpodswitch foo {\n\t}\n}\n", `wrong argument count`, 2},
		{"podman without address", "{\n\tpodswitch {\n\t\tpodman\n\t}\n}\n", `podman: want the address of the Podman service`, 3},
		{"dynamic podswitch without app", site("dynamic podswitch"), `dynamic podswitch: want the app's name`, 11},
		{"dynamic podswitch a b", site("dynamic podswitch a b"), `dynamic podswitch: unexpected argument "b"`, 11},
		{"dynamic podswitch bad name", site("dynamic podswitch Blog"), `dynamic podswitch: app name "Blog"`, 11},
		{"dynamic podswitch with a block", site("dynamic podswitch blog {\n\t\t\tapp x\n\t\t}"), `dynamic podswitch: takes no block`, 12},

		// A setting given twice is refused where it is given again.
		{"image given twice", app("image localhost/blog:v2"), `app "blog": image is given twice`, 5},
		{"web given twice", app("web 1", "web 2"), `app "blog": web is given twice`, 6},
		{"boot_timeout given twice", app("boot_timeout 5s", "port 8000", "boot_timeout 6s"), `app "blog": boot_timeout is given twice`, 7},
		{"restart_attempts given twice", app("restart_attempts 0", "restart_attempts 3"), `app "blog": restart_attempts is given twice`, 6},
		{"env given twice", app("env A b", "env A c"), `env A is given twice`, 6},
		{"podman given twice", "{\n\tpodswitch {\n\t\tpodman unix:///a.sock\n\t\tpodman unix:///b.sock\n\t}\n}\n", `podswitch: podman is given twice`, 4},

		// The podman address needs a scheme the bindings know.
		{"podman host:port", "{\n\tpodswitch {\n\t\tpodman localhost:8080\n\t}\n}\n", `podman "localhost:8080"`, 3},
		{"podman path", "{\n\tpodswitch {\n\t\tpodman /run/podman/podman.sock\n\t}\n}\n",
			`podman "/run/podman/podman.sock": want an address with a scheme: unix:///run/podman/podman.sock`, 3},
		{"podman http", "{\n\tpodswitch {\n\t\tpodman http://localhost:8080\n\t}\n}\n", `scheme "http" is not one of unix, tcp, ssh`, 3},

		// What Spec refuses is refused at adapt, at the app's line.
		{"web 1001", app("web 1001"), `web: 1001 containers is over the limit of 1000 per process type`, 5},
		{"process count over the limit", app("process worker 5000 /w"), `worker: 5000 containers is over the limit of 1000 per process type`, 5},
		{"image that does not parse", only(`image "Bad Ref"`), `image "Bad Ref" is not a valid image reference`, 4},
		{"image with an uppercase repository", only("image localhost/Blog:v1"), `image "localhost/Blog:v1" is not a valid image reference`, 4},
		{"ready_path without a slash", app("ready_path up"), `ready_path "up": want a path that starts with /`, 5},
		{"ready_status out of range", app("ready_status 200-700"), `ready_status "200-700": want a status or a range of statuses from 100 to 599`, 5},
		{"env_file twice", app("env_file /a.env", "env_file /a.env"), `env_file /a.env is given twice`, 6},

		// The podswitch site directive.
		{"podswitch undefined app", directive("podswitch nope"),
			`podswitch nope: no such app in the podswitch global option (it has: blog, shop)`, 13},
		{"podswitch without an app", directive("podswitch"), `podswitch: want the app's name`, 13},
		{"podswitch with a matcher and no app", directive("podswitch /api/*"), `podswitch: want the app's name`, 13},
		{"podswitch with two apps", directive("podswitch blog shop"), `podswitch: unexpected argument "shop"`, 13},
		{"podswitch bad app name", directive("podswitch Blog"), `podswitch: app name "Blog"`, 13},
		{"podswitch with to", directive("podswitch blog {\n\t\tto localhost:9000\n\t}"),
			`podswitch blog: to is not allowed here: the upstreams are the app's ready web containers`, 14},
		{"podswitch with dynamic", directive("podswitch blog {\n\t\tlb_try_duration 1s\n\t\tdynamic podswitch shop\n\t}"),
			`podswitch blog: dynamic is not allowed here`, 15},
		{"podswitch without the global option", ":8080 {\n\tpodswitch blog\n}\n",
			`podswitch blog: the podswitch global option, which defines the apps, is missing`, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := adaptCaddyfile(t, []byte(tc.caddyfile))
			if err == nil {
				t.Fatalf("adapt succeeded, want an error containing %q; input:\n%s\noutput:\n%s", tc.want, tc.caddyfile, out)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			var lines []string
			for _, m := range errLineRE.FindAllStringSubmatch(msg, -1) {
				lines = append(lines, m[1])
			}
			if want := []string{fmt.Sprint(tc.line)}; !slices.Equal(lines, want) {
				t.Errorf("error %q names lines %v, want exactly Caddyfile:%d; input:\n%s", msg, lines, tc.line, numbered(tc.caddyfile))
			}
		})
	}
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		fmt.Fprintf(&b, "%3d %s\n", i+1, l)
	}
	return b.String()
}

// TestSpecJSONErrors covers what reaches the app as JSON (caddy run with a
// JSON config, POST /load, PATCH /config/...): Spec must refuse it with the
// app's name and the problem.
func TestSpecJSONErrors(t *testing.T) {
	tests := []struct {
		name   string
		app    string
		config string
		want   string
	}{
		{"empty image", "blog", `{"web": 1}`, "image is required"},
		{"blank image", "blog", `{"image": "  "}`, "image is required"},
		{"negative web", "blog", `{"image": "x", "web": -1}`, `process type "web": count must not be negative`},
		{"negative process count", "blog", `{"image": "x", "processes": {"worker": {"count": -3}}}`, `process type "worker": count must not be negative`},
		{"negative boot_timeout", "blog", `{"image": "x", "boot_timeout": "-1s"}`, "boot_timeout must not be negative"},
		{"negative stop_timeout", "blog", `{"image": "x", "stop_timeout": -1000000000}`, "stop_timeout must not be negative"},
		{"negative drain_timeout", "blog", `{"image": "x", "drain_timeout": "-30s"}`, "drain_timeout must not be negative"},
		{"negative unhealthy_timeout", "blog", `{"image": "x", "unhealthy_timeout": "-30s"}`, "unhealthy_timeout must not be negative"},
		{"short idle_timeout", "blog", `{"image": "x", "idle_timeout": "1s"}`, "idle_timeout 1s: want at least 5s (or 0, never)"},
		{"long rest_check_interval", "blog", `{"image": "x", "rest_check_interval": "6m"}`, "rest_check_interval 6m0s: want at most 5m0s"},
		{"negative worker_ready_time", "blog", `{"image": "x", "worker_ready_time": "-2s"}`, "worker_ready_time must not be negative"},
		{"negative restart_attempts", "blog", `{"image": "x", "restart_attempts": -1}`, "restart_attempts must not be negative"},
		{"env PORT", "blog", `{"image": "x", "env": {"PORT": "8080"}}`, "env PORT is set by podswitch"},
		{"env key with =", "blog", `{"image": "x", "env": {"A=B": "c"}}`, `env name "A=B" is not valid`},
		{"env empty key", "blog", `{"image": "x", "env": {"": "c"}}`, `env name "" is not valid`},
		{"process named web", "blog", `{"image": "x", "processes": {"web": {"count": 2}}}`, "process type web is set with web, not processes"},
		{"process with bad name", "blog", `{"image": "x", "processes": {"Worker": {"count": 1}}}`, `process type "Worker"`},
		{"port out of range", "blog", `{"image": "x", "port": 70000}`, "port 70000 out of range"},
		{"negative port", "blog", `{"image": "x", "port": -1}`, "port -1 out of range"},
		{"uppercase app name", "Blog", `{"image": "x"}`, `app name "Blog"`},
		{"app name with underscore", "my_blog", `{"image": "x"}`, `app name "my_blog"`},
		{"empty app name", "", `{"image": "x"}`, `app name ""`},
		{"null config", "blog", `null`, "no config"},
		{"zero memory", "blog", `{"image": "x", "memory": "0"}`, `memory "0": want at least 6m`},
		{"negative cpus", "blog", `{"image": "x", "cpus": -1}`, `cpus -1: want a positive number`},
		{"relative volume", "blog", `{"image": "x", "volumes": ["./data:/data"]}`, `host path "./data" is relative`},
		{"bad network", "blog", `{"image": "x", "networks": ["a b"]}`, `network "a b": not a network name`},
		{"bad web memory", "blog", `{"image": "x", "web_settings": {"memory": "1k"}}`, `web: memory "1k": want at least 6m`},
		{"bad process volume", "blog", `{"image": "x", "processes": {"worker": {"count": 1, "volumes": ["x:/"]}}}`, `process "worker": volume "x:/"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c *AppConfig
			if err := json.Unmarshal([]byte(tc.config), &c); err != nil {
				t.Fatal(err)
			}
			_, err := c.Spec(tc.app)
			if err == nil {
				t.Fatalf("Spec(%q) of %s succeeded, want an error containing %q", tc.app, tc.config, tc.want)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("app %q", tc.app)) {
				t.Errorf("error %q does not name app %q", err, tc.app)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestSpecDefaults(t *testing.T) {
	var c AppConfig
	if err := json.Unmarshal([]byte(`{"image": "localhost/blog:v1"}`), &c); err != nil {
		t.Fatal(err)
	}
	spec, err := c.Spec("blog")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "blog" || spec.Image != "localhost/blog:v1" {
		t.Errorf("name %q image %q", spec.Name, spec.Image)
	}
	if want := []engine.ProcessSpec{{Name: "web", Count: 1}}; !processesEqual(spec.Processes, want) {
		t.Errorf("processes = %+v, want %+v", spec.Processes, want)
	}
	for _, check := range []struct {
		what      string
		got, want any
	}{
		{"port", spec.Port, 5000},
		{"boot_timeout", spec.BootTimeout, 60 * time.Second},
		{"stop_timeout", spec.StopTimeout, 30 * time.Second},
		{"drain_timeout", spec.DrainTimeout, 30 * time.Second},
		{"unhealthy_timeout", spec.UnhealthyTimeout, 30 * time.Second},
		{"idle_timeout", spec.IdleTimeout, time.Duration(0)},
		{"restart_attempts", spec.RestartAttempts, 20},
		{"worker_ready_time", spec.WorkerReadyTime, 2 * time.Second},
	} {
		if check.got != check.want {
			t.Errorf("default %s = %v, want %v", check.what, check.got, check.want)
		}
	}

	// web 0 is kept (a worker-only app), not replaced by the default 1.
	if err := json.Unmarshal([]byte(`{"image": "x", "web": 0, "processes": {"worker": {"count": 1}}}`), &c); err != nil {
		t.Fatal(err)
	}
	spec, err = c.Spec("jobs")
	if err != nil {
		t.Fatal(err)
	}
	if want := []engine.ProcessSpec{{Name: "web", Count: 0}, {Name: "worker", Count: 1}}; !processesEqual(spec.Processes, want) {
		t.Errorf("processes = %+v, want %+v", spec.Processes, want)
	}
}

// validateJSON runs caddy.Validate (what `caddy validate` does) on a config
// with the podswitch app apps and a reverse_proxy whose upstream source is
// source. Validate provisions and cleans up every module without starting
// any app, so no container is touched; the podman address points nowhere to
// make sure of it.
func validateJSON(t *testing.T, apps, source string) error {
	t.Helper()
	// The podswitch app keeps its state in Caddy's data directory.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	raw := fmt.Sprintf(`{
	"storage": {"module": "file_system", "root": %q},
	"apps": {
		"podswitch": {"podman": "unix:///nonexistent/podswitch-test.sock", "apps": %s},
		"http": {"servers": {"srv0": {
			"listen": ["127.0.0.1:0"],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [{"handler": "reverse_proxy", "dynamic_upstreams": %s}]}]
		}}}
	}
}`, t.TempDir(), apps, source)
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return caddy.Validate(&cfg)
}

func TestValidateUpstreamSource(t *testing.T) {
	t.Run("unknown app", func(t *testing.T) {
		err := validateJSON(t, `{"blog": {"image": "localhost/blog:v1"}}`, `{"source": "podswitch", "app": "nope"}`)
		if err == nil {
			t.Fatal("validate succeeded with an upstream source naming an app that is not configured")
		}
		if !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("error %q does not name the app \"nope\"", err)
		}
		if !strings.Contains(err.Error(), "not configured") {
			t.Errorf("error %q does not say the app is not configured", err)
		}
	})
	t.Run("no app", func(t *testing.T) {
		err := validateJSON(t, `{"blog": {"image": "localhost/blog:v1"}}`, `{"source": "podswitch"}`)
		if err == nil || !strings.Contains(err.Error(), "app is required") {
			t.Errorf("err = %v, want app is required", err)
		}
	})
	t.Run("bad app config", func(t *testing.T) {
		err := validateJSON(t, `{"blog": {"image": "localhost/blog:v1", "web": -2}}`, `{"source": "podswitch", "app": "blog"}`)
		if err == nil || !strings.Contains(err.Error(), `app "blog"`) || !strings.Contains(err.Error(), "count must not be negative") {
			t.Errorf("err = %v, want app \"blog\": ... count must not be negative", err)
		}
	})
	t.Run("valid", func(t *testing.T) {
		if err := validateJSON(t, `{"blog": {"image": "localhost/blog:v1"}}`, `{"source": "podswitch", "app": "blog"}`); err != nil {
			t.Fatal(err)
		}
	})
	// Validate has released every reference it took on the shared engine.
	if m := currentManager(); m != nil {
		t.Errorf("the engine is still referenced after Validate: apps %v", m.Apps())
	}
}

func TestValidateWithoutPodswitchApp(t *testing.T) {
	raw := fmt.Sprintf(`{
	"storage": {"module": "file_system", "root": %q},
	"apps": {"http": {"servers": {"srv0": {
		"listen": ["127.0.0.1:0"],
		"routes": [{"handle": [{"handler": "reverse_proxy", "dynamic_upstreams": {"source": "podswitch", "app": "blog"}}]}]
	}}}}
}`, t.TempDir())
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(&cfg)
	if err == nil || !strings.Contains(err.Error(), `"blog"`) || !strings.Contains(err.Error(), "apps.podswitch") {
		t.Errorf("err = %v, want a message naming \"blog\" and apps.podswitch", err)
	}
}

// restart_attempts 0 and drain_timeout 0 mean no retry and no drain wait:
// they adapt to JSON 0 and reach the engine as 0; absent, they get their
// defaults.
func TestAdaptedZeroSettings(t *testing.T) {
	tests := []struct {
		name      string
		lines     []string
		json      []string // the adapted JSON has these
		noJSON    []string // and not these
		attempts  int
		drainWait time.Duration
	}{
		{"zero", []string{"restart_attempts 0", "drain_timeout 0"},
			[]string{`"restart_attempts": 0`, `"drain_timeout": 0`}, nil, 0, 0},
		{"zero with a unit", []string{"drain_timeout 0s"}, []string{`"drain_timeout": 0`}, []string{"restart_attempts"}, 20, 0},
		{"set", []string{"restart_attempts 3", "drain_timeout 5s"},
			[]string{`"restart_attempts": 3`, `"drain_timeout": 5000000000`}, nil, 3, 5 * time.Second},
		{"absent", nil, nil, []string{"restart_attempts", "drain_timeout"}, 20, 30 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			caddyfile := "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n"
			for _, l := range tc.lines {
				caddyfile += "\t\t\t" + l + "\n"
			}
			caddyfile += "\t\t}\n\t}\n}\n"
			out := mustAdapt(t, []byte(caddyfile), true)
			for _, want := range tc.json {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("adapted JSON lacks %s:\n%s", want, out)
				}
			}
			for _, not := range tc.noJSON {
				if bytes.Contains(out, []byte(not)) {
					t.Errorf("adapted JSON has %s:\n%s", not, out)
				}
			}
			spec := adaptedSpec(t, out, "blog")
			if spec.RestartAttempts != tc.attempts || spec.DrainTimeout != tc.drainWait {
				t.Errorf("restart_attempts %d, drain_timeout %s; want %d and %s", spec.RestartAttempts, spec.DrainTimeout, tc.attempts, tc.drainWait)
			}
		})
	}
}

// The timeouts whose 0 has a meaning adapt to JSON and reach the engine:
// unhealthy_timeout 0 never replaces an unhealthy container (absent, it is
// 30s); idle_timeout 0, like its absence, never sleeps.
func TestAdaptedTimeouts(t *testing.T) {
	for _, tc := range []struct {
		line   string
		json   string // the adapted JSON has it
		noJSON string // the adapted JSON lacks it
		want   time.Duration
		got    func(engine.AppSpec) time.Duration
	}{
		{"unhealthy_timeout 0", `"unhealthy_timeout": 0`, "", 0, unhealthyOf},
		{"unhealthy_timeout 3s", `"unhealthy_timeout": 3000000000`, "", 3 * time.Second, unhealthyOf},
		{"", "", "unhealthy_timeout", 30 * time.Second, unhealthyOf},
		{"idle_timeout 15m", `"idle_timeout": 900000000000`, "", 15 * time.Minute, idleOf},
		{"idle_timeout 0", "", "", 0, idleOf},
		{"", "", "", 0, idleOf},
	} {
		t.Run(tc.line, func(t *testing.T) {
			caddyfile := "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n"
			if tc.line != "" {
				caddyfile += "\t\t\t" + tc.line + "\n"
			}
			caddyfile += "\t\t}\n\t}\n}\n"
			out := mustAdapt(t, []byte(caddyfile), true)
			if tc.json != "" && !bytes.Contains(out, []byte(tc.json)) {
				t.Errorf("adapted JSON lacks %s:\n%s", tc.json, out)
			}
			if tc.noJSON != "" && bytes.Contains(out, []byte(tc.noJSON)) {
				t.Errorf("adapted JSON has %s:\n%s", tc.noJSON, out)
			}
			if got := tc.got(adaptedSpec(t, out, "blog")); got != tc.want {
				t.Errorf("%s: %s, want %s", tc.line, got, tc.want)
			}
		})
	}
}

func unhealthyOf(s engine.AppSpec) time.Duration { return s.UnhealthyTimeout }
func idleOf(s engine.AppSpec) time.Duration      { return s.IdleTimeout }

// adaptedSpec returns the spec of app in an adapted config.
func adaptedSpec(t *testing.T, adapted []byte, app string) engine.AppSpec {
	t.Helper()
	var cfg struct {
		Apps struct {
			Podswitch App `json:"podswitch"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	spec, err := cfg.Apps.Podswitch.Apps[app].Spec(app)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}
