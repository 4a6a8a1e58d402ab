package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/podswitch/podswitch/internal/engine"
)

// toCanary: the header (with its value when set) and the cookie always
// pick the canary; a sticky cookie of this canary keeps its release; one
// of another canary, or none, makes a new client, who gets the share.
func TestToCanary(t *testing.T) {
	c := engine.NewCanaryForTest("abc123", []string{"10.0.0.9:5000"}, engine.CanaryRules{Percent: 0, Header: "X-Beta", HeaderValue: "1", Cookie: "beta", CookieValue: "yes"})
	for _, tc := range []struct {
		name       string
		header     http.Header
		wantCanary bool
		wantSticky string
	}{
		{"header with its value", http.Header{"X-Beta": {"1"}}, true, ""},
		{"header with another value", http.Header{"X-Beta": {"2"}}, false, "s.abc123"},
		{"cookie", http.Header{"Cookie": {"beta=yes"}}, true, ""},
		{"cookie with another value", http.Header{"Cookie": {"beta=no"}}, false, "s.abc123"},
		{"sticky to the canary", http.Header{"Cookie": {"podswitch_blog=c.abc123"}}, true, ""},
		{"sticky to the serving release", http.Header{"Cookie": {"podswitch_blog=s.abc123"}}, false, ""},
		{"sticky of an earlier canary", http.Header{"Cookie": {"podswitch_blog=c.old999"}}, false, "s.abc123"},
		{"new client at 0%", nil, false, "s.abc123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			canary, sticky := toCanary(r, "blog", c)
			if canary != tc.wantCanary || sticky != tc.wantSticky {
				t.Errorf("canary %v sticky %q, want %v %q", canary, sticky, tc.wantCanary, tc.wantSticky)
			}
		})
	}
	all := engine.NewCanaryForTest("abc123", []string{"10.0.0.9:5000"}, engine.CanaryRules{Percent: 100})
	if canary, sticky := toCanary(httptest.NewRequest(http.MethodGet, "/", nil), "blog", all); !canary || sticky != "c.abc123" {
		t.Errorf("a new client at 100%%: canary %v sticky %q", canary, sticky)
	}
}

// The share of new clients is exact, for any percent.
func TestCanaryShareExact(t *testing.T) {
	for _, p := range []int{1, 7, 20, 33, 50, 99} {
		c := engine.NewCanaryForTest("r", nil, engine.CanaryRules{Percent: p})
		n := 0
		for range 1000 {
			if c.NewClient() {
				n++
			}
		}
		if n != p*10 {
			t.Errorf("%d%%: %d of 1000 new clients got the canary, want %d", p, n, p*10)
		}
	}
}
