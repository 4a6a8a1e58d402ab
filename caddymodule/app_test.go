package caddymodule

import (
	"testing"

	"go.uber.org/zap"
)

func testApp(t *testing.T, image string) *App {
	t.Helper()
	a := &App{
		// Nothing answers there: the supervisors only wait for it.
		Podman: "unix:///nonexistent/podswitch-test.sock",
		Apps:   map[string]*AppConfig{"blog": {Image: image}},
		logger: zap.NewNop(),
	}
	spec, err := a.Apps["blog"].Spec("blog")
	if err != nil {
		t.Fatal(err)
	}
	a.specs = append(a.specs, spec)
	return a
}

// A config that Caddy refuses after podswitch applied it (another app failed
// to start) must not stay the engine's desired state: the engine goes back
// to the config Caddy keeps. With no config running at the end (a failed
// first start), the apps are left for the next start, not stopped.
func TestRefusedReloadGoesBackToRunningConfig(t *testing.T) {
	running := testApp(t, "localhost/blog:v1")
	s := acquireShared(running)
	s.apply(running)
	m := s.manager
	if got := m.App("blog").Status().Image; got != "localhost/blog:v1" {
		t.Fatalf("desired image %q after the first config", got)
	}

	refused := testApp(t, "localhost/blog:v2")
	if acquireShared(refused) != s {
		t.Fatal("a second config got another engine")
	}
	s.apply(refused)
	if got := m.App("blog").Status().Image; got != "localhost/blog:v2" {
		t.Fatalf("desired image %q after the new config started", got)
	}
	s.release(refused) // Caddy stops and cleans up the refused config
	if got := m.App("blog").Status().Image; got != "localhost/blog:v1" {
		t.Errorf("desired image %q after the refused reload, want the running config's v1", got)
	}
	if currentManager() != m {
		t.Error("the engine was dropped while a config still uses it")
	}

	s.release(running) // no config runs in this test: as after a failed start
	if currentManager() != nil {
		t.Error("engine still current after the last config went")
	}
	if apps := m.Apps(); len(apps) != 1 {
		t.Errorf("apps %v after the last config went with no config running, want blog left alone", apps)
	}
}
