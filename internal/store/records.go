package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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
	var f recordFile
	if err := json.Unmarshal(b, &f); err != nil || f.App != app {
		if err == nil {
			err = fmt.Errorf("it is the record of app %q", f.App)
		}
		_ = os.Rename(r.path(app), r.path(app)+".damaged")
		return engine.AppRecord{}, fmt.Errorf("%s (moved to %s.damaged): %w", r.path(app), r.path(app), err)
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

// Delete removes the record of app; a missing one is fine.
func (r *Records) Delete(app string) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	if err := os.Remove(r.path(app)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Interface guard
var _ engine.Store = (*Records)(nil)
