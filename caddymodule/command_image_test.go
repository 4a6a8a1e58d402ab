package caddymodule

import (
	"bytes"
	"strings"
	"testing"

	"github.com/podswitch/podswitch/internal/engine"
)

// The CLI shows a release's tag with the short ID it pins, and the tag
// alone for a release that runs by reference.
func TestCommandShowsImageID(t *testing.T) {
	const id = "3f2a9c1d0b7e5566778899aabbccddeeff00112233445566778899aabbccddee"
	st := engine.AppStatus{
		Name:    "blog",
		Release: &engine.ReleaseInfo{ID: "r1", Image: "localhost/blog:v2", ImageID: id, Status: engine.StatusSuccess, Deployment: 2},
		Desired: "r1", Image: "localhost/blog:v2", ImageID: id,
		Deployments: []engine.Deployment{
			{ID: 2, Kind: engine.KindDeploy, Image: "localhost/blog:v2", ImageID: id, Release: "r1", Status: engine.StatusSuccess},
			{ID: 1, Kind: engine.KindDeploy, Image: "localhost/blog:v1", Release: "r0", Status: engine.StatusSuccess},
		},
	}
	var app, list, hist bytes.Buffer
	printApp(&app, st)
	printApps(&list, []engine.AppStatus{st})
	printHistory(&hist, st.Deployments)
	for what, out := range map[string]string{"status": app.String(), "apps": list.String(), "history": hist.String()} {
		if !strings.Contains(out, "localhost/blog:v2 (3f2a9c1d0b7e)") || strings.Contains(out, id) {
			t.Errorf("%s output does not show the tag with the short ID:\n%s", what, out)
		}
	}
	if !strings.Contains(hist.String(), "localhost/blog:v1  ") || strings.Contains(hist.String(), "localhost/blog:v1 (") {
		t.Errorf("history shows an ID for a release that runs by reference:\n%s", hist.String())
	}
	if got := describeDeployment("blog", st.Deployments[0]); !strings.Contains(got, "deploy localhost/blog:v2 (3f2a9c1d0b7e)") {
		t.Errorf("describeDeployment = %q", got)
	}
}
