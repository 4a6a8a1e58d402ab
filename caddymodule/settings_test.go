package caddymodule

import (
	"reflect"
	"testing"

	"github.com/podswitch/podswitch/internal/engine"
)

// The settings of an app block, and of the blocks of web and process lines,
// reach the engine's spec: the app's for all, each process type's where it
// overrides them.
func TestAdaptedContainerSettings(t *testing.T) {
	cf := "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n" +
		"\t\t\tmemory 256m\n\t\t\tcpus 0.5\n\t\t\tnetwork appnet other\n" +
		"\t\t\tvolume blogdata:/data\n\t\t\tvolume /srv/uploads:/uploads:ro\n\t\t\tuser 1000:1000\n" +
		"\t\t\tweb 2 {\n\t\t\t\tmemory 128m\n\t\t\t}\n" +
		"\t\t\tprocess worker 1 bin/worker {\n\t\t\t\tcpus 2\n\t\t\t\tnetwork jobs\n\t\t\t}\n" +
		"\t\t\tprocess clock 1 bin/clock\n\t\t}\n\t}\n}\n"
	out := mustAdapt(t, []byte(cf), true)
	spec := adaptedSpec(t, out, "blog")
	app := engine.Settings{
		Memory: 256 << 20, CPUs: 0.5, Networks: []string{"appnet", "other"}, User: "1000:1000",
		Volumes: []engine.Volume{{Source: "blogdata", Target: "/data"}, {Source: "/srv/uploads", Target: "/uploads", ReadOnly: true}},
	}
	if !reflect.DeepEqual(spec.Settings, app) {
		t.Errorf("app settings %+v, want %+v", spec.Settings, app)
	}
	web := app
	web.Memory = 128 << 20
	worker := app
	worker.CPUs, worker.Networks = 2, []string{"jobs"}
	for name, want := range map[string]engine.Settings{"web": web, "worker": worker, "clock": app} {
		if got := spec.SettingsOf(name); !reflect.DeepEqual(got, want) {
			t.Errorf("settings of %s: %+v, want %+v", name, got, want)
		}
	}
}
