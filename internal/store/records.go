package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Records keeps each app's record in a JSON file of its own,
// <dir>/<app>.json. Save writes synchronously and durably: the engine
// relies on the order of its writes (a release is recorded as serving
// before the old one is stopped) to survive a crash at any point.
type Records struct {
	dir string
}

// NewRecords returns the records kept in dir.
func NewRecords(dir string) *Records { return &Records{dir: dir} }

// recordFile is the content of a record file.
type recordFile struct {
	App    string           `json:"app"`
	Record engine.AppRecord `json:"record"`
}

func (r *Records) path(app string) string { return filepath.Join(r.dir, app+".json") }

// Load returns the record of app: a zero record when there is none, an
// error when the file cannot be read or is damaged. A damaged file is
// moved aside (<app>.json.damaged) so that the next save does not hide it.
func (r *Records) Load(app string) (engine.AppRecord, error) {
	if !engine.ValidName(app) {
		return engine.AppRecord{}, fmt.Errorf("app name %q", app)
	}
	b, err := os.ReadFile(r.path(app))
	if errors.Is(err, fs.ErrNotExist) {
		return engine.AppRecord{}, nil
	}
	if err != nil {
		return engine.AppRecord{}, err
	}
	rec, err := decodeRecord(app, b)
	if err != nil {
		_ = os.Rename(r.path(app), r.path(app)+".damaged")
		return engine.AppRecord{}, fmt.Errorf("%s (moved to %s.damaged): %w", r.path(app), r.path(app), err)
	}
	return rec, nil
}

// decodeRecord decodes b, the content of app's record (a file or a
// shared key): an error when it does not decode or is another app's.
func decodeRecord(app string, b []byte) (engine.AppRecord, error) {
	var f recordFile
	if err := json.Unmarshal(b, &f); err != nil {
		return engine.AppRecord{}, err
	}
	if f.App != app {
		return engine.AppRecord{}, fmt.Errorf("it is the record of app %q", f.App)
	}
	return f.Record, nil
}

// Save replaces the record of app, and returns once it is on disk.
func (r *Records) Save(app string, rec engine.AppRecord) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	b, err := json.MarshalIndent(recordFile{App: app, Record: rec}, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(r.dir, app+".json", b)
}

// Archive moves the record of app aside, to
// <dir>/removed/<app>-<UTC time>.json, where it stays for a person to read
// (nothing deletes it); a missing record is fine.
func (r *Records) Archive(app string) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	if _, err := os.Stat(r.path(app)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	aside := filepath.Join(r.dir, "removed")
	if err := os.MkdirAll(aside, 0o700); err != nil {
		return err
	}
	to := filepath.Join(aside, app+"-"+time.Now().UTC().Format("20060102T150405.000000000Z")+".json")
	if err := os.Rename(r.path(app), to); err != nil {
		return err
	}
	return syncDir(r.dir)
}

// Apps returns the apps that have a record, sorted.
func (r *Records) Apps() ([]string, error) {
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var apps []string
	for _, e := range entries {
		app, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && e.Type().IsRegular() && engine.ValidName(app) {
			apps = append(apps, app)
		}
	}
	return apps, nil
}

// Interface guard
var _ engine.Store = (*Records)(nil)
