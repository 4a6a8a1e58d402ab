package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podswitch/podswitch/internal/engine"
)

// canaryVar is the request variable through which the podswitch_gate
// handler tells the app's upstream source whether a request goes to the
// canary, so that both read one decision (and the sticky cookie is set
// once, by the handler that can).
const canaryVar = "podswitch.canary"

// stickyMaxAge is how long a client keeps the release it got (a day).
const stickyMaxAge = 24 * 60 * 60

// stickyCookie is the name of the cookie that keeps a client of app on the
// release it got during a canary. App names are cookie-name safe.
func stickyCookie(app string) string { return "podswitch_" + app }

// toCanary decides whether r goes to canary c. A request with c's header
// (and value, when set) or cookie value always does; a client whose sticky
// cookie names this canary goes where it went before; any other client is
// new, and c's share of the new clients get the canary. sticky is the
// sticky cookie's value to give a new client ("" when r had one).
func toCanary(r *http.Request, app string, c *engine.Canary) (canary bool, sticky string) {
	if c.Header != "" {
		if v := r.Header.Get(c.Header); v != "" && (c.HeaderValue == "" || v == c.HeaderValue) {
			return true, ""
		}
	}
	if c.Cookie != "" {
		if ck, err := r.Cookie(c.Cookie); err == nil && ck.Value == c.CookieValue {
			return true, ""
		}
	}
	if ck, err := r.Cookie(stickyCookie(app)); err == nil {
		switch ck.Value {
		case "c." + c.Release:
			return true, ""
		case "s." + c.Release:
			return false, ""
		}
	}
	if c.NewClient() {
		return true, "c." + c.Release
	}
	return false, "s." + c.Release
}

// routeCanary decides, in front of the proxy, whether r goes to the app's
// canary when it has one in service: the decision is left for the
// upstream source in a request variable, and a new client gets the sticky
// cookie that keeps it on its release.
func routeCanary(w http.ResponseWriter, r *http.Request, app string, pool *engine.PoolRef, routed *[2]prometheus.Counter) {
	p := pool.Load()
	if p == nil || p.Canary == nil || len(p.Canary.Addrs) == 0 {
		return
	}
	canary, sticky := toCanary(r, app, p.Canary)
	routed[b2i(canary)].Inc()
	if sticky != "" {
		http.SetCookie(w, &http.Cookie{Name: stickyCookie(app), Value: sticky, Path: "/", MaxAge: stickyMaxAge,
			HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	}
	caddyhttp.SetVar(r.Context(), canaryVar, canary)
}

// canaryAddrs returns the addresses r goes to in pool p: the canary's when
// the handler in front decided so (or, without it, when r's header, cookie
// or a new client's share says so: decided once per request, and kept for
// the proxy's retries), else the pool's.
func canaryAddrs(r *http.Request, app string, p *engine.Pool, routed *[2]prometheus.Counter) (addrs []string, canary bool) {
	c := p.Canary
	if c == nil || len(c.Addrs) == 0 {
		return p.Addrs, false
	}
	if v, ok := caddyhttp.GetVar(r.Context(), canaryVar).(bool); ok {
		canary = v
	} else {
		canary, _ = toCanary(r, app, c)
		caddyhttp.SetVar(r.Context(), canaryVar, canary)
		routed[b2i(canary)].Inc()
	}
	if canary {
		return c.Addrs, true
	}
	return p.Addrs, false
}
