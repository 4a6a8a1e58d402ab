package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("podswitch_dashboard", parseDashboardDirective)
	// A terminal handler, like metrics: after the auth handlers (basic_auth,
	// forward_auth), before the proxies.
	httpcaddyfile.RegisterDirectiveOrder("podswitch_dashboard", httpcaddyfile.Before, "reverse_proxy")
}

// parseDashboardDirective sets up the `podswitch_dashboard` site
// directive, which takes no argument:
//
//	podswitch_dashboard [<matcher>]
func parseDashboardDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(Dashboard)
	if err := d.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return d, nil
}

// UnmarshalCaddyfile reads `podswitch_dashboard`, which has no argument
// and no block.
func (d *Dashboard) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next() // directive name
	if disp.NextArg() {
		return disp.Errf("podswitch_dashboard: unexpected argument %q: it takes none (mount it with handle_path, guard it with basic_auth)", disp.Val())
	}
	if disp.NextBlock(0) {
		return disp.Errf("podswitch_dashboard: unexpected block: it has no settings")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Dashboard)(nil)
