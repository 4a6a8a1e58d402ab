package engine

import "testing"

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
