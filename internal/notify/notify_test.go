package notify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var testTime = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func failedDeployment() Message {
	return Message{Event: EventDeployment, App: "blog", Status: "timeout-error", Deployment: 7, Kind: "deploy",
		Release: "r7", Image: "localhost/blog:v2", Text: "web container not ready within 60s", Time: testTime}
}

func gaveUp() Message {
	return Message{Event: EventGaveUp, App: "blog", Process: "web", Container: "blog-web-3",
		Text: "restart gave up after 20 attempts: exit status 1", Time: testTime}
}

// hookServer is an HTTP receiver that answers with the statuses of plan, in
// order, then 200; it records every request.
type hookServer struct {
	*httptest.Server
	mu       sync.Mutex
	plan     []int
	requests []*http.Request
	bodies   [][]byte
	hits     atomic.Int32
}

func newHookServer(t *testing.T, plan ...int) *hookServer {
	t.Helper()
	h := &hookServer{plan: plan}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		n := len(h.requests)
		h.requests = append(h.requests, r)
		h.bodies = append(h.bodies, body)
		status := http.StatusOK
		if n < len(h.plan) {
			status = h.plan[n]
		} else if len(h.plan) > 0 && h.plan[len(h.plan)-1] < 0 {
			status = -h.plan[len(h.plan)-1] // a negative last status repeats forever
		}
		h.mu.Unlock()
		h.hits.Add(1)
		if status < 0 {
			status = -status
		}
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "answer "+strconv.Itoa(status)+"\n")
	}))
	t.Cleanup(h.Close)
	return h
}

func fastWebhook(url string) *Webhook {
	return &Webhook{URL: url, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Timeout: 5 * time.Second}
}

func TestWebhookPostsJSON(t *testing.T) {
	h := newHookServer(t)
	w := fastWebhook(h.URL + "/hooks/secret-token")
	w.Header = http.Header{"Authorization": {"Bearer s3cret"}, "X-Extra": {"a", "b"}}
	m := failedDeployment()
	if err := w.Notify(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := h.hits.Load(); got != 1 {
		t.Fatalf("%d requests, want 1", got)
	}
	r := h.requests[0]
	if r.Method != http.MethodPost || r.URL.Path != "/hooks/secret-token" {
		t.Errorf("got %s %s, want POST /hooks/secret-token", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("Authorization %q", got)
	}
	if got := r.Header.Values("X-Extra"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("X-Extra %q", got)
	}
	var got map[string]any
	if err := json.Unmarshal(h.bodies[0], &got); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, h.bodies[0])
	}
	want := map[string]any{
		"event": "deployment", "app": "blog", "status": "timeout-error", "deployment": float64(7), "kind": "deploy",
		"release": "r7", "image": "localhost/blog:v2", "text": "web container not ready within 60s",
		"time": "2026-03-04T05:06:07Z",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("body %s = %#v, want %#v", k, got[k], v)
		}
	}
	for _, k := range []string{"process", "container"} {
		if _, ok := got[k]; ok {
			t.Errorf("body has empty field %s: %s", k, h.bodies[0])
		}
	}

	// A give-up carries its process and container.
	if err := w.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatal(err)
	}
	var g Message
	if err := json.Unmarshal(h.bodies[1], &g); err != nil {
		t.Fatal(err)
	}
	if g.Event != EventGaveUp || g.Process != "web" || g.Container != "blog-web-3" || g.Deployment != 0 {
		t.Errorf("give-up body: %s", h.bodies[1])
	}
}

func TestWebhookRetriesServerErrors(t *testing.T) {
	h := newHookServer(t, 500, 502, 200)
	w := fastWebhook(h.URL)
	if err := w.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if got := h.hits.Load(); got != 3 {
		t.Fatalf("%d requests, want 3 (500, 502, 200)", got)
	}
	for i, b := range h.bodies {
		if !bytes.Equal(b, h.bodies[0]) {
			t.Errorf("attempt %d posted another body: %s", i+1, b)
		}
	}
}

func TestWebhookRetries429(t *testing.T) {
	h := newHookServer(t, 429, 200)
	if err := fastWebhook(h.URL).Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if got := h.hits.Load(); got != 2 {
		t.Fatalf("%d requests, want 2", got)
	}
}

func TestWebhookNoRetryOn4xx(t *testing.T) {
	for _, status := range []int{400, 401, 404, 422} {
		h := newHookServer(t, status)
		err := fastWebhook(h.URL+"/path/with/token").Notify(context.Background(), gaveUp())
		if err == nil {
			t.Fatalf("status %d: Notify succeeded", status)
		}
		if got := h.hits.Load(); got != 1 {
			t.Errorf("status %d: %d requests, want 1 (no retry)", status, got)
		}
		if !strings.Contains(err.Error(), strconv.Itoa(status)) || !strings.Contains(err.Error(), "answer "+strconv.Itoa(status)) {
			t.Errorf("error %q does not give the status and the answer", err)
		}
		if strings.Contains(err.Error(), "token") {
			t.Errorf("error %q shows the URL's path", err)
		}
	}
}

func TestWebhookGivesUp(t *testing.T) {
	h := newHookServer(t, -503)
	w := fastWebhook(h.URL)
	w.Attempts = 4
	err := w.Notify(context.Background(), gaveUp())
	if err == nil {
		t.Fatal("Notify succeeded")
	}
	if got := h.hits.Load(); got != 4 {
		t.Errorf("%d requests, want 4", got)
	}
	if !strings.Contains(err.Error(), "gave up after 4 attempts") || !strings.Contains(err.Error(), "503") {
		t.Errorf("error %q", err)
	}

	// Default: DefaultWebhookAttempts.
	h = newHookServer(t, -500)
	if err := fastWebhook(h.URL).Notify(context.Background(), gaveUp()); err == nil {
		t.Fatal("Notify succeeded")
	}
	if got := h.hits.Load(); got != DefaultWebhookAttempts {
		t.Errorf("%d requests, want %d", got, DefaultWebhookAttempts)
	}
}

func TestWebhookTransportErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	w := fastWebhook("http://" + addr + "/hooks/secret-token?key=k3y")
	w.Attempts = 3
	err = w.Notify(context.Background(), gaveUp())
	if err == nil {
		t.Fatal("Notify succeeded")
	}
	if !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q", err)
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "k3y") {
		t.Errorf("error %q shows the URL's secret", err)
	}

	// A server that does not answer within Timeout is retried too.
	var hits atomic.Int32
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer slow.Close()
	defer close(release)
	w = fastWebhook(slow.URL)
	w.Timeout = 100 * time.Millisecond
	if err := w.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if got := hits.Load(); got != 2 {
		t.Errorf("%d requests, want 2", got)
	}
}

func TestWebhookContextCancel(t *testing.T) {
	h := newHookServer(t, -500)
	w := fastWebhook(h.URL)
	w.InitialInterval, w.MaxInterval = time.Hour, time.Hour
	// Cancel once the client has read the first answer (the 500) and
	// closed its body, so that the wait being cut is the backoff's. The
	// server's count of hits is no such sign: it is taken before the
	// answer is even written, and a cancel then cuts the request instead
	// (13 runs in 200 failed that way).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Client = &http.Client{Transport: afterBodyClose{next: http.DefaultTransport, done: cancel}}
	start := time.Now()
	err := w.Notify(ctx, gaveUp())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Notify returned after %v", d)
	}
	if !strings.Contains(err.Error(), "500") {
		t.Errorf("error %q does not give the last failure", err)
	}
}

// afterBodyClose is a transport that calls done once the body of an answer
// has been closed: the client has read the answer.
type afterBodyClose struct {
	next http.RoundTripper
	done func()
}

func (t afterBodyClose) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &closeHook{ReadCloser: resp.Body, done: t.done}
	return resp, nil
}

type closeHook struct {
	io.ReadCloser
	done func()
}

func (c *closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.done()
	return err
}

func TestWebhookValidate(t *testing.T) {
	for _, u := range []string{"", "example.com/hook", "ftp://example.com/x", "http://", "http://exa mple.com/", "/relative"} {
		if err := (&Webhook{URL: u}).Validate(); err == nil {
			t.Errorf("URL %q: Validate succeeded", u)
		}
	}
	if err := (&Webhook{URL: "https://hooks.example.com/x", Events: []string{"crashed", "gave_up"}}).Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if err := (&Webhook{URL: "https://hooks.example.com/x", Events: []string{"crash"}}).Validate(); err == nil ||
		!strings.Contains(err.Error(), `unknown event "crash"`) {
		t.Errorf("Validate with event crash: %v", err)
	}
	if got := Redact("https://user:pw@hooks.example.com/services/T0/B0/xyz"); got != "https://hooks.example.com/…" {
		t.Errorf("Redact: %q", got)
	}
}

func TestWants(t *testing.T) {
	ok := failedDeployment()
	ok.Status = "success"
	aborted := failedDeployment()
	aborted.Status = "aborted"
	crashed := Message{Event: EventCrashed, App: "blog", Container: "c1"}
	all := []Message{failedDeployment(), ok, aborted, gaveUp(), crashed}

	email := &Email{}
	var got []bool
	for _, m := range all {
		got = append(got, email.Wants(m))
	}
	if want := []bool{true, false, false, true, false}; !slices.Equal(got, want) {
		t.Errorf("email default Wants = %v, want %v", got, want)
	}
	hook := &Webhook{}
	for _, m := range all {
		if !hook.Wants(m) {
			t.Errorf("webhook does not want %+v by default", m)
		}
	}
	email.Events = []string{"deployment", "crashed"}
	got = got[:0]
	for _, m := range all {
		got = append(got, email.Wants(m))
	}
	if want := []bool{true, true, true, false, true}; !slices.Equal(got, want) {
		t.Errorf("email Wants with deployment, crashed = %v, want %v", got, want)
	}
}

// ---- SMTP ----

type mailReceived struct {
	from string
	to   []string
	user string
	data []byte
}

// smtpBackend is a go-smtp backend that keeps what it receives. When user
// is set, it requires AUTH PLAIN with user and pass. It answers the first
// tempFail DATA commands with 451.
type smtpBackend struct {
	user, pass string
	tempFail   atomic.Int32
	received   chan mailReceived
	// sessions counts sessions: one per connection, plus one after
	// STARTTLS. auths counts AUTH commands.
	sessions atomic.Int32
	auths    atomic.Int32
}

func (b *smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	b.sessions.Add(1)
	return &smtpSession{b: b}, nil
}

type smtpSession struct {
	b    *smtpBackend
	user string
	from string
	to   []string
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	s.b.auths.Add(1)
	return sasl.NewPlainServer(func(_, username, password string) error {
		if s.b.user == "" || username != s.b.user || password != s.b.pass {
			return smtp.ErrAuthFailed
		}
		s.user = username
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.b.user != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.b.tempFail.Add(-1) >= 0 {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	s.b.received <- mailReceived{from: s.from, to: slices.Clone(s.to), user: s.user, data: data}
	return nil
}

func (s *smtpSession) Reset()        { s.from, s.to = "", nil }
func (s *smtpSession) Logout() error { return nil }

// startSMTP starts a go-smtp server on 127.0.0.1:0 and returns its backend
// and port. With tlsConfig the server offers STARTTLS.
func startSMTP(t *testing.T, be *smtpBackend, tlsConfig *tls.Config) int {
	t.Helper()
	be.received = make(chan mailReceived, 10)
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.TLSConfig = tlsConfig
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// selfSigned returns a server TLS config with a certificate for 127.0.0.1
// and a pool that trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podswitch test SMTP"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func waitMail(t *testing.T, be *smtpBackend) mailReceived {
	t.Helper()
	select {
	case m := <-be.received:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no e-mail arrived")
		return mailReceived{}
	}
}

// parsed is an e-mail's headers (decoded) and body (decoded).
type parsed struct {
	header netmail.Header
	body   string
}

func parseMail(t *testing.T, data []byte) parsed {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading the e-mail: %v\n%s", err, data)
	}
	var body io.Reader = msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return parsed{header: msg.Header, body: string(b)}
}

func (p parsed) get(t *testing.T, name string) string {
	t.Helper()
	v, err := new(mime.WordDecoder).DecodeHeader(p.header.Get(name))
	if err != nil {
		t.Fatalf("header %s: %v", name, err)
	}
	return v
}

func addresses(t *testing.T, p parsed, name string) []string {
	t.Helper()
	list, err := p.header.AddressList(name)
	if err != nil {
		t.Fatalf("header %s: %v", name, err)
	}
	var out []string
	for _, a := range list {
		out = append(out, a.Address)
	}
	return out
}

func TestEmailPlain(t *testing.T) {
	be := &smtpBackend{}
	port := startSMTP(t, be, nil)
	e := &Email{Host: "127.0.0.1", Port: port, TLS: TLSNone, From: "podswitch <ops@example.com>",
		To: []string{"alice@example.com", "Bob <bob@example.com>"}}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := e.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	got := waitMail(t, be)
	if got.from != "ops@example.com" {
		t.Errorf("envelope from %q", got.from)
	}
	if want := []string{"alice@example.com", "bob@example.com"}; !slices.Equal(got.to, want) {
		t.Errorf("envelope to %q, want %q", got.to, want)
	}
	p := parseMail(t, got.data)
	if from := addresses(t, p, "From"); !slices.Equal(from, []string{"ops@example.com"}) {
		t.Errorf("From %q", from)
	}
	if to := addresses(t, p, "To"); !slices.Equal(to, []string{"alice@example.com", "bob@example.com"}) {
		t.Errorf("To %q", to)
	}
	if subj, want := p.get(t, "Subject"), "[podswitch] blog: restart of web (container blog-web-3) gave up"; subj != want {
		t.Errorf("Subject %q, want %q", subj, want)
	}
	if ev := p.get(t, "X-Podswitch-Event"); ev != "gave_up" {
		t.Errorf("X-Podswitch-Event %q", ev)
	}
	for _, want := range []string{"App:        blog", "Event:      gave_up", "Process:    web", "Container:  blog-web-3",
		"restart gave up after 20 attempts: exit status 1", "2026-03-04T05:06:07Z"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("body does not contain %q:\n%s", want, p.body)
		}
	}

	// A failed deployment, with a subject prefix of one's own.
	e.SubjectPrefix = "[prod]"
	if err := e.Notify(context.Background(), failedDeployment()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	p = parseMail(t, waitMail(t, be).data)
	if subj, want := p.get(t, "Subject"), "[prod] blog: deploy 7 failed (timeout-error), image localhost/blog:v2"; subj != want {
		t.Errorf("Subject %q, want %q", subj, want)
	}
	for _, want := range []string{"App:        blog", "Event:      deployment", "Status:     timeout-error", "Deployment: 7",
		"Image:      localhost/blog:v2", "web container not ready within 60s", "previous release keeps serving"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("body does not contain %q:\n%s", want, p.body)
		}
	}
}

func TestEmailSTARTTLSWithAuth(t *testing.T) {
	serverTLS, pool := selfSigned(t)
	be := &smtpBackend{user: "podswitch", pass: "pa55word"}
	port := startSMTP(t, be, serverTLS)
	e := &Email{Host: "127.0.0.1", Port: port, TLS: TLSMandatory, TLSConfig: &tls.Config{RootCAs: pool},
		Username: "podswitch", Password: "pa55word", From: "ops@example.com", To: []string{"oncall@example.com"}}
	if err := e.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	got := waitMail(t, be)
	if got.user != "podswitch" {
		t.Errorf("authenticated as %q", got.user)
	}
	if p := parseMail(t, got.data); !strings.Contains(p.get(t, "Subject"), "blog: restart of web") {
		t.Errorf("Subject %q", p.get(t, "Subject"))
	}

	// A wrong password is not retried, and not shown.
	e.Password = "wrong-pa55"
	before := be.auths.Load()
	err := e.Notify(context.Background(), gaveUp())
	if err == nil {
		t.Fatal("Notify with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-pa55") {
		t.Errorf("error %q shows the password", err)
	}
	if n := be.auths.Load() - before; n != 1 {
		t.Errorf("%d AUTH commands after an authentication failure, want 1 (no retry)", n)
	}

	// Without a trusted certificate, mandatory TLS fails.
	e.Password, e.TLSConfig = "pa55word", nil
	if err := e.Notify(context.Background(), gaveUp()); err == nil {
		t.Error("Notify to a server with an untrusted certificate succeeded")
	}
}

func TestEmailMandatoryTLSNotOffered(t *testing.T) {
	be := &smtpBackend{}
	port := startSMTP(t, be, nil)
	e := &Email{Host: "127.0.0.1", Port: port, From: "ops@example.com", To: []string{"oncall@example.com"}}
	err := e.Notify(context.Background(), gaveUp())
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Notify with the default (mandatory) TLS to a server without STARTTLS: %v", err)
	}
	// Opportunistic TLS goes on in plain text.
	e.TLS = TLSOpportunistic
	if err := e.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify with opportunistic TLS: %v", err)
	}
	waitMail(t, be)
}

func TestEmailRetriesTemporaryFailures(t *testing.T) {
	be := &smtpBackend{}
	be.tempFail.Store(2)
	port := startSMTP(t, be, nil)
	e := &Email{Host: "127.0.0.1", Port: port, TLS: TLSNone, From: "ops@example.com", To: []string{"oncall@example.com"},
		InitialInterval: time.Millisecond}
	if err := e.Notify(context.Background(), gaveUp()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	waitMail(t, be)
	if n := be.sessions.Load(); n != 3 {
		t.Errorf("%d sessions, want 3 (451, 451, 250)", n)
	}

	// A server that keeps answering 451 is given up on.
	be.tempFail.Store(100)
	before := be.sessions.Load()
	err := e.Notify(context.Background(), gaveUp())
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("error %v", err)
	}
	if n := be.sessions.Load() - before; n != DefaultEmailAttempts {
		t.Errorf("%d sessions, want %d", n, DefaultEmailAttempts)
	}
}

func TestEmailValidate(t *testing.T) {
	good := Email{Host: "smtp.example.com", From: "ops@example.com", To: []string{"a@example.com"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*Email)
		want string
	}{
		{"no host", func(e *Email) { e.Host = "" }, "host is required"},
		{"no from", func(e *Email) { e.From = "" }, "from is required"},
		{"bad from", func(e *Email) { e.From = "not an address" }, `from: "not an address" is not an e-mail address`},
		{"no to", func(e *Email) { e.To = nil }, "to is required"},
		{"bad to", func(e *Email) { e.To = []string{"a@example.com", "b@"} }, `to: "b@" is not an e-mail address`},
		{"bad tls", func(e *Email) { e.TLS = "starttls" }, `tls "starttls": want none, opportunistic or mandatory`},
		{"bad port", func(e *Email) { e.Port = 70000 }, "port 70000"},
		{"password alone", func(e *Email) { e.Password = "x" }, "password is set but username is not"},
		{"bad event", func(e *Email) { e.Events = []string{"gave-up"} }, `unknown event "gave-up"`},
	}
	for _, tc := range tests {
		e := good
		tc.edit(&e)
		err := e.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
