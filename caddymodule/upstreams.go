package caddymodule

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Upstreams is a reverse_proxy dynamic upstream source that gives the ready
// web containers of a podswitch app. Each request costs two atomic loads
// (the pool and the gate); no lock and no Podman call. While the app is
// paused, a request waits here until resume (at most the pause's timeout,
// then it gets no upstream), like behind the podswitch_gate handler and
// under the same bound (engine.MaxHeld held requests per app; the next get
// no upstream at once; all are released when Caddy exits); in maintenance
// it gets no upstream. The
// `podswitch` site directive answers both with a proper 503 before the
// proxy; this is for users who write reverse_proxy themselves.
type Upstreams struct {
	// App is the name of the podswitch app whose containers get the
	// traffic. Required.
	App string `json:"app,omitempty"`

	pool    *engine.PoolRef
	release *releaseSignal
	// routed count the requests sent to the serving release and to the
	// canary while one is in service, where the decision is made (here,
	// without a podswitch_gate in front).
	routed [2]prometheus.Counter
}

// routedCounters returns the counters of the requests of app sent to the
// serving release and to the canary.
func routedCounters(app string) [2]prometheus.Counter {
	return [2]prometheus.Counter{promMetrics.routed.WithLabelValues(app, "serving"), promMetrics.routed.WithLabelValues(app, "canary")}
}

// b2i is 1 for true, 0 for false.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
	pool, err := appPool(v.(*App), u.App)
	if err != nil {
		return fmt.Errorf("podswitch upstreams: %w", err)
	}
	u.pool = pool
	u.release = releaseOnExit(ctx)
	u.routed = routedCounters(u.App)
	warnActiveHealthChecks(ctx, u.App)
	return nil
}

// warnActiveHealthChecks warns when the reverse_proxy this source belongs
// to sets active health checks: Caddy runs them for static upstreams only,
// so they would silently never run.
func warnActiveHealthChecks(ctx caddy.Context, app string) {
	mods := ctx.Modules()
	for i := len(mods) - 1; i >= 0; i-- {
		h, ok := mods[i].(*reverseproxy.Handler)
		if !ok {
			continue
		}
		//lint:ignore SA1019 a config may still set the deprecated path, and it never runs either
		if hc := h.HealthChecks; hc != nil && hc.Active != nil && (hc.Active.URI != "" || hc.Active.Path != "" || hc.Active.Port != 0 || hc.Active.Upstream != "") {
			ctx.Logger().Warn("active health checks (health_uri, health_port...) never run for podswitch upstreams: Caddy runs them for static upstreams only. "+
				"podswitch checks every ready container itself (a TCP connect every 0.5s, or every rest_check_interval while the app is at rest) and takes one that stops answering out of the pool; "+
				"to make a container ready only once an HTTP path answers, set ready_path in the app",
				zap.String("app", app))
		}
		return
	}
}

// appNames returns the names of apps, sorted and joined, for messages.
func appNames(apps map[string]*AppConfig) string {
	if len(apps) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(apps)), ", ")
}

// appPool returns the pool of app name, which the podswitch app must have.
func appPool(a *App, name string) (*engine.PoolRef, error) {
	if _, ok := a.Apps[name]; !ok {
		return nil, fmt.Errorf("app %q is not configured in the podswitch global option (it has: %s)", name, appNames(a.Apps))
	}
	return a.host.manager.Pool(name), nil
}

// GetUpstreams returns the app's ready web containers. Caddy writes to the
// upstreams it is given, so they are fresh for every call. Draining needs
// nothing from here: reverse_proxy counts the requests in flight to each
// address itself.
func (u *Upstreams) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	if _, v := u.pool.Pass(r.Context(), u.release.done()); v != engine.Through {
		return nil, nil
	}
	p := u.pool.Load()
	if p == nil {
		return nil, nil
	}
	addrs, _ := canaryAddrs(r, u.App, p, &u.routed)
	if len(addrs) == 0 {
		return nil, nil
	}
	ups := make([]reverseproxy.Upstream, len(addrs))
	out := make([]*reverseproxy.Upstream, len(addrs))
	for i, a := range addrs {
		ups[i].Dial = a
		out[i] = &ups[i]
	}
	return out, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource = (*Upstreams)(nil)
)
