// Package podswitch is the module root, so that
// `xcaddy build --with github.com/podswitch/podswitch` plugs in every
// podswitch Caddy module.
package podswitch

import (
	_ "github.com/podswitch/podswitch/caddymodule"
)
