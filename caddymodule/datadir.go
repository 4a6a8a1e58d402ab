package caddymodule

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// dataDirLock is the lock on podswitch's data dir that keeps a second
// process away from it: two processes on one data dir would share one
// instance id and take each other's containers for their own. It is held
// by the process for as long as a host lives; hosts of one process take it
// in turn (a new host may be made while the previous one still stops its
// apps), so it is counted. It must not be copied.
type dataDirLock struct {
	mu   sync.Mutex
	f    *os.File
	refs int
}

var dirLock dataDirLock

// acquire takes the lock on dir (a file "lock" in it, locked with flock),
// or a reference on it when this process holds it. It fails with a clear
// error when another process holds it.
func (l *dataDirLock) acquire(dir string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refs > 0 {
		if want := filepath.Join(dir, "lock"); l.f.Name() != want {
			return fmt.Errorf("podswitch data dir: this process already uses %s, not %s", filepath.Dir(l.f.Name()), dir)
		}
		l.refs++
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("podswitch data dir: %w", err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("podswitch data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("podswitch data dir %s is in use by another process (it holds %s): "+
				"two processes on one data dir would take each other's containers; stop the other one, "+
				"or give this one a data dir of its own (XDG_DATA_HOME)", dir, path)
		}
		return fmt.Errorf("podswitch data dir: locking %s: %w", path, err)
	}
	l.f, l.refs = f, 1
	return nil
}

// release drops a reference; the last one unlocks the data dir.
func (l *dataDirLock) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refs == 0 {
		return
	}
	l.refs--
	if l.refs == 0 {
		l.f.Close() // closing the only descriptor drops the flock
		l.f = nil
	}
}

// instanceID returns the id of this podswitch instance, kept in
// <dir>/instance: made once (128 random bits, in hex), then read back at
// every start. Call it with the data dir locked.
func instanceID(dir string) (string, error) {
	path := filepath.Join(dir, "instance")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) == 32 {
			if _, err := hex.DecodeString(id); err == nil {
				return id, nil
			}
		}
		return "", fmt.Errorf("podswitch instance id in %s is damaged (%q): fix or remove it "+
			"(a new id makes the containers of this instance another's)", path, id)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("podswitch instance id: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("podswitch instance id: %w", err)
	}
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("podswitch instance id: writing %s: %w", path, err)
	}
	return id, nil
}
