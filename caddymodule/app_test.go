package caddymodule

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// caddyTestMu serializes the tests that load configs into the process's
// Caddy (there is one running config per process).
var caddyTestMu sync.Mutex

// testPodman is the Podman address of the configs the tests load: nothing
// answers there, so the engine only waits for it and touches no container.
const testPodman = "unix:///nonexistent/podswitch-test.sock"

func init() {
	caddy.RegisterModule(failStartApp{})
	caddy.RegisterModule(failLoader{})
}

// failStartApp is an app that fails to start, so that Caddy refuses its
// config after provisioning it. It provisions the podswitch app first, so
// that podswitch is part of what Caddy refuses; depending on the order Caddy
// starts apps in, podswitch has started or not.
type failStartApp struct{}

func (failStartApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "podswitch_test_fail_start", New: func() caddy.Module { return new(failStartApp) }}
}

func (*failStartApp) Provision(ctx caddy.Context) error {
	_, err := ctx.App("podswitch")
	return err
}
func (*failStartApp) Start() error { return errors.New("failing to start on purpose") }
func (*failStartApp) Stop() error  { return nil }

// failLoader is a config loader that cannot be provisioned: Caddy sets it up
// once every app of the config started, so its failure refuses a config
// whose podswitch app has started.
type failLoader struct{}

func (failLoader) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.config_loaders.podswitch_test_fail", New: func() caddy.Module { return new(failLoader) }}
}

func (*failLoader) Provision(caddy.Context) error { return errors.New("failing loader on purpose") }
func (*failLoader) LoadConfig(caddy.Context) ([]byte, error) {
	return nil, errors.New("the failing loader was called")
}

// loadPodswitchConfig loads into Caddy a config with the podswitch app
// whose apps are apps (JSON), more apps (extraApps: `, "name": {...}`) and
// the admin config (adminConfig: `, "config": {...}` or empty).
func loadPodswitchConfig(t *testing.T, apps, extraApps, adminConfig string) error {
	t.Helper()
	if adminConfig == "" {
		adminConfig = `, "config": {"persist": false}`
	}
	cfg := `{"admin": {"disabled": true` + adminConfig + `}, "apps": {
		"podswitch": {"podman": "` + testPodman + `", "apps": ` + apps + `}` + extraApps + `}}`
	return caddy.Load([]byte(cfg), true)
}

// waitCommitted waits until the host follows the podswitch app of the
// running config and returns both.
func waitCommitted(t *testing.T) (*host, *App) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := caddy.ActiveContext().AppIfConfigured("podswitch")
		a, _ := v.(*App)
		if h := currentHost(); err == nil && a != nil && h != nil {
			h.mu.Lock()
			committed := h.committed
			h.mu.Unlock()
			if committed == a {
				return h, a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine does not follow the running config (err %v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A config that Caddy refuses, whether before or after its podswitch app
// started, changes nothing: the engine keeps following the running config
// (its apps, its images, its notify target). A config that runs is
// followed. Once Caddy stops with no config running, the host goes and the
// apps are left for the next start, not stopped.
func TestRefusedReloadChangesNothing(t *testing.T) {
	caddyTestMu.Lock()
	defer caddyTestMu.Unlock()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	if err := loadPodswitchConfig(t, `{"blog": {"image": "localhost/blog:v1"}}`, "", ""); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	h, running := waitCommitted(t)
	m := h.manager
	if got := m.App("blog").Status().Image; got != "localhost/blog:v1" {
		t.Fatalf("desired image %q after the first config, want localhost/blog:v1", got)
	}
	target := h.target.Load()
	if target == nil || target != running.notify {
		t.Fatalf("notify target %p, want the running config's %p", target, running.notify)
	}

	refused := `{"blog": {"image": "localhost/blog:v2"}, "shop": {"image": "localhost/shop:v1"}}`
	for _, tc := range []struct {
		name, extraApps, adminConfig string
		// times: Caddy starts apps in map order, so the refusal of an
		// app that fails to start comes before or after podswitch's
		// start; a few tries cover both.
		times int
	}{
		{"an app fails to start", `, "podswitch_test_fail_start": {}`, "", 6},
		{"the config loader fails once every app started", "", `, "config": {"persist": false, "load": {"module": "podswitch_test_fail"}}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range tc.times {
				err := loadPodswitchConfig(t, refused, tc.extraApps, tc.adminConfig)
				if err == nil || !strings.Contains(err.Error(), "on purpose") {
					t.Fatalf("load of the refused config: %v, want the failure made on purpose", err)
				}
				if apps := m.Apps(); !slices.Equal(apps, []string{"blog"}) {
					t.Errorf("apps %v after the refused config, want [blog]", apps)
				}
				if got := m.App("blog").Status().Image; got != "localhost/blog:v1" {
					t.Errorf("desired image %q after the refused config, want the running config's localhost/blog:v1", got)
				}
				if currentHost() != h {
					t.Fatal("another engine after the refused config")
				}
				h.mu.Lock()
				committed := h.committed
				h.mu.Unlock()
				if committed != running || h.target.Load() != target {
					t.Errorf("the engine follows the refused config (or its notify target)")
				}
			}
		})
	}

	// A config that runs is followed, by the same engine.
	if err := loadPodswitchConfig(t, `{"blog": {"image": "localhost/blog:v2"}}`, "", ""); err != nil {
		t.Fatalf("load: %v", err)
	}
	h2, next := waitCommitted(t)
	if h2 != h || next == running {
		t.Fatalf("host %p following %p after a reload, want host %p following the new config", h2, next, h)
	}
	if got := m.App("blog").Status().Image; got != "localhost/blog:v2" {
		t.Errorf("desired image %q after the reload, want localhost/blog:v2", got)
	}
	if h.target.Load() != next.notify {
		t.Error("the notify target is not the new config's")
	}

	// No config runs after this: as after a failed start or an exit.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if currentHost() != nil || currentManager() != nil {
		t.Error("the host outlived the last config")
	}
	if apps := m.Apps(); !slices.Equal(apps, []string{"blog"}) {
		t.Errorf("apps %v after Caddy stopped, want blog left alone for the next start", apps)
	}
}
