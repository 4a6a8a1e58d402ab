package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cenkalti/backoff/v5"
)

// Webhook defaults.
const (
	DefaultWebhookTimeout  = 10 * time.Second
	DefaultWebhookAttempts = 5
	DefaultInitialInterval = 500 * time.Millisecond
	DefaultMaxInterval     = 30 * time.Second
)

// Webhook posts each message as JSON to a URL. A transport error, a 5xx or
// a 429 is retried with exponential backoff (a 429's Retry-After is
// honoured up to MaxInterval); any other status below 200 or from 300 up
// fails at once.
type Webhook struct {
	// URL is where messages are posted: an http or https URL. It may hold
	// a secret (many chat services put one in the path), so errors show
	// only its scheme and host.
	URL string
	// Header is added to every request (authorization, for example). Its
	// values are never shown in errors.
	Header http.Header
	// Timeout bounds each attempt. Default: DefaultWebhookTimeout.
	Timeout time.Duration
	// Attempts is how many times a message is tried, the first one
	// included. Default: DefaultWebhookAttempts.
	Attempts int
	// InitialInterval is the wait after the first failed attempt; it
	// doubles (with jitter) after each further one, up to MaxInterval.
	// Defaults: DefaultInitialInterval, DefaultMaxInterval.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// Events selects the messages sent (see Selectors). Default: all.
	Events []string
	// Client sends the requests. Default: a client on
	// http.DefaultTransport.
	Client *http.Client
}

// Validate checks the URL and the selectors.
func (w *Webhook) Validate() error {
	if err := CheckURL(w.URL); err != nil {
		return err
	}
	return CheckSelectors(w.Events)
}

// CheckURL reports whether u is an absolute http or https URL.
func CheckURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook URL is not valid: %v", err)
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return fmt.Errorf("webhook URL %s: want an http:// or https:// URL", Redact(u))
	}
	if p.Host == "" {
		return fmt.Errorf("webhook URL %s: no host", Redact(u))
	}
	return nil
}

// Wants reports whether w sends m.
func (w *Webhook) Wants(m Message) bool { return Wants(w.Events, nil, m) }

// Notify posts m, retrying as the type's doc says.
func (w *Webhook) Notify(ctx context.Context, m Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("webhook: encoding the message: %w", err)
	}
	attempts := w.Attempts
	if attempts <= 0 {
		attempts = DefaultWebhookAttempts
	}
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     cmpOr(w.InitialInterval, DefaultInitialInterval),
		RandomizationFactor: 0.25,
		Multiplier:          2,
		MaxInterval:         cmpOr(w.MaxInterval, DefaultMaxInterval),
	}
	var (
		tries   int
		lastErr error
	)
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		tries++
		lastErr = w.post(ctx, body, bo.MaxInterval)
		return struct{}{}, lastErr
	}, backoff.WithBackOff(bo), backoff.WithMaxTries(uint(attempts)), backoff.WithMaxElapsedTime(0))
	if err == nil {
		return nil
	}
	var perm *backoff.PermanentError
	switch {
	case errors.As(lastErr, &perm):
		return fmt.Errorf("webhook %s: %w", Redact(w.URL), perm.Err)
	case ctx.Err() != nil && !errors.Is(lastErr, ctx.Err()):
		return fmt.Errorf("webhook %s: %w after %d attempt(s); last: %v", Redact(w.URL), err, tries, lastErr)
	case tries >= attempts:
		return fmt.Errorf("webhook %s: gave up after %d attempts: %w", Redact(w.URL), tries, lastErr)
	default:
		return fmt.Errorf("webhook %s: %w", Redact(w.URL), lastErr)
	}
}

// retryAfter is a retryable error that asks backoff to wait a given time;
// its message is the underlying error's.
type retryAfter struct {
	err error
	ra  *backoff.RetryAfterError
}

func (e *retryAfter) Error() string   { return e.err.Error() }
func (e *retryAfter) Unwrap() []error { return []error{e.err, e.ra} }

// post makes one attempt. Errors that must not be retried are wrapped in
// backoff.Permanent.
func (w *Webhook) post(ctx context.Context, body []byte, maxWait time.Duration) error {
	timeout := cmpOr(w.Timeout, DefaultWebhookTimeout)
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return backoff.Permanent(fmt.Errorf("building the request: %v", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "podswitch")
	for name, values := range w.Header {
		req.Header.Del(name)
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	client := w.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// Drop the URL the client's error repeats.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer within %v", timeout)
		}
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("status %s%s", resp.Status, describeBody(snippet))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		if secs, perr := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); perr == nil && secs >= 0 {
			ra := backoff.RetryAfter(secs).(*backoff.RetryAfterError)
			ra.Duration = min(ra.Duration, maxWait)
			return &retryAfter{err: err, ra: ra}
		}
		return err
	case resp.StatusCode >= 500:
		return err
	default:
		return backoff.Permanent(err)
	}
}

// describeBody renders the start of a response body for an error message:
// one line, printable characters only, at most 200 characters.
func describeBody(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, string(b))
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	if s == "" {
		return ""
	}
	return ": " + s
}

// Redact returns the scheme and host of URL u, with "/…" when it has more:
// enough to tell webhooks apart in logs without showing a secret that its
// path, query or user info may hold.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "(url)"
	}
	s := p.Scheme + "://" + p.Host
	if (p.Path != "" && p.Path != "/") || p.RawQuery != "" || p.Fragment != "" {
		s += "/…"
	}
	return s
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
