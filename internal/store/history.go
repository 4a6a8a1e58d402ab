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
	w   *historyWriter
}

// historyFile is the content of a history file.
type historyFile struct {
	App string `json:"app"`
	// Deployments are oldest first.
	Deployments []engine.Deployment `json:"deployments"`
}

// encodeHistory returns the history file of app holding ds.
func encodeHistory(app string, ds []engine.Deployment) ([]byte, error) {
	if ds == nil {
		ds = []engine.Deployment{}
	}
	return json.MarshalIndent(historyFile{App: app, Deployments: ds}, "", "  ")
}

// NewHistory returns a history kept in dir, one file per app. Close it
// to write what is pending.
func NewHistory(dir string, log *zap.Logger) *History {
	if log == nil {
		log = zap.NewNop()
	}
	h := &History{dir: dir, log: log}
	h.w = newHistoryWriter(h.write, log)
	return h
}

func (h *History) path(app string) string { return filepath.Join(h.dir, app+".json") }

// Load returns the deployments of app, oldest first: the newest state
// saved in this process, or else what its file holds.
func (h *History) Load(app string) []engine.Deployment {
	if !engine.ValidName(app) {
		return nil
	}
	if ds, ok := h.w.newest(app); ok {
		return ds
	}
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
	h.w.loaded(app, ds)
	return slices.Clone(ds)
}

// Save records the deployments of app (oldest first) and has them written
// in the background. It is called with the app's lock held: it does not
// touch the disk.
func (h *History) Save(app string, deployments []engine.Deployment) { h.w.save(app, deployments) }

// Flush writes every app whose newest state is not on disk yet, and
// returns when it is written.
func (h *History) Flush() { h.w.flush() }

// Close writes what is pending and ends the background writer. Saves after
// Close are written at once.
func (h *History) Close() { h.w.close() }

// write replaces the file of app atomically.
func (h *History) write(app string, ds []engine.Deployment) error {
	b, err := encodeHistory(app, ds)
	if err != nil {
		return err
	}
	return writeFile(h.dir, app+".json", b)
}

func trimHistory(ds []engine.Deployment) []engine.Deployment {
	if n := len(ds); n > HistoryLimit {
		ds = slices.Clone(ds[n-HistoryLimit:])
	}
	return ds
}

// historyWriter is the background writer of History and SharedHistory. It
// keeps the newest state of each app saved (or loaded), and the apps whose
// newest state is not written yet; save records a state and wakes a
// goroutine, which writes the newest state of every such app with write,
// so that saves that come faster than the writes coalesce. Flushes are
// serialized, so that an older state is never written after a newer one.
//
// A write that fails is logged and tried again with the next save (or
// flush); one that fails with errRefused is logged at debug level and
// dropped.
type historyWriter struct {
	write func(app string, ds []engine.Deployment) error
	log   *zap.Logger

	mu     sync.Mutex
	latest map[string][]engine.Deployment // the newest state of each app saved or loaded
	dirty  map[string]bool                // apps whose newest state is not written yet
	closed bool

	// writing serializes flushes, so that an older state is never written
	// after a newer one.
	writing sync.Mutex
	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

// errRefused marks a write that was not made on purpose (the fence did not
// let it through): the writer drops it rather than trying it again.
var errRefused = errors.New("refused by the fence")

// newHistoryWriter starts a writer that writes with write and logs to log.
// Close it to write what is pending.
func newHistoryWriter(write func(app string, ds []engine.Deployment) error, log *zap.Logger) *historyWriter {
	w := &historyWriter{
		write:   write,
		log:     log,
		latest:  map[string][]engine.Deployment{},
		dirty:   map[string]bool{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go w.run()
	return w
}

// newest returns a copy of the newest state of app saved or loaded, if
// any.
func (w *historyWriter) newest(app string) ([]engine.Deployment, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ds, ok := w.latest[app]
	if !ok {
		return nil, false
	}
	return slices.Clone(ds), true
}

// loaded records ds, read from where the history is kept, as the newest
// state of app, unless a state was saved or loaded meanwhile. It is not
// written again.
func (w *historyWriter) loaded(app string, ds []engine.Deployment) {
	w.mu.Lock()
	if _, ok := w.latest[app]; !ok {
		w.latest[app] = ds
	}
	w.mu.Unlock()
}

// save records deployments (oldest first, at most HistoryLimit of them
// kept) as the newest state of app and has them written in the
// background, or at once after close. An invalid app name is ignored.
func (w *historyWriter) save(app string, deployments []engine.Deployment) {
	if !engine.ValidName(app) {
		return
	}
	ds := trimHistory(slices.Clone(deployments))
	w.mu.Lock()
	w.latest[app] = ds
	w.dirty[app] = true
	closed := w.closed
	w.mu.Unlock()
	if closed {
		// Nothing runs in the background any more.
		w.flush()
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// forget drops what was saved or loaded of app and is not written yet; a
// write already under way goes on.
func (w *historyWriter) forget(app string) {
	w.mu.Lock()
	delete(w.latest, app)
	delete(w.dirty, app)
	w.mu.Unlock()
}

func (w *historyWriter) run() {
	defer close(w.stopped)
	for {
		select {
		case <-w.wake:
			w.flush()
		case <-w.stop:
			w.flush()
			return
		}
	}
}

// flush writes every app whose newest state is not written yet, and
// returns when it is written (or refused, or failed).
func (w *historyWriter) flush() {
	w.writing.Lock()
	defer w.writing.Unlock()
	w.mu.Lock()
	todo := make(map[string][]engine.Deployment, len(w.dirty))
	for app := range w.dirty {
		todo[app] = w.latest[app]
	}
	clear(w.dirty)
	w.mu.Unlock()
	for app, ds := range todo {
		err := w.write(app, ds)
		switch {
		case errors.Is(err, errRefused):
			w.log.Debug("deployment history not written: the fence refused it", zap.String("app", app), zap.Error(err))
		case err != nil:
			w.log.Error("writing deployment history", zap.String("app", app), zap.Error(err))
			// Try again with the next save, unless forgotten meanwhile.
			w.mu.Lock()
			if _, ok := w.latest[app]; ok {
				w.dirty[app] = true
			}
			w.mu.Unlock()
		}
	}
}

// close writes what is pending and ends the background writer; saves
// after close are written at once.
func (w *historyWriter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.stopped
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
