// Package store keeps what podswitch must remember across restarts of Caddy,
// in files under Caddy's data directory: each app's deployment history and
// each app's record (the serving release, a deployment in progress, the
// overrides of operations, pause and maintenance). Files are replaced
// atomically (a temporary file, fsync, rename, fsync of the folder), so that
// a crash leaves the old content or the new, never a mix.
//
// When several proxies share Caddy's storage, SharedRecords and
// SharedHistory keep the same state there instead, written only by each
// app's leader (through a fence), and Mailbox and Heartbeats carry
// operations and liveness between the proxies.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
)

// HistoryLimit is how many deployments a history file keeps (the engine
// remembers as many).
const HistoryLimit = 50

// History keeps each app's deployments in a JSON file of its own,
// <dir>/<app>.json, so that they survive a restart of Caddy. Save only
// records the deployments and wakes a background writer, which writes the
// newest state of every app that changed, atomically (temporary file, then
// rename); saves that come faster than the disk coalesce.
type History struct {
	dir string
	log *zap.Logger

	mu     sync.Mutex
	latest map[string][]engine.Deployment // the newest state of each app saved or loaded
	dirty  map[string]bool                // apps whose newest state is not on disk yet
	closed bool

	// writing serializes flushes, so that an older state is never written
	// after a newer one.
	writing sync.Mutex
	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

// historyFile is the content of a history file.
type historyFile struct {
	App string `json:"app"`
	// Deployments are oldest first.
	Deployments []engine.Deployment `json:"deployments"`
}

// NewHistory returns a history kept in dir, one file per app. Close it
// to write what is pending.
func NewHistory(dir string, log *zap.Logger) *History {
	if log == nil {
		log = zap.NewNop()
	}
	h := &History{
		dir:     dir,
		log:     log,
		latest:  map[string][]engine.Deployment{},
		dirty:   map[string]bool{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go h.run()
	return h
}

func (h *History) path(app string) string { return filepath.Join(h.dir, app+".json") }

// Load returns the deployments of app, oldest first: the newest state
// saved in this process, or else what its file holds.
func (h *History) Load(app string) []engine.Deployment {
	if !engine.ValidName(app) {
		return nil
	}
	h.mu.Lock()
	if ds, ok := h.latest[app]; ok {
		h.mu.Unlock()
		return slices.Clone(ds)
	}
	h.mu.Unlock()
	b, err := os.ReadFile(h.path(app))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.log.Error("reading deployment history", zap.String("app", app), zap.Error(err))
		}
		return nil
	}
	var f historyFile
	if err := json.Unmarshal(b, &f); err != nil {
		h.log.Error("deployment history file is damaged; starting afresh", zap.String("app", app), zap.String("file", h.path(app)), zap.Error(err))
		return nil
	}
	ds := trimHistory(f.Deployments)
	h.mu.Lock()
	if _, ok := h.latest[app]; !ok {
		h.latest[app] = ds
	}
	h.mu.Unlock()
	return slices.Clone(ds)
}

// Save records the deployments of app (oldest first) and has them written
// in the background. It is called with the app's lock held: it does not
// touch the disk.
func (h *History) Save(app string, deployments []engine.Deployment) {
	if !engine.ValidName(app) {
		return
	}
	ds := trimHistory(slices.Clone(deployments))
	h.mu.Lock()
	h.latest[app] = ds
	h.dirty[app] = true
	closed := h.closed
	h.mu.Unlock()
	if closed {
		// Nothing runs in the background any more.
		h.Flush()
		return
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func trimHistory(ds []engine.Deployment) []engine.Deployment {
	if n := len(ds); n > HistoryLimit {
		ds = slices.Clone(ds[n-HistoryLimit:])
	}
	return ds
}

func (h *History) run() {
	defer close(h.stopped)
	for {
		select {
		case <-h.wake:
			h.Flush()
		case <-h.stop:
			h.Flush()
			return
		}
	}
}

// Flush writes every app whose newest state is not on disk yet, and
// returns when it is written.
func (h *History) Flush() {
	h.writing.Lock()
	defer h.writing.Unlock()
	h.mu.Lock()
	todo := make(map[string][]engine.Deployment, len(h.dirty))
	for app := range h.dirty {
		todo[app] = h.latest[app]
	}
	clear(h.dirty)
	h.mu.Unlock()
	for app, ds := range todo {
		if err := h.write(app, ds); err != nil {
			h.log.Error("writing deployment history", zap.String("app", app), zap.Error(err))
			// Try again with the next save.
			h.mu.Lock()
			h.dirty[app] = true
			h.mu.Unlock()
		}
	}
}

// Close writes what is pending and ends the background writer. Saves after
// Close are written at once.
func (h *History) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.mu.Unlock()
	close(h.stop)
	<-h.stopped
}

// write replaces the file of app atomically.
func (h *History) write(app string, ds []engine.Deployment) error {
	if ds == nil {
		ds = []engine.Deployment{}
	}
	b, err := json.MarshalIndent(historyFile{App: app, Deployments: ds}, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(h.dir, app+".json", b)
}

// writeFile replaces dir/name with b atomically and durably: a temporary
// file, fsync, rename, then fsync of the folder so that the rename itself
// survives a crash.
func writeFile(dir, name string, b []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails once renamed; that is fine
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes the entries of dir (a rename) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Interface guard
var _ engine.History = (*History)(nil)
