package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
)

// historyLimit is how many deployments a history file keeps (the engine
// remembers as many).
const historyLimit = 50

var (
	historyOnce sync.Once
	historyMain *fileHistory
)

// defaultHistory returns the process's deployment history store, under
// caddy.AppDataDir()/podswitch/history. It is made once per process and
// flushed when Caddy exits.
func defaultHistory() engine.History {
	historyOnce.Do(func() {
		historyMain = newFileHistory(filepath.Join(caddy.AppDataDir(), "podswitch", "history"), caddy.Log().Named("podswitch.history"))
		caddy.OnExit(func(context.Context) { historyMain.Close() })
	})
	return historyMain
}

// fileHistory keeps each app's deployments in a JSON file of its own,
// <dir>/<app>.json, so that they survive a restart of Caddy. Save only
// records the deployments and wakes a background writer, which writes the
// newest state of every app that changed, atomically (temporary file, then
// rename); saves that come faster than the disk coalesce.
type fileHistory struct {
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

func newFileHistory(dir string, log *zap.Logger) *fileHistory {
	if log == nil {
		log = zap.NewNop()
	}
	h := &fileHistory{
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

func (h *fileHistory) path(app string) string { return filepath.Join(h.dir, app+".json") }

// Load returns the deployments of app, oldest first: the newest state
// saved in this process, or else what its file holds.
func (h *fileHistory) Load(app string) []engine.Deployment {
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
func (h *fileHistory) Save(app string, deployments []engine.Deployment) {
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
	if n := len(ds); n > historyLimit {
		ds = slices.Clone(ds[n-historyLimit:])
	}
	return ds
}

func (h *fileHistory) run() {
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
func (h *fileHistory) Flush() {
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
func (h *fileHistory) Close() {
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
func (h *fileHistory) write(app string, ds []engine.Deployment) error {
	if ds == nil {
		ds = []engine.Deployment{}
	}
	b, err := json.MarshalIndent(historyFile{App: app, Deployments: ds}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(h.dir, "."+app+".json.tmp-*")
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
	if err := os.Rename(tmp.Name(), h.path(app)); err != nil {
		return fmt.Errorf("replacing %s: %w", h.path(app), err)
	}
	return nil
}

// Interface guard
var _ engine.History = (*fileHistory)(nil)
