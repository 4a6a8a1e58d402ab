package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"
)

// Heartbeat is what a proxy tells the others of itself, at
// podswitch/proxies/<proxy>.json, rewritten every few seconds.
type Heartbeat struct {
	// Proxy is the proxy's own instance id.
	Proxy string `json:"proxy"`
	// Seq grows at every write: readers judge liveness by their own clock
	// since Seq changed.
	Seq uint64 `json:"seq"`
	// Version is the proxy's podswitch and Caddy version.
	Version string `json:"version"`
	// Config is a hash of its podswitch config.
	Config string `json:"config"`
	// Admin is the address of its admin API, if it is reachable.
	Admin string `json:"admin,omitempty"`
	// At is the writer's wall clock, for people.
	At time.Time `json:"at"`
	// Apps are the apps it routes, by name.
	Apps map[string]AppRoute `json:"apps"`
}

// AppRoute is how a proxy routes an app.
type AppRoute struct {
	// Release is the release it routes to.
	Release string `json:"release"`
	// Addrs are the upstreams in its pool, plus any that still have
	// requests in flight.
	Addrs []string `json:"addrs"`
	// Leader and Epoch are set when the proxy leads the app.
	Leader bool   `json:"leader,omitempty"`
	Epoch  uint64 `json:"epoch,omitempty"`
	// Used says the proxy served the app a request since its last
	// heartbeat (an app it follows): its leader counts it as use of the
	// app (idle_timeout), and wakes it if it sleeps.
	Used bool `json:"used,omitempty"`
}

// Heartbeats writes this proxy's heartbeat and reads the others'. Its
// methods are safe for concurrent use.
type Heartbeats struct {
	kv  *kv
	now func() time.Time

	mu sync.Mutex
	// seen is, by proxy, the Seq last read and when (this reader's clock)
	// it was first read with that value.
	seen map[string]sighting
}

// sighting is a Seq and when it was first read.
type sighting struct {
	seq uint64
	at  time.Time
}

// NewHeartbeats returns the heartbeats kept in st, judged by the clock now
// (time.Now when nil; its monotonic reading is what counts).
func NewHeartbeats(st Storage, now func() time.Time) *Heartbeats {
	if now == nil {
		now = time.Now
	}
	return &Heartbeats{kv: newKV(st), now: now, seen: map[string]sighting{}}
}

func proxyKey(proxy string) string { return proxiesDir + "/" + proxy + ".json" }

// Beat writes hb as the heartbeat of hb.Proxy; the caller sets Seq, one
// more than at its previous beat. A zero hb.At is set to now.
func (h *Heartbeats) Beat(ctx context.Context, hb Heartbeat) error {
	if !idRE.MatchString(hb.Proxy) {
		return fmt.Errorf("proxy id %q", hb.Proxy)
	}
	if hb.At.IsZero() {
		hb.At = time.Now()
	}
	b, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	return h.kv.store(ctx, proxyKey(hb.Proxy), b)
}

// Peers returns, sorted by proxy, the heartbeats whose Seq changed within
// the last within by this reader's clock, its own included; a heartbeat
// read for the first time counts as just changed. A damaged heartbeat is
// left out; one that cannot be read is an error, so that a caller never
// takes a live proxy for a dead one.
func (h *Heartbeats) Peers(ctx context.Context, within time.Duration) ([]Heartbeat, error) {
	names, err := h.kv.list(ctx, proxiesDir)
	if err != nil {
		return nil, err
	}
	var read []Heartbeat
	for _, name := range names {
		proxy, ok := strings.CutSuffix(name, ".json")
		if !ok || !idRE.MatchString(proxy) {
			continue
		}
		b, err := h.kv.load(ctx, proxyKey(proxy))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, err
		}
		var hb Heartbeat
		if json.Unmarshal(b, &hb) != nil || hb.Proxy != proxy {
			continue
		}
		read = append(read, hb)
	}

	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	live := make([]Heartbeat, 0, len(read))
	present := make(map[string]bool, len(read))
	for _, hb := range read {
		present[hb.Proxy] = true
		s, ok := h.seen[hb.Proxy]
		if !ok || s.seq != hb.Seq {
			s = sighting{seq: hb.Seq, at: now}
			h.seen[hb.Proxy] = s
		}
		if now.Sub(s.at) < within {
			live = append(live, hb)
		}
	}
	for proxy := range h.seen {
		if !present[proxy] {
			delete(h.seen, proxy)
		}
	}
	return live, nil
}

// Remove deletes the heartbeat of proxy (when it stops); a missing one is
// fine.
func (h *Heartbeats) Remove(ctx context.Context, proxy string) error {
	if !idRE.MatchString(proxy) {
		return fmt.Errorf("proxy id %q", proxy)
	}
	return h.kv.del(ctx, proxyKey(proxy))
}
