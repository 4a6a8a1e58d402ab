package caddymodule

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
)

var releaseKeyOnce sync.Once

// setReleaseKey gives the engine the secret release IDs are derived with,
// kept in Caddy's data directory so that IDs (and so adoption) survive
// restarts. Without a usable data directory IDs are plain hashes.
func setReleaseKey(log *zap.Logger) {
	releaseKeyOnce.Do(func() {
		path := filepath.Join(caddy.AppDataDir(), "podswitch", "release.key")
		key, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			key = make([]byte, 32)
			_, _ = rand.Read(key)
			if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
				err = os.WriteFile(path, key, 0o600)
			}
		}
		if err != nil || len(key) < 16 {
			log.Warn("no release key: release ids are plain hashes of the release, env values included",
				zap.String("path", path), zap.Error(err))
			return
		}
		engine.SetReleaseKey(key)
	})
}

// localReleaseKey returns the release key in Caddy's data directory, nil
// when there is none (it is not made here).
func localReleaseKey() []byte {
	key, err := os.ReadFile(filepath.Join(caddy.AppDataDir(), "podswitch", "release.key"))
	if err != nil || len(key) < 16 {
		return nil
	}
	return key
}
