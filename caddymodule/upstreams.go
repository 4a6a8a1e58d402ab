package caddymodule

import (
	"context"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Upstreams is a reverse_proxy dynamic upstream source that gives the ready
// web containers of a podswitch app. Each request costs one atomic load; no
// lock and no Podman call.
type Upstreams struct {
	// App is the name of the podswitch app whose containers get the
	// traffic. Required.
	App string `json:"app,omitempty"`

	pool *engine.PoolRef
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.podswitch",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// Provision finds the app's pool. The app must be configured in the
// podswitch app of the same config, so that a typo fails the config load.
func (u *Upstreams) Provision(ctx caddy.Context) error {
	if u.App == "" {
		return fmt.Errorf("podswitch upstreams: app is required")
	}
	v, err := ctx.AppIfConfigured("podswitch")
	if err != nil {
		return fmt.Errorf("podswitch upstreams: app %q: the podswitch global option (apps.podswitch) is not configured: %w", u.App, err)
	}
	app := v.(*App)
	if _, ok := app.Apps[u.App]; !ok {
		return fmt.Errorf("podswitch upstreams: app %q is not configured in podswitch", u.App)
	}
	u.pool = app.shared.manager.Pool(u.App)
	return nil
}

// GetUpstreams returns the app's ready web containers. Caddy writes to the
// upstreams it is given, so they are fresh for every call. The request is
// counted on the pool it was routed with until it ends, so that draining
// waits for it.
func (u *Upstreams) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	p := u.pool.Load()
	for {
		if p == nil || len(p.Addrs) == 0 {
			return nil, nil
		}
		p.Acquire()
		// Counted on p only if p is still current: a swap in between means
		// a drain may already have looked at p's count.
		cur := u.pool.Load()
		if cur == p {
			break
		}
		p.Leave()
		p = cur
	}
	context.AfterFunc(r.Context(), p.Done)
	ups := make([]reverseproxy.Upstream, len(p.Addrs))
	out := make([]*reverseproxy.Upstream, len(p.Addrs))
	for i, a := range p.Addrs {
		ups[i].Dial = a
		out[i] = &ups[i]
	}
	return out, nil
}

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
var (
	_ caddy.Provisioner           = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource = (*Upstreams)(nil)
	_ caddyfile.Unmarshaler       = (*Upstreams)(nil)
)
