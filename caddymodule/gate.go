package caddymodule

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(Gate{})
}

// Gate answers for a podswitch app that is paused or in maintenance, before
// the proxy: in maintenance a request gets 503 with the maintenance message
// and Retry-After; in a pause it is held until the app resumes (then goes
// on to the next handler) or the pause's timeout passes (then 503 with
// Retry-After). An app asleep (idle_timeout) holds requests the same way
// while a web container boots, at most its boot_timeout each (then 503,
// "starting", with Retry-After). A pause holds at most engine.MaxHeld
// requests of the app at once; the next get 503 with Retry-After at once. When Caddy exits, every
// held request is answered 503 with Retry-After at once, so that the
// server's graceful shutdown ends promptly. It takes no lock: one atomic
// load when the app is neither paused nor in maintenance, an atomic counter
// when it is paused. The `podswitch` site directive puts it in front of
// reverse_proxy. The app's maintenance_page and pause_page, when set,
// replace the plain text of these answers.
type Gate struct {
	// App is the podswitch app. Required.
	App string `json:"app,omitempty"`

	pool *engine.PoolRef
	// pages are the app's HTML pages (maintenance_page, pause_page).
	pages pages
	// release tells held requests that the process exits.
	release *releaseSignal
	// routed count the requests sent to the serving release and to the
	// canary while one is in service.
	routed [2]prometheus.Counter
}

// CaddyModule returns the Caddy module information.
func (Gate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.podswitch_gate",
		New: func() caddy.Module { return new(Gate) },
	}
}

// Provision finds the app's pool and gate, and ties the requests it holds
// to the shutdown of its server.
func (g *Gate) Provision(ctx caddy.Context) error {
	if g.App == "" {
		return fmt.Errorf("podswitch_gate: app is required")
	}
	v, err := ctx.AppIfConfigured("podswitch")
	if err != nil {
		return fmt.Errorf("podswitch_gate: app %q: the podswitch global option (apps.podswitch) is not configured: %w", g.App, err)
	}
	pool, err := appPool(v.(*App), g.App)
	if err != nil {
		return fmt.Errorf("podswitch_gate: %w", err)
	}
	g.pool = pool
	g.pages = v.(*App).pages[g.App]
	g.release = releaseOnExit(ctx)
	g.routed = routedCounters(g.App)
	return nil
}

// Messages of the gate's 503s.
const (
	pausedMessage   = "The service is paused for a moment. Please try again shortly."
	busyMessage     = "The service is paused for a moment and cannot hold more requests. Please try again shortly."
	shutdownMessage = "The server is shutting down. Please try again shortly."
	// Of an app asleep (idle_timeout) while it wakes up.
	startingMessage     = "The service is starting. Please try again shortly."
	startingBusyMessage = "The service is starting and cannot hold more requests. Please try again shortly."
)

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	gate, verdict := g.pool.Pass(r.Context(), g.release.done())
	msg, page := pausedMessage, g.pages.pause
	if gate != nil && gate.Waking {
		msg, page = startingMessage, nil
	}
	switch verdict {
	case engine.Through:
		routeCanary(w, r, g.App, g.pool, &g.routed)
		return next.ServeHTTP(w, r)
	case engine.ClientGone:
		return nil // the client left while it was held
	case engine.InMaintenance:
		msg, page = gate.Message, g.pages.maintenance
	case engine.Full:
		msg = busyMessage
		if gate.Waking {
			msg = startingBusyMessage
		}
	case engine.Released:
		msg = shutdownMessage
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(gate.RetryAfter.Seconds()))))
	w.Header().Set("Cache-Control", "no-store")
	if page != nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(page)
		return nil
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = fmt.Fprintln(w, msg)
	return nil
}

// releaseSignal is closed once, to release the requests a pause holds.
type releaseSignal struct {
	once sync.Once
	ch   chan struct{}
}

func newReleaseSignal() *releaseSignal { return &releaseSignal{ch: make(chan struct{})} }

// fire releases every request held on s.
func (s *releaseSignal) fire() { s.once.Do(func() { close(s.ch) }) }

// done returns the channel that is closed when s fires; nil (never) for a
// nil s.
func (s *releaseSignal) done() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.ch
}

// exitRelease fires when Caddy exits: every request a pause holds, in the
// server of any config (those of earlier configs still shutting down
// included), is answered 503 at once. Caddy's exit waits for the requests
// of every server, with an eternal grace period by default: without this,
// a paused app would hold the exit until the pause's timeout (up to an
// hour), and `systemctl stop` would end in SIGKILL.
//
// A reload does not fire it: the pause is the engine's and stands in the
// new config too; the old server's shutdown waits for its held requests
// (Caddy does not make the reload wait for it) and they go on through the
// old config's proxy at resume, or get 503 at the pause's timeout. An app
// removed by the reload lifts its gate, and its held requests go on.
// Podswitch leaving the config closes the engine, which releases them
// (engine.Manager.Close).
var exitRelease = newReleaseSignal()

// exiting reports whether the process exits; tests replace it.
var exiting = caddy.Exiting

// releaseOnExit makes the server that ctx provisions for fire exitRelease
// when it begins to shut down as the process exits, and returns
// exitRelease.
func releaseOnExit(ctx caddy.Context) *releaseSignal {
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterOnShutdown(exitRelease.onShutdown)
	}
	return exitRelease
}

// onShutdown fires s if the process exits.
func (s *releaseSignal) onShutdown() {
	if exiting() {
		s.fire()
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Gate)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gate)(nil)
)
