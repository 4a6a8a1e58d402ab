package engine

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
)

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{"64m": 64 << 20, "512MiB": 512 << 20, "1g": 1 << 30, "1.5G": 3 << 29, "10485760": 10 << 20, "8192k": 8 << 20} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1m", "", "m", "64x", "1k", "5m"} {
		if got, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseVolume(t *testing.T) {
	good := map[string]Volume{
		"data:/data":             {Source: "data", Target: "/data"},
		"/srv/x:/x:ro":           {Source: "/srv/x", Target: "/x", ReadOnly: true},
		"my_vol.1:/var/lib/x:rw": {Source: "my_vol.1", Target: "/var/lib/x"},
	}
	for in, want := range good {
		if got, err := ParseVolume(in); err != nil || got != want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"data", "./data:/data", "data/x:/data", "data:rel", "data:/", ":/data", "data:/x:rx", "/a/../b:/x"} {
		if got, err := ParseVolume(in); err == nil {
			t.Errorf("ParseVolume(%q) = %+v, want an error", in, got)
		}
	}
}

// Settings make a new release, and a spec without any keeps the key it
// had before settings existed.
func TestReleaseIDSettings(t *testing.T) {
	base := AppSpec{Name: "blog", Image: "localhost/blog:v1", Port: 5000, Processes: []ProcessSpec{{Name: WebProcess, Count: 1}}}
	// The key of this spec before settings existed.
	if got, want := base.ReleaseID(), "a75513619784"; releaseKey.Load() == nil && got != want {
		t.Errorf("release of a spec without settings is %s, want %s as before", got, want)
	}
	empty := base
	empty.Processes = []ProcessSpec{{Name: WebProcess, Count: 1, Settings: &Settings{}}}
	if empty.ReleaseID() != base.ReleaseID() {
		t.Error("an empty process override changed the release")
	}
	seen := map[string]string{base.ReleaseID(): "none"}
	for name, s := range map[string]Settings{
		"memory": {Memory: 64 << 20}, "cpus": {CPUs: 0.5}, "network": {Networks: []string{"a"}},
		"volume": {Volumes: []Volume{{Source: "v", Target: "/v"}}}, "volume ro": {Volumes: []Volume{{Source: "v", Target: "/v", ReadOnly: true}}},
		"user": {User: "1000"},
	} {
		app := base
		app.Settings = s
		proc := base
		proc.Processes = []ProcessSpec{{Name: WebProcess, Count: 1, Settings: &s}}
		for kind, sp := range map[string]AppSpec{"app " + name: app, "web " + name: proc} {
			id := sp.ReleaseID()
			if prev, dup := seen[id]; dup {
				t.Errorf("%s has the release of %s", kind, prev)
			}
			seen[id] = kind
		}
	}
}

func TestSettingsOver(t *testing.T) {
	app := Settings{Memory: 1 << 30, Networks: []string{"a", "b"}, User: "app"}
	got := app.Over(&Settings{Networks: []string{"c"}, CPUs: 1})
	if got.Memory != 1<<30 || got.CPUs != 1 || len(got.Networks) != 1 || got.Networks[0] != "c" || got.User != "app" {
		t.Errorf("Over = %+v", got)
	}
	if got := app.Over(nil); got.Memory != app.Memory || got.User != "app" {
		t.Errorf("Over(nil) = %+v", got)
	}
}

// Each container gets the settings of its process type, a web one the
// aliases <app> and <app>-web and the label of its first network.
func TestContainerSettingsReachRuntime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		worker := &Settings{CPUs: 2}
		spec := appSpec(t, "localhost/blog:v1", 1, ProcessSpec{Name: "worker", Count: 1, Settings: worker})
		spec.Settings = Settings{Memory: 64 << 20, Networks: []string{"appnet", "other"}, User: "1000"}
		h.deployFirst(spec)
		web, _ := h.rt.Spec(h.containers(spec.ReleaseID(), WebProcess)[0])
		if want := spec.Settings; !reflect.DeepEqual(web.Settings, want) {
			t.Errorf("web settings %+v, want %+v", web.Settings, want)
		}
		if want := []string{appName, appName + "-web"}; !slices.Equal(web.Aliases, want) {
			t.Errorf("web aliases %v, want %v", web.Aliases, want)
		}
		if web.Labels[LabelNetwork] != "appnet" {
			t.Errorf("web label %s = %q, want appnet", LabelNetwork, web.Labels[LabelNetwork])
		}
		w, _ := h.rt.Spec(h.containers(spec.ReleaseID(), "worker")[0])
		if w.Settings.CPUs != 2 || w.Settings.Memory != 64<<20 || w.Settings.User != "1000" {
			t.Errorf("worker settings %+v, want the app's with cpus 2", w.Settings)
		}
	})
}

// A release killed for its memory limit ends crashed-error saying so.
func TestOOMKilledCrashNote(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 1)
		s, _ := h.deployFirst(v1)
		h.rt.OnEnv("BIG", "1", behavior{Crash: true, OOM: true})
		v2 := appSpec(t, "localhost/blog:v1", 1)
		v2.Env["BIG"] = "1"
		v2.Settings.Memory = 64 << 20
		d := h.waitDone(s, s.Update(v2).ID)
		if d.Status != StatusCrashedError || !strings.Contains(d.Error, "out of memory (OOMKilled, exit code 137)") {
			t.Errorf("deployment %s %q, want crashed-error saying out of memory (OOMKilled)", d.Status, d.Error)
		}
	})
}

// A postdeploy hook killed for its memory limit fails the deployment
// saying so; a hook that exits 137 otherwise gives its code only.
func TestOOMKilledHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		for _, oom := range []bool{true, false} {
			v2 := appSpec(t, "localhost/blog:v2", 1)
			v2.Postdeploy = []string{"migrate"}
			v2.Settings.Memory = 64 << 20
			if !oom {
				v2.Env["OTHER"] = "1"
			}
			h.rt.OnProcess(HookProcess, behavior{HookExit: 137, OOM: oom})
			d := h.waitDone(s, s.Update(v2).ID)
			says := strings.Contains(d.Error, "out of memory (OOMKilled, exit code 137)")
			if d.Status != StatusHookError || says != oom || !strings.Contains(d.Error, "137") {
				t.Errorf("oom=%v: deployment %s %q", oom, d.Status, d.Error)
			}
		}
	})
}

// A kept release keeps its settings (the app's and a process type's): run
// again from its record, it is the same release.
func TestReleaseRecordKeepsSettings(t *testing.T) {
	spec := AppSpec{Name: "blog", Image: "localhost/blog:v1", Port: 5000, Processes: []ProcessSpec{
		{Name: WebProcess, Count: 1, Settings: &Settings{Memory: 64 << 20}},
	}}
	spec.Settings = Settings{Networks: []string{"appnet"}, Volumes: []Volume{{Source: "data", Target: "/data", ReadOnly: true}}, User: "1000"}
	b, err := json.Marshal(spec.record())
	if err != nil {
		t.Fatal(err)
	}
	var rec SpecRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	base := AppSpec{Name: "blog", Image: "localhost/blog:v2", Processes: []ProcessSpec{{Name: WebProcess, Count: 3}}}
	got, err := base.withRelease(rec, identityEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Settings, spec.Settings) || got.SettingsOf(WebProcess).Memory != 64<<20 {
		t.Errorf("settings from the record %+v (web %+v), want %+v", got.Settings, got.SettingsOf(WebProcess), spec.Settings)
	}
	if got.ReleaseID() != spec.ReleaseID() {
		t.Errorf("release from the record %s, want %s", got.ReleaseID(), spec.ReleaseID())
	}
	if none := (AppSpec{Name: "blog", Image: "x"}).record(); none.Settings != nil {
		t.Errorf("a spec without settings records %+v", none.Settings)
	}
}
