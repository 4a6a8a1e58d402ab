package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/podswitch/podswitch/internal/engine"
)

// UnmarshalCaddyfile sets up the source from Caddyfile tokens. Syntax:
//
//	dynamic podswitch <app>
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if !d.NextArg() {
		return d.Errf("dynamic podswitch: want the app's name: dynamic podswitch <app>")
	}
	u.App = d.Val()
	if d.NextArg() {
		return d.Errf("dynamic podswitch: unexpected argument %q: want dynamic podswitch <app>", d.Val())
	}
	if d.NextBlock(0) {
		return d.Errf("dynamic podswitch: takes no block")
	}
	if !engine.ValidName(u.App) {
		return d.Errf("dynamic podswitch: app name %q: use lowercase letters, digits and dashes", u.App)
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Upstreams)(nil)
