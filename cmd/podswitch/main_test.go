package main

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// The binary has the modules the README promises: podswitch's, and the
// Redis storage (caddy.storage.redis).
func TestModules(t *testing.T) {
	for _, id := range []string{"podswitch", "http.handlers.podswitch_gate", "http.reverse_proxy.upstreams.podswitch",
		"http.handlers.podswitch_dashboard", "admin.api.podswitch", "caddy.storage.redis"} {
		if _, err := caddy.GetModule(id); err != nil {
			t.Errorf("module %s: %v", id, err)
		}
	}
}
