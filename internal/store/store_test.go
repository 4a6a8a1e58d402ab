package store

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// The history writes each app's deployments to its own file, at most
// HistoryLimit of them, and gives them back to a new store.
func TestHistory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "history")
	h := NewHistory(dir, nil)
	var ds []engine.Deployment
	for i := 1; i <= 70; i++ {
		ds = append(ds, engine.Deployment{ID: int64(i), Kind: engine.KindDeploy, Image: fmt.Sprintf("x:v%d", i), Status: engine.StatusSuccess, StartedAt: time.Unix(int64(i), 0).UTC()})
		h.Save("blog", slices.Clone(ds))
	}
	h.Save("other", ds[:1])
	h.Save("../evil", ds[:1])
	h.Close()

	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	slices.Sort(files)
	if want := []string{filepath.Join(dir, "blog.json"), filepath.Join(dir, "other.json")}; !slices.Equal(files, want) {
		t.Errorf("files %v, want %v (and no temporary file left)", files, want)
	}
	h2 := NewHistory(dir, nil)
	defer h2.Close()
	got := h2.Load("blog")
	if len(got) != HistoryLimit || got[0].ID != 21 || got[len(got)-1].ID != 70 || !got[0].StartedAt.Equal(time.Unix(21, 0)) {
		t.Fatalf("loaded %d deployments, %+v ... %+v", len(got), got[0], got[len(got)-1])
	}
	if got := h2.Load("none"); got != nil {
		t.Errorf("Load of an app without a file = %v", got)
	}
	// A damaged file is ignored, not fatal.
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := h2.Load("broken"); got != nil {
		t.Errorf("Load of a damaged file = %v", got)
	}
	// Save returns at once and a later Load in the same process sees it.
	h2.Save("blog", ds[:2])
	if got := h2.Load("blog"); len(got) != 2 {
		t.Errorf("Load after Save = %d deployments, want 2", len(got))
	}
}

// Records are written durably and read back; a missing one is empty, a
// damaged one is an error and is moved aside, so that the engine starts from
// an empty record and the next save does not hide the damage.
func TestRecords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r := NewRecords(dir)
	if rec, err := r.Load("blog"); err != nil || rec.Serving != nil {
		t.Fatalf("Load of a missing record = %+v, %v", rec, err)
	}
	want := engine.AppRecord{
		Serving:   &engine.ReleaseRecord{ID: "abc", Spec: engine.SpecRecord{Image: "x:v1", EnvSource: map[string]string{"K": "{env.K}"}, Port: 5000}},
		Deploying: &engine.DeployingRecord{Release: "def", Deployment: 4},
		Overrides: engine.Overrides{Image: &engine.ImageOverride{Image: "x:v2", ConfigImage: "x:v1", Op: engine.OpDeploy}},
	}
	if err := r.Save("blog", want); err != nil {
		t.Fatal(err)
	}
	got, err := NewRecords(dir).Load("blog")
	if err != nil {
		t.Fatal(err)
	}
	if got.Serving.ID != "abc" || got.Serving.Spec.EnvSource["K"] != "{env.K}" || got.Deploying.Deployment != 4 || got.Overrides.Image.Image != "x:v2" {
		t.Errorf("loaded %+v", got)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Errorf("files %v, want blog.json alone (no temporary file left)", files)
	}
	if err := r.Save("../evil", want); err == nil {
		t.Error("Save of a bad app name succeeded")
	}

	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"app": "broken", "record": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load("broken"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Load of a damaged record: %v, want an error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "broken.json.damaged")); err != nil {
		t.Errorf("damaged record not moved aside: %v", err)
	}
	if rec, err := r.Load("broken"); err != nil || rec.Serving != nil {
		t.Errorf("Load after the damaged record was moved aside = %+v, %v", rec, err)
	}

	if apps, err := r.Apps(); err != nil || !slices.Equal(apps, []string{"blog"}) {
		t.Errorf("Apps = %v, %v; want [blog]", apps, err)
	}
	if err := r.Archive("blog"); err != nil {
		t.Fatal(err)
	}
	if err := r.Archive("blog"); err != nil {
		t.Errorf("Archive of a missing record: %v", err)
	}
	if rec, _ := r.Load("blog"); rec.Serving != nil {
		t.Error("record still there after Archive")
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "removed", "blog-*.json"))
	if len(aside) != 1 {
		t.Fatalf("records moved aside: %v, want one", aside)
	}
	b, err := os.ReadFile(aside[0])
	if err != nil || !strings.Contains(string(b), `"x:v2"`) {
		t.Errorf("record moved aside: %s, %v", b, err)
	}
	if apps, err := r.Apps(); err != nil || len(apps) != 0 {
		t.Errorf("Apps after Archive = %v, %v; want none", apps, err)
	}
}
