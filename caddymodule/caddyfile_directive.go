package caddymodule

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
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
		name := d.Val()
		given[name] = true
		d.RemainingArgs()
		for n := d.Nesting(); d.NextBlock(n); { // skip the subdirective's block
			if name == "transport" && d.Val() == "dial_timeout" {
				given["transport.dial_timeout"] = true
			}
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
	} else if !given["transport.dial_timeout"] {
		rp.TransportRaw = withDialTimeout(rp.TransportRaw)
	}
}

// withDialTimeout gives a user's http transport without a dial_timeout the
// directive's: a `transport http { ... }` written for another setting
// keeps failing over quickly from a container that is gone.
func withDialTimeout(raw json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || string(m["protocol"]) != `"http"` {
		return raw
	}
	if _, ok := m["dial_timeout"]; ok {
		return raw
	}
	m["dial_timeout"] = json.RawMessage(strconv.FormatInt(int64(directiveDialTimeout), 10))
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}
