package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	psnotify "github.com/podswitch/podswitch/internal/notify"
)

// parseNotify parses the notify block of an app; d is at the notify token.
// Syntax:
//
//	notify {
//		webhook <url> {
//			header <name> <value>
//			timeout <duration>
//			attempts <number>
//			events <name...>
//		}
//		email {
//			host <host>
//			port <port>
//			username <username>
//			password <password>
//			from <address>
//			to <address...>
//			tls none|opportunistic|mandatory
//			subject_prefix <text>
//			events <name...>
//			timeout <duration>
//		}
//	}
//
// The webhook's block is optional; to may be given more than once.
func parseNotify(d *caddyfile.Dispenser) (*NotifyConfig, error) {
	file, line := d.File(), d.Line()
	if d.NextArg() {
		return nil, d.Errf("notify: takes no argument, got %q; want notify { webhook <url> ; email { ... } }", d.Val())
	}
	cfg := new(NotifyConfig)
	empty := true
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		empty = false
		switch d.Val() {
		case "webhook":
			if cfg.Webhook != nil {
				return nil, d.Errf("notify: webhook is set twice")
			}
			w, err := parseWebhook(d)
			if err != nil {
				return nil, err
			}
			cfg.Webhook = w
		case "email":
			if cfg.Email != nil {
				return nil, d.Errf("notify: email is set twice")
			}
			e, err := parseEmail(d)
			if err != nil {
				return nil, err
			}
			cfg.Email = e
		default:
			return nil, d.Errf("notify: unknown subdirective %q (want webhook or email)", d.Val())
		}
	}
	if empty {
		return nil, fmt.Errorf("notify: want a block with webhook and/or email, at %s:%d", file, line)
	}
	return cfg, nil
}

func parseWebhook(d *caddyfile.Dispenser) (*WebhookConfig, error) {
	if !d.NextArg() {
		return nil, d.Errf("webhook: want a URL: webhook <url> [{ ... }]")
	}
	w := &WebhookConfig{URL: d.Val()}
	if !hasPlaceholder(w.URL) {
		if err := psnotify.CheckURL(w.URL); err != nil {
			return nil, d.Errf("%v", err)
		}
	}
	if d.NextArg() {
		return nil, d.Errf("webhook: want one URL, got also %q", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dir := d.Val()
		switch dir {
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("webhook header: want header <name> <value>")
			}
			if !validHeaderName(args[0]) {
				return nil, d.Errf("webhook header: %q is not a header name", args[0])
			}
			if w.Headers == nil {
				w.Headers = http.Header{}
			}
			w.Headers.Add(args[0], args[1])
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			w.Timeout = dur
		case "attempts":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, d.Errf("attempts: %q is not a number of attempts (1 or more)", v)
			}
			w.Attempts = n
		case "events":
			ev, err := eventsArg(d)
			if err != nil {
				return nil, err
			}
			w.Events = ev
		default:
			return nil, d.Errf("webhook: unknown subdirective %q (want header, timeout, attempts or events)", dir)
		}
	}
	return w, nil
}

func parseEmail(d *caddyfile.Dispenser) (*EmailConfig, error) {
	file, line := d.File(), d.Line()
	if d.NextArg() {
		return nil, d.Errf("email: takes no argument, got %q; want email { ... }", d.Val())
	}
	e := new(EmailConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dir := d.Val()
		switch dir {
		case "host":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			e.Host = v
		case "port":
			n, err := portArg(d)
			if err != nil {
				return nil, err
			}
			e.Port = n
		case "username":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			e.Username = v
		case "password":
			// Not oneArg: its errors would show the values.
			if !d.NextArg() {
				return nil, d.Errf("password: want one value")
			}
			e.Password = d.Val()
			if d.NextArg() {
				return nil, d.Errf("password: want one value, got more (quote a password with spaces)")
			}
		case "from":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if !hasPlaceholder(v) {
				if err := psnotify.CheckAddress(v); err != nil {
					return nil, d.Errf("from: %v", err)
				}
			}
			e.From = v
		case "to":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("to: want one address or more")
			}
			for _, a := range args {
				if hasPlaceholder(a) {
					continue
				}
				if err := psnotify.CheckAddress(a); err != nil {
					return nil, d.Errf("to: %v", err)
				}
			}
			e.To = append(e.To, args...)
		case "tls":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if err := psnotify.CheckTLSPolicy(v); err != nil || v == "" {
				return nil, d.Errf("tls %q: want none, opportunistic or mandatory", v)
			}
			e.TLS = v
		case "subject_prefix":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			e.SubjectPrefix = v
		case "events":
			ev, err := eventsArg(d)
			if err != nil {
				return nil, err
			}
			e.Events = ev
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			e.Timeout = dur
		default:
			return nil, d.Errf("email: unknown subdirective %q", dir)
		}
	}
	var missing []string
	if e.Host == "" {
		missing = append(missing, "host")
	}
	if e.From == "" {
		missing = append(missing, "from")
	}
	if len(e.To) == 0 {
		missing = append(missing, "to")
	}
	if len(missing) > 0 {
		// At the email line rather than at the closing brace, in the
		// format of Dispenser.Errf.
		return nil, fmt.Errorf("email: %s required, at %s:%d", strings.Join(missing, ", "), file, line)
	}
	if e.Password != "" && e.Username == "" {
		return nil, fmt.Errorf("email: password is set but username is not, at %s:%d", file, line)
	}
	return e, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	dir := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %q is not a duration: %v", dir, v, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s: %q must be positive", dir, v)
	}
	return caddy.Duration(dur), nil
}

func eventsArg(d *caddyfile.Dispenser) ([]string, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Errf("events: want one event name or more (%s)", strings.Join(psnotify.Selectors, ", "))
	}
	if err := psnotify.CheckSelectors(args); err != nil {
		return nil, d.Errf("events: %v", err)
	}
	return args, nil
}

func hasPlaceholder(s string) bool { return strings.Contains(s, "{") }
