package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

// A proxy is live while its Seq changed within the window, by the reader's
// own clock; a heartbeat read for the first time counts as fresh, whatever
// its writer's clock says.
func TestHeartbeats(t *testing.T) {
	eachStorage(t, func(t *testing.T, st Storage) {
		ctx := context.Background()
		now := time.Now()
		clock := func() time.Time { return now }
		h := NewHeartbeats(st, clock)
		const within = 15 * time.Second
		peers := func(h *Heartbeats) []string {
			t.Helper()
			hbs, err := h.Peers(ctx, within)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, hb := range hbs {
				ids = append(ids, hb.Proxy)
			}
			return ids
		}
		beat := func(proxy string, seq uint64) {
			t.Helper()
			// The writer's clock is a day behind: no matter.
			hb := Heartbeat{Proxy: proxy, Seq: seq, Version: "v1", Config: "c1", At: now.Add(-24 * time.Hour),
				Apps: map[string]AppRoute{"blog": {Release: "abc", Addrs: []string{"10.0.0.1:5000"}, Leader: proxy == "a", Epoch: 3}}}
			if err := h.Beat(ctx, hb); err != nil {
				t.Fatal(err)
			}
		}
		if got := peers(h); len(got) != 0 {
			t.Errorf("Peers of an empty storage = %v", got)
		}
		beat("a", 1)
		beat("b", 1)
		if got := peers(h); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("Peers at first sight = %v, want [a b]", got)
		}
		hbs, _ := h.Peers(ctx, within)
		if r := hbs[0].Apps["blog"]; hbs[0].Seq != 1 || hbs[0].Version != "v1" || r.Release != "abc" || !r.Leader || r.Epoch != 3 || !slices.Equal(r.Addrs, []string{"10.0.0.1:5000"}) {
			t.Errorf("heartbeat read back as %+v", hbs[0])
		}

		now = now.Add(10 * time.Second)
		beat("a", 2)
		if got := peers(h); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("Peers after 10s = %v, want [a b]", got)
		}
		now = now.Add(10 * time.Second)
		if got := peers(h); !slices.Equal(got, []string{"a"}) {
			t.Errorf("Peers after 20s = %v, want [a] (b silent for 20s)", got)
		}
		// A new reader has not seen b before: fresh to it.
		h2 := NewHeartbeats(st, clock)
		if got := peers(h2); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("Peers of a new reader = %v, want [a b]", got)
		}
		// b beats again.
		now = now.Add(time.Second)
		beat("b", 2)
		if got := peers(h); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("Peers after b beat again = %v, want [a b]", got)
		}

		if err := h.Remove(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := h.Remove(ctx, "a"); err != nil {
			t.Errorf("Remove of a removed heartbeat: %v", err)
		}
		if got := peers(h); !slices.Equal(got, []string{"b"}) {
			t.Errorf("Peers after Remove = %v, want [b]", got)
		}
		if _, ok := h.seen["a"]; ok {
			t.Error("sighting of a removed proxy kept")
		}
		if err := h.Beat(ctx, Heartbeat{Proxy: "../x"}); err == nil {
			t.Error("Beat with a bad proxy id succeeded")
		}
		if err := st.Store(ctx, "podswitch/proxies/c.json", []byte("{")); err != nil {
			t.Fatal(err)
		}
		if got := peers(h); !slices.Equal(got, []string{"b"}) {
			t.Errorf("Peers with a damaged heartbeat = %v, want [b]", got)
		}
	})
}
