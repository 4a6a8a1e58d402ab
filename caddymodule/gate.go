package caddymodule

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(Gate{})
	httpcaddyfile.RegisterDirective("podswitch", parseDirective)
	httpcaddyfile.RegisterDirectiveOrder("podswitch", httpcaddyfile.After, "reverse_proxy")
}

// Defaults of the `podswitch` site directive: what a zero-downtime proxy to
// containers that come and go needs on top of reverse_proxy's own.
const (
	// A request whose container died between two health checks is retried
	// on another one for up to tryDuration, every tryInterval.
	directiveTryDuration = 5 * time.Second
	directiveTryInterval = 100 * time.Millisecond
	// A container that failed a request is skipped for failDuration (the
	// health check takes it out of the pool within about a second).
	directiveFailDuration = 2 * time.Second
	// A dial to a container that is gone fails over after dialTimeout,
	// instead of Caddy's 3s: containers are on a local bridge.
	directiveDialTimeout = time.Second
	// Upgraded connections (WebSockets, streams) stay open this long
	// after a config reload unloads the proxy that carries them.
	directiveStreamCloseDelay = time.Hour
)

// parseDirective sets up the `podswitch` site directive, which is to
// reverse_proxy what php_fastcgi is: it proxies to an app's ready web
// containers with the defaults a zero-downtime proxy needs, and answers
// for the app when it is paused or in maintenance. Syntax:
//
//	podswitch [<matcher>] <app> {
//		# any reverse_proxy subdirective, which overrides the defaults:
//		lb_try_duration 5s
//		lb_try_interval 100ms
//		fail_duration 2s
//		stream_close_delay 1h
//		transport http {
//			dial_timeout 1s
//		}
//	}
//
// It expands to two handlers in one route: podswitch_gate (pause and
// maintenance) and reverse_proxy with `dynamic podswitch <app>`; `caddy
// adapt` shows them. `to` and `dynamic` are refused: the app's containers
// are the upstreams.
func parseDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	h.Next() // directive name
	userMatcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	h.Next() // the directive name again: ExtractMatcherSet rewound
	d := h.NewFromNextSegment()
	d.Next() // directive name
	if !d.NextArg() {
		return nil, d.Errf("podswitch: want the app's name: podswitch [<matcher>] <app> [{ reverse_proxy subdirectives }]")
	}
	app := d.Val()
	if !engine.ValidName(app) {
		return nil, d.Errf("podswitch: app name %q: use lowercase letters, digits and dashes", app)
	}
	if err := checkAppDefined(h, d.Errf, app); err != nil {
		return nil, err
	}
	d.Delete() // the proxy's parser must not take the name for an upstream
	if d.NextArg() {
		return nil, d.Errf("podswitch: unexpected argument %q: want podswitch [<matcher>] <app> [{ reverse_proxy subdirectives }]", d.Val())
	}
	// The subdirectives given, by name: their arguments and blocks are
	// skipped, so that an argument (header_up X-Route to) is not taken
	// for one.
	given := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "to", "dynamic":
			return nil, d.Errf("podswitch %s: %s is not allowed here: the upstreams are the app's ready web containers", app, d.Val())
		}
		given[d.Val()] = true
		d.RemainingArgs()
		for n := d.Nesting(); d.NextBlock(n); { // skip the subdirective's block
		}
	}
	d.Reset()
	rp := new(reverseproxy.Handler)
	if err := rp.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	if err := rp.FinalizeUnmarshalCaddyfile(h); err != nil {
		return nil, err
	}
	applyDirectiveDefaults(rp, app, given)

	gate := Gate{App: app}
	route := caddyhttp.Route{
		HandlersRaw: []json.RawMessage{
			caddyconfig.JSONModuleObject(gate, "handler", "podswitch_gate", nil),
			caddyconfig.JSONModuleObject(rp, "handler", "reverse_proxy", nil),
		},
	}
	if userMatcherSet != nil {
		route.MatcherSetsRaw = []caddy.ModuleMap{userMatcherSet}
	}
	return []httpcaddyfile.ConfigValue{{Class: "route", Value: route}}, nil
}

// checkAppDefined refuses an app that the podswitch global option of the
// same Caddyfile does not define, naming the apps it has.
func checkAppDefined(h httpcaddyfile.Helper, errf func(string, ...any) error, app string) error {
	opt, ok := h.Option("podswitch").(httpcaddyfile.App)
	if !ok {
		return errf("podswitch %s: the podswitch global option, which defines the apps, is missing", app)
	}
	var cfg App
	if err := json.Unmarshal(opt.Value, &cfg); err != nil {
		return errf("podswitch %s: reading the podswitch global option: %v", app, err)
	}
	if _, ok := cfg.Apps[app]; !ok {
		return errf("podswitch %s: no such app in the podswitch global option (it has: %s)", app, appNames(cfg.Apps))
	}
	return nil
}

// applyDirectiveDefaults sets on rp what the user did not (given are the
// subdirectives the user wrote, whatever their value, 0 included): the
// app's containers as upstreams and the zero-downtime defaults.
func applyDirectiveDefaults(rp *reverseproxy.Handler, app string, given map[string]bool) {
	rp.DynamicUpstreamsRaw = caddyconfig.JSONModuleObject(Upstreams{App: app}, "source", "podswitch", nil)
	if rp.LoadBalancing == nil {
		rp.LoadBalancing = new(reverseproxy.LoadBalancing)
	}
	if rp.LoadBalancing.TryDuration == 0 && !given["lb_try_duration"] {
		rp.LoadBalancing.TryDuration = caddy.Duration(directiveTryDuration)
	}
	if rp.LoadBalancing.TryInterval == 0 && !given["lb_try_interval"] {
		rp.LoadBalancing.TryInterval = caddy.Duration(directiveTryInterval)
	}
	if rp.HealthChecks == nil {
		rp.HealthChecks = new(reverseproxy.HealthChecks)
	}
	if rp.HealthChecks.Passive == nil {
		rp.HealthChecks.Passive = new(reverseproxy.PassiveHealthChecks)
	}
	if rp.HealthChecks.Passive.FailDuration == 0 && !given["fail_duration"] {
		rp.HealthChecks.Passive.FailDuration = caddy.Duration(directiveFailDuration)
	}
	if rp.StreamCloseDelay == 0 && !given["stream_close_delay"] {
		rp.StreamCloseDelay = caddy.Duration(directiveStreamCloseDelay)
	}
	if rp.TransportRaw == nil {
		rp.TransportRaw = caddyconfig.JSONModuleObject(reverseproxy.HTTPTransport{DialTimeout: caddy.Duration(directiveDialTimeout)}, "protocol", "http", nil)
	}
}

// Gate answers for a podswitch app that is paused or in maintenance, before
// the proxy: in maintenance a request gets 503 with the maintenance message
// and Retry-After; in a pause it is held until the app resumes (then goes
// on to the next handler) or the pause's timeout passes (then 503 with
// Retry-After). A pause holds at most engine.MaxHeld requests of the app at
// once; the next get 503 with Retry-After at once. When Caddy exits, every
// held request is answered 503 with Retry-After at once, so that the
// server's graceful shutdown ends promptly. It takes no lock: one atomic
// load when the app is neither paused nor in maintenance, an atomic counter
// when it is paused. The `podswitch` site directive puts it in front of
// reverse_proxy.
type Gate struct {
	// App is the podswitch app. Required.
	App string `json:"app,omitempty"`

	pool *engine.PoolRef
	// release tells held requests that the process exits.
	release *releaseSignal
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
	g.release = releaseOnExit(ctx)
	return nil
}

// Messages of the gate's 503s.
const (
	pausedMessage   = "The service is paused for a moment. Please try again shortly."
	busyMessage     = "The service is paused for a moment and cannot hold more requests. Please try again shortly."
	shutdownMessage = "The server is shutting down. Please try again shortly."
)

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	gate, verdict := g.pool.Pass(r.Context(), g.release.done())
	msg := pausedMessage
	switch verdict {
	case engine.Through:
		return next.ServeHTTP(w, r)
	case engine.ClientGone:
		return nil // the client left while it was held
	case engine.InMaintenance:
		msg = gate.Message
	case engine.Full:
		msg = busyMessage
	case engine.Released:
		msg = shutdownMessage
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(gate.RetryAfter.Seconds()))))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
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
