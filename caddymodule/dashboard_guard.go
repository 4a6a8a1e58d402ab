package caddymodule

import (
	"encoding/json"
	"net/netip"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// dashGuardChecked holds the servers whose dashboards were checked for an
// auth handler in front of them, so that a server with several dashboards
// gets one warning. An entry goes when its config is unloaded.
var dashGuardChecked sync.Map // *caddyhttp.Server → struct{}

// warnIfUnguarded logs a warning when srv, the server of the dashboard
// being provisioned, has a podswitch_dashboard handler that no
// authentication handler precedes, and srv listens on more than loopback.
//
// A handler's Provision sees its own config only, so it looks at the
// server's routes as they are while Caddy provisions them: the routes
// already provisioned hold their handlers, the others (this handler's own
// route and those after it) still their JSON. Both are read.
func (d *Dashboard) warnIfUnguarded(ctx caddy.Context, srv *caddyhttp.Server) {
	if _, done := dashGuardChecked.LoadOrStore(srv, struct{}{}); done {
		return
	}
	ctx.OnCancel(func() { dashGuardChecked.Delete(srv) })
	if loopbackOnly(srv.Listen) {
		return
	}
	n := unguardedDashboards(srv.Routes, false)
	if srv.Errors != nil {
		n += unguardedDashboards(srv.Errors.Routes, false)
	}
	if n == 0 {
		return
	}
	d.logger.Warn("dashboard is reachable without authentication: it shows image names, container addresses and deployment errors to anyone who reaches it",
		zap.Strings("listen", srv.Listen),
		zap.Int("unguarded_dashboards", n),
		zap.String("fix", "put basic_auth (hash from: caddy hash-password) or another auth handler before podswitch_dashboard in its site, or bind the site to 127.0.0.1; see docs/dashboard.md"))
}

// loopbackOnly reports whether every address of listen is a loopback one
// (127.0.0.0/8, ::1, localhost) or a unix socket.
func loopbackOnly(listen []string) bool {
	if len(listen) == 0 {
		return false
	}
	for _, l := range listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil {
			return false
		}
		if na.IsUnixNetwork() || na.Host == "localhost" {
			continue
		}
		ip, err := netip.ParseAddr(na.Host)
		if err != nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// What a handler of a route is, to unguardedDashboards.
type guardKind int

const (
	guardOther guardKind = iota
	// guardAuth: Caddy's authentication handler (basic_auth), or a
	// reverse_proxy that handles the response (forward_auth).
	guardAuth
	guardSubroute
	guardDashboard
)

type guardHandler struct {
	kind   guardKind
	routes caddyhttp.RouteList // of a subroute
}

// unguardedDashboards counts the podswitch_dashboard handlers in routes
// that no authentication handler precedes, routes being run after one when
// guarded. An auth handler guards the handlers after it in its route, and
// the routes after its route when that route has no matcher and no group
// (every request goes through it); a route matched by client IP
// (remote_ip, client_ip) guards its own handlers.
func unguardedDashboards(routes caddyhttp.RouteList, guarded bool) int {
	n := 0
	for i := range routes {
		r := &routes[i]
		g := guarded || ipRestricted(r)
		for _, h := range handlersOf(r) {
			switch h.kind {
			case guardAuth:
				g = true
			case guardSubroute:
				n += unguardedDashboards(h.routes, g)
			case guardDashboard:
				if !g {
					n++
				}
			}
		}
		if g && r.Group == "" && len(r.MatcherSetsRaw) == 0 && len(r.MatcherSets) == 0 {
			guarded = true
		}
	}
	return n
}

// handlersOf returns the handlers of r: from its JSON while it is not
// provisioned (Caddy clears the JSON once it has loaded the handlers).
func handlersOf(r *caddyhttp.Route) []guardHandler {
	var out []guardHandler
	for _, raw := range r.HandlersRaw {
		var h struct {
			Handler        string              `json:"handler"`
			Routes         caddyhttp.RouteList `json:"routes"`
			HandleResponse json.RawMessage     `json:"handle_response"`
		}
		if json.Unmarshal(raw, &h) != nil {
			out = append(out, guardHandler{})
			continue
		}
		switch {
		case h.Handler == "authentication",
			h.Handler == "reverse_proxy" && len(h.HandleResponse) > 0 && string(h.HandleResponse) != "null":
			out = append(out, guardHandler{kind: guardAuth})
		case h.Handler == "subroute":
			out = append(out, guardHandler{kind: guardSubroute, routes: h.Routes})
		case h.Handler == "podswitch_dashboard":
			out = append(out, guardHandler{kind: guardDashboard})
		default:
			out = append(out, guardHandler{})
		}
	}
	if r.HandlersRaw != nil {
		return out
	}
	for _, h := range r.Handlers {
		switch v := h.(type) {
		case *caddyhttp.Subroute:
			out = append(out, guardHandler{kind: guardSubroute, routes: v.Routes})
		case *Dashboard:
			out = append(out, guardHandler{kind: guardDashboard})
		case *reverseproxy.Handler:
			k := guardOther
			if len(v.HandleResponse) > 0 {
				k = guardAuth
			}
			out = append(out, guardHandler{kind: k})
		default:
			k := guardOther
			if m, ok := h.(caddy.Module); ok && m.CaddyModule().ID.Name() == "authentication" {
				k = guardAuth
			}
			out = append(out, guardHandler{kind: k})
		}
	}
	return out
}

// ipRestricted reports whether a matcher set of r matches on the client's
// IP (remote_ip, client_ip).
func ipRestricted(r *caddyhttp.Route) bool {
	for _, set := range r.MatcherSetsRaw {
		for name := range set {
			if name == "remote_ip" || name == "client_ip" {
				return true
			}
		}
	}
	for _, set := range r.MatcherSets {
		for _, m := range set {
			if mod, ok := m.(caddy.Module); ok {
				if name := mod.CaddyModule().ID.Name(); name == "remote_ip" || name == "client_ip" {
					return true
				}
			}
		}
	}
	return false
}
