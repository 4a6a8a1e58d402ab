package caddymodule

import (
	"github.com/podswitch/podswitch/internal/engine"
)

// notify receives the engine's events. Deployment ends are logged by the
// engine itself.
func notify(engine.Event) {}
