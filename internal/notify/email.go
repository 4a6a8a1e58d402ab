package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/wneessen/go-mail"
)

// TLSPolicy says whether the SMTP connection is encrypted.
type TLSPolicy string

// TLS policies.
const (
	// TLSMandatory requires STARTTLS (or, on port 465, TLS from the
	// first byte) and a certificate valid for the host. The default.
	TLSMandatory TLSPolicy = "mandatory"
	// TLSOpportunistic uses STARTTLS when the server offers it, and
	// plain text otherwise.
	TLSOpportunistic TLSPolicy = "opportunistic"
	// TLSNone never encrypts.
	TLSNone TLSPolicy = "none"
)

// E-mail defaults.
const (
	DefaultSMTPPort          = 587
	DefaultSMTPPortNoTLS     = 25
	DefaultSubjectPrefix     = "[podswitch]"
	DefaultEmailTimeout      = 30 * time.Second
	DefaultEmailAttempts     = 3
	DefaultEmailInitialRetry = 2 * time.Second
)

// Email sends each message as a plain-text e-mail over SMTP, with
// github.com/wneessen/go-mail. Temporary failures (the server cannot be
// reached, it times out, or answers 4xx) are retried with exponential
// backoff; permanent ones (5xx, authentication refused, TLS required but
// not offered) are not.
type Email struct {
	// Host is the SMTP server's host name or IP address. Required.
	Host string
	// Port is the SMTP server's port. Default: DefaultSMTPPort, or
	// DefaultSMTPPortNoTLS with TLSNone. On port 465 the connection is
	// TLS from its first byte (SMTPS) unless TLS is TLSNone.
	Port int
	// Username and Password authenticate to the server, when Username is
	// set. The mechanism is the strongest the server offers; on a
	// connection that is not encrypted only challenge-response mechanisms
	// (SCRAM, CRAM-MD5) are used, never one that sends the password as
	// is. The password never appears in errors.
	Username string
	Password string
	// From is the sender's address, for example
	// `podswitch <ops@example.com>`. Required.
	From string
	// To are the recipients' addresses. At least one is required.
	To []string
	// TLS is the TLS policy. Default: TLSMandatory.
	TLS TLSPolicy
	// TLSConfig, when set, is used for the TLS connection (for example
	// to trust a private CA); its ServerName defaults to Host.
	TLSConfig *tls.Config
	// SubjectPrefix starts every subject. Default: DefaultSubjectPrefix.
	SubjectPrefix string
	// Events selects the messages sent (see Selectors). Default:
	// DefaultEmailEvents.
	Events []string
	// Timeout bounds each attempt (connection and conversation).
	// Default: DefaultEmailTimeout.
	Timeout time.Duration
	// Attempts is how many times a message is tried, the first one
	// included. Default: DefaultEmailAttempts.
	Attempts int
	// InitialInterval is the wait after the first failed attempt; it
	// doubles after each further one. Default: DefaultEmailInitialRetry.
	InitialInterval time.Duration
}

// Validate checks that the e-mail settings are complete and well formed.
func (e *Email) Validate() error {
	if strings.TrimSpace(e.Host) == "" {
		return errors.New("email: host is required")
	}
	if strings.ContainsAny(e.Host, " \t/") {
		return fmt.Errorf("email: host %q is not a host name", e.Host)
	}
	if e.Port < 0 || e.Port > 65535 {
		return fmt.Errorf("email: port %d is not a port number (1-65535)", e.Port)
	}
	if e.From == "" {
		return errors.New("email: from is required")
	}
	if err := CheckAddress(e.From); err != nil {
		return fmt.Errorf("email: from: %v", err)
	}
	if len(e.To) == 0 {
		return errors.New("email: to is required (one address or more)")
	}
	for _, to := range e.To {
		if err := CheckAddress(to); err != nil {
			return fmt.Errorf("email: to: %v", err)
		}
	}
	if err := CheckTLSPolicy(string(e.TLS)); err != nil {
		return fmt.Errorf("email: %v", err)
	}
	if e.Password != "" && e.Username == "" {
		return errors.New("email: password is set but username is not")
	}
	if err := CheckSelectors(e.Events); err != nil {
		return fmt.Errorf("email: %v", err)
	}
	return nil
}

// CheckAddress reports whether a is one e-mail address (RFC 5322, with or
// without a display name).
func CheckAddress(a string) error {
	if _, err := netmail.ParseAddress(a); err != nil {
		return fmt.Errorf("%q is not an e-mail address", a)
	}
	return nil
}

// CheckTLSPolicy reports whether p is a TLS policy; empty is the default.
func CheckTLSPolicy(p string) error {
	switch TLSPolicy(p) {
	case "", TLSMandatory, TLSOpportunistic, TLSNone:
		return nil
	}
	return fmt.Errorf("tls %q: want none, opportunistic or mandatory", p)
}

// Wants reports whether e sends m.
func (e *Email) Wants(m Message) bool { return Wants(e.Events, DefaultEmailEvents, m) }

// Subject is the subject of the e-mail about m.
func (e *Email) Subject(m Message) string {
	prefix := e.SubjectPrefix
	if prefix == "" {
		prefix = DefaultSubjectPrefix
	}
	return strings.TrimSpace(prefix + " " + m.Summary())
}

// Body is the plain-text body of the e-mail about m.
func Body(m Message) string {
	var b strings.Builder
	b.WriteString(m.Summary())
	b.WriteString("\n\n")
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%-11s %s\n", name+":", value)
		}
	}
	field("App", m.App)
	field("Event", m.Event)
	field("Status", m.Status)
	if m.Deployment != 0 {
		field("Deployment", fmt.Sprint(m.Deployment))
	}
	field("Kind", m.Kind)
	field("Release", m.Release)
	field("Image", m.Image)
	field("Process", m.Process)
	field("Container", m.Container)
	if !m.Time.IsZero() {
		field("Time", m.Time.UTC().Format(time.RFC3339))
	}
	if m.Text != "" {
		b.WriteString("\n")
		b.WriteString(m.Text)
		b.WriteString("\n")
	}
	if len(m.Output) > 0 {
		b.WriteString("\nLast lines of the container's output:\n\n")
		for _, l := range m.Output {
			b.WriteString("    ")
			b.WriteString(l)
			b.WriteString("\n")
		}
	}
	switch {
	case m.Event == EventGaveUp:
		b.WriteString("\nThe containers that were running keep running.\n")
	case m.Event == EventDeployment && m.Failed():
		b.WriteString("\nThe previous release keeps serving.\n")
	}
	b.WriteString("\n-- \npodswitch\n")
	return b.String()
}

// Notify e-mails m to every recipient, retrying as the type's doc says.
func (e *Email) Notify(ctx context.Context, m Message) error {
	msg, err := e.message(m)
	if err != nil {
		return err
	}
	client, err := e.client()
	if err != nil {
		return err
	}
	attempts := e.Attempts
	if attempts <= 0 {
		attempts = DefaultEmailAttempts
	}
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     cmpOr(e.InitialInterval, DefaultEmailInitialRetry),
		RandomizationFactor: 0.25,
		Multiplier:          2,
		MaxInterval:         DefaultMaxInterval,
	}
	var (
		tries   int
		lastErr error
	)
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		tries++
		lastErr = client.DialAndSendWithContext(ctx, msg)
		if lastErr != nil && !temporary(lastErr) {
			return struct{}{}, backoff.Permanent(lastErr)
		}
		return struct{}{}, lastErr
	}, backoff.WithBackOff(bo), backoff.WithMaxTries(uint(attempts)), backoff.WithMaxElapsedTime(0))
	if err == nil {
		return nil
	}
	where := e.Addr()
	switch {
	case lastErr == nil || (ctx.Err() != nil && !errors.Is(lastErr, ctx.Err())):
		return fmt.Errorf("email via %s: %w after %d attempt(s); last: %v", where, err, tries, lastErr)
	case tries >= attempts && temporary(lastErr):
		return fmt.Errorf("email via %s: gave up after %d attempts: %w", where, tries, lastErr)
	default:
		return fmt.Errorf("email via %s: %w", where, lastErr)
	}
}

// Addr is the server's host:port, with the default port when Port is 0.
func (e *Email) Addr() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(e.port()))
}

func (e *Email) port() int {
	switch {
	case e.Port > 0:
		return e.Port
	case e.TLS == TLSNone:
		return DefaultSMTPPortNoTLS
	default:
		return DefaultSMTPPort
	}
}

func (e *Email) message(m Message) (*mail.Msg, error) {
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := msg.From(e.From); err != nil {
		return nil, fmt.Errorf("email: from: %w", err)
	}
	if err := msg.To(e.To...); err != nil {
		return nil, fmt.Errorf("email: to: %w", err)
	}
	msg.Subject(e.Subject(m))
	msg.SetDate()
	msg.SetMessageID()
	msg.SetUserAgent("podswitch")
	msg.SetGenHeader("X-Podswitch-App", m.App)
	msg.SetGenHeader("X-Podswitch-Event", m.Event)
	msg.SetBodyString(mail.TypeTextPlain, Body(m))
	return msg, nil
}

func (e *Email) client() (*mail.Client, error) {
	policy := mail.TLSMandatory
	switch e.TLS {
	case TLSOpportunistic:
		policy = mail.TLSOpportunistic
	case TLSNone:
		policy = mail.NoTLS
	}
	port := e.port()
	opts := []mail.Option{
		mail.WithPort(port),
		mail.WithTLSPolicy(policy),
		mail.WithTimeout(cmpOr(e.Timeout, DefaultEmailTimeout)),
	}
	if port == 465 && e.TLS != TLSNone {
		opts = append(opts, mail.WithSSL())
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.TLSConfig != nil {
		tc = e.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = e.Host
	}
	opts = append(opts, mail.WithTLSConfig(tc))
	if e.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(e.Username), mail.WithPassword(e.Password))
	}
	c, err := mail.NewClient(e.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	return c, nil
}

// temporary reports whether a failed send is worth another try: the
// server could not be reached or timed out, or it answered with a 4xx.
func temporary(err error) bool {
	var se *mail.SendError
	if errors.As(err, &se) {
		return se.IsTemp()
	}
	var ne net.Error
	return errors.As(err, &ne)
}
