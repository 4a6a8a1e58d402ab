package caddymodule

import (
	"net/http"
	"strings"

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
func stickyCookie(app string) string { return stickyPrefix + app }

// stickyPrefix begins the name of every sticky cookie.
const stickyPrefix = "podswitch_"

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
	chosen, sticky, _ := cookieValues(r.Header, c.Cookie, stickyPrefix, app)
	if c.Cookie != "" && chosen == c.CookieValue {
		return true, ""
	}
	if len(sticky) == len(c.Release)+2 && sticky[2:] == c.Release {
		switch sticky[:2] {
		case "c.":
			return true, ""
		case "s.":
			return false, ""
		}
	}
	if c.NewClient() {
		return true, "c." + c.Release
	}
	return false, "s." + c.Release
}

// cookieValues returns, in one pass over the Cookie headers and without
// allocating, the value of the cookie named a (none when a is empty) and of
// the one named prefix+b; found reports whether either was found.
// Malformed pairs are skipped, as net/http does.
func cookieValues(h http.Header, a, prefix, b string) (va, vb string, found bool) {
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			name, value, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			switch {
			case a != "" && name == a:
				va, found = value, true
			case len(name) == len(prefix)+len(b) && strings.HasPrefix(name, prefix) && name[len(prefix):] == b:
				vb, found = value, true
			}
		}
	}
	return va, vb, found
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
