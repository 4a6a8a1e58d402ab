package sshtunnel

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// env is a test's world: an SSH server with an ed25519 host key, a client
// key it accepts, files, an HTTP backend, and a HOME whose ~/.ssh must
// stay absent.
type env struct {
	t          *testing.T
	dir        string
	srv        *sshServer
	hostKey    ssh.Signer
	clientKey  ssh.Signer
	identity   string
	identityPK string // base64 of the private key's PEM body, never to be logged
	knownHosts string
	backend    string
	core       zapcore.Core
	logs       *observer.ObservedLogs
	closeHTTP  func()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(home, ".ssh")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("~/.ssh exists in the test's HOME (%v)", err)
		}
	})
	var priv any
	e.hostKey, _ = newSigner(t)
	e.clientKey, priv = newSigner(t)
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	e.identityPK = base64.StdEncoding.EncodeToString(block.Bytes)
	e.identity = writeFile(t, e.dir, "id_ed25519", pem.EncodeToMemory(block))
	e.srv = newSSHServer(t, e.clientKey.PublicKey(), e.hostKey)
	e.knownHosts = writeFile(t, e.dir, "known_hosts", []byte(knownLine(e.srv.Addr(), e.hostKey.PublicKey())))
	e.backend, e.closeHTTP = httpBackend(t, e.dir)
	e.core, e.logs = observer.New(zap.DebugLevel)
	t.Cleanup(e.checkLogs)
	return e
}

func knownLine(addr string, key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
}

func (e *env) config() Config {
	return Config{
		Addr:           e.srv.Addr(),
		User:           "podman",
		IdentityFile:   e.identity,
		KnownHostsFile: e.knownHosts,
		RemoteSocket:   e.backend,
		LocalDir:       filepath.Join(e.dir, "run"),
		Logger:         zap.New(e.core),
	}
}

// shutdown ends the test's servers.
func (e *env) shutdown() {
	e.srv.Close()
	e.closeHTTP()
}

// open opens a tunnel closed at the end of the test.
func (e *env) open(cfg Config) *Tunnel {
	e.t.Helper()
	tun, err := Open(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { tun.Close() })
	return tun
}

// checkLogs: lowercase messages, no key material.
func (e *env) checkLogs() {
	for _, l := range e.logs.All() {
		if r := []rune(l.Message); len(r) > 0 && unicode.IsUpper(r[0]) {
			e.t.Errorf("log message not lowercase: %q", l.Message)
		}
		all := l.Message + fmt.Sprint(l.ContextMap())
		if strings.Contains(all, "PRIVATE KEY") || strings.Contains(all, e.identityPK[:40]) {
			e.t.Errorf("log has key material: %s", all)
		}
	}
}

// fileState is a file's content and mtime.
type fileState struct {
	data  []byte
	mtime time.Time
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{data, fi.ModTime()}
}

func socketPath(tun *Tunnel) string { return strings.TrimPrefix(tun.URI(), "unix://") }

func httpClient(t *testing.T, tun *Tunnel, keepAlive bool) *http.Client {
	path := socketPath(tun)
	tr := &http.Transport{
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(c *http.Client, path string) (string, error) {
	resp, err := c.Get("http://podman" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func mustGet(t *testing.T, c *http.Client, path string) {
	t.Helper()
	body, err := get(c, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if want := "podman says hello to " + path; body != want {
		t.Fatalf("GET %s: %q, want %q", path, body, want)
	}
}

func TestOpenListensAndDoesNotConnect(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.LocalDir = filepath.Join(e.dir, "a", "b")
	tun := e.open(cfg)

	if !strings.HasPrefix(tun.URI(), "unix://"+cfg.LocalDir+"/") {
		t.Errorf("URI %q is not a socket in %s", tun.URI(), cfg.LocalDir)
	}
	fi, err := os.Stat(socketPath(tun))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(cfg.LocalDir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("local dir mode %v, want 0700", di.Mode().Perm())
	}
	if n := e.srv.accepted.Load(); n != 0 {
		t.Errorf("open made %d ssh connections, want none", n)
	}
	if err := tun.Err(); err != nil {
		t.Errorf("Err before any dial: %v", err)
	}
	// Two tunnels in the same directory have their own sockets.
	if other := e.open(cfg); other.URI() == tun.URI() {
		t.Errorf("two tunnels share %s", tun.URI())
	}
}

func TestHTTPThroughTunnel(t *testing.T) {
	e := newEnv(t)
	tun := e.open(e.config())
	c := httpClient(t, tun, false)

	// The first connections, all at once, share one dial.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/v5/info/%d", i)
			body, err := get(c, path)
			if err == nil && body != "podman says hello to "+path {
				err = fmt.Errorf("body %q", body)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := e.srv.accepted.Load(); n != 1 {
		t.Errorf("%d ssh connections, want 1", n)
	}
	if err := tun.Err(); err != nil {
		t.Errorf("Err while connected: %v", err)
	}
	if err := tun.Connect(context.Background()); err != nil {
		t.Errorf("Connect while connected: %v", err)
	}
	mustGet(t, c, "/_ping")
	if n := e.srv.accepted.Load(); n != 1 {
		t.Errorf("%d ssh connections, want 1", n)
	}
	var connected bool
	for _, l := range e.logs.FilterMessage("ssh connected").All() {
		fp, _ := l.ContextMap()["host_key_fingerprint"].(string)
		connected = fp == ssh.FingerprintSHA256(e.hostKey.PublicKey())
	}
	if !connected {
		t.Errorf("no log of the connection with the host key's fingerprint: %v", e.logs.All())
	}
}

func TestHalfClose(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.RemoteSocket = echoBackend(t, e.dir)
	tun := e.open(cfg)

	conn, err := net.Dial("unix", socketPath(tun))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := strings.Repeat("half-close ", 10000)
	go func() {
		io.WriteString(conn, msg)
		conn.(*net.UnixConn).CloseWrite()
	}()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
	}
	// Both ends closed: the server's channel ends.
	waitFor(t, "the forwarded channel to end", func() bool { return e.srv.channelsEnded.Load() == 1 })
}

func TestUnknownHostKeyRefused(t *testing.T) {
	e := newEnv(t)
	// known_hosts knows another host only.
	other, _ := newSigner(t)
	os.WriteFile(e.knownHosts, []byte(knownLine("otherhost:22", other.PublicKey())), 0o600)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(e.knownHosts, old, old)
	before := stateOf(t, e.knownHosts)
	tun := e.open(e.config())

	err := tun.Connect(context.Background())
	var he *HostKeyError
	if !errors.As(err, &he) {
		t.Fatalf("Connect: %v, want a HostKeyError", err)
	}
	if he.Changed || he.Revoked {
		t.Errorf("unknown key reported as changed or revoked: %+v", he)
	}
	fp := ssh.FingerprintSHA256(e.hostKey.PublicKey())
	for _, want := range []string{e.srv.Addr(), "unknown", "ssh-ed25519", fp, e.knownHosts, "add the key", "check"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !errors.Is(tun.Err(), err) && tun.Err().Error() != err.Error() {
		t.Errorf("Err() = %v, want %v", tun.Err(), err)
	}
	// A connection to the socket fails.
	if _, gerr := get(httpClient(t, tun, false), "/_ping"); gerr == nil {
		t.Error("GET through a refused host worked")
	}
	if n := e.srv.accepted.Load(); n != 0 {
		t.Errorf("%d ssh connections established with a refused host", n)
	}
	if after := stateOf(t, e.knownHosts); string(after.data) != string(before.data) || !after.mtime.Equal(before.mtime) {
		t.Errorf("known_hosts changed: %q (%v) -> %q (%v)", before.data, before.mtime, after.data, after.mtime)
	}

	// Once the key is added (by a person), the next dial takes it.
	f, _ := os.OpenFile(e.knownHosts, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(knownLine(e.srv.Addr(), e.hostKey.PublicKey()))
	f.Close()
	if err := tun.Connect(context.Background()); err != nil {
		t.Fatalf("Connect after the key was added: %v", err)
	}
	mustGet(t, httpClient(t, tun, false), "/_ping")
}

func TestChangedHostKeyRefused(t *testing.T) {
	e := newEnv(t)
	impostor, _ := newSigner(t)
	e.srv.Close()
	// The server at the known address now has another key.
	e.srv = newSSHServer(t, e.clientKey.PublicKey(), impostor)
	e.knownHosts = writeFile(t, e.dir, "known_hosts2", []byte(knownLine(e.srv.Addr(), e.hostKey.PublicKey())))
	before := stateOf(t, e.knownHosts)
	tun := e.open(e.config())

	err := tun.Connect(context.Background())
	var he *HostKeyError
	if !errors.As(err, &he) || !he.Changed {
		t.Fatalf("Connect: %v, want a HostKeyError of a changed key", err)
	}
	for _, want := range []string{e.srv.Addr(), "CHANGED", "attack", ssh.FingerprintSHA256(impostor.PublicKey()),
		ssh.FingerprintSHA256(e.hostKey.PublicKey()), e.knownHosts + ":1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := e.srv.accepted.Load(); n != 0 {
		t.Errorf("%d ssh connections established with a changed key", n)
	}
	if after := stateOf(t, e.knownHosts); string(after.data) != string(before.data) || !after.mtime.Equal(before.mtime) {
		t.Errorf("known_hosts changed")
	}
}

func TestRevokedHostKeyRefused(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(e.knownHosts, []byte(knownLine(e.srv.Addr(), e.hostKey.PublicKey())+
		"@revoked * "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.hostKey.PublicKey())))+"\n"), 0o600)
	tun := e.open(e.config())
	err := tun.Connect(context.Background())
	var he *HostKeyError
	if !errors.As(err, &he) || !he.Revoked || !strings.Contains(err.Error(), "@revoked ("+e.knownHosts+":2 ssh-ed25519") {
		t.Fatalf("Connect: %v, want a HostKeyError of a revoked key", err)
	}
}

// A host with several keys presents one of the types known_hosts has.
func TestHostKeyTypeFromKnownHosts(t *testing.T) {
	e := newEnv(t)
	e.srv.Close()
	ecdsaKey := newECDSASigner(t)
	e.srv = newSSHServer(t, e.clientKey.PublicKey(), ecdsaKey, e.hostKey)
	e.knownHosts = writeFile(t, e.dir, "known_hosts2", []byte(knownLine(e.srv.Addr(), e.hostKey.PublicKey())))
	tun := e.open(e.config())
	if err := tun.Connect(context.Background()); err != nil {
		t.Fatalf("Connect to a host with an ecdsa and a known ed25519 key: %v", err)
	}
	mustGet(t, httpClient(t, tun, false), "/_ping")
}

func TestAuthRefused(t *testing.T) {
	e := newEnv(t)
	e.srv.Close()
	someoneElse, _ := newSigner(t)
	e.srv = newSSHServer(t, someoneElse.PublicKey(), e.hostKey)
	e.knownHosts = writeFile(t, e.dir, "known_hosts2", []byte(knownLine(e.srv.Addr(), e.hostKey.PublicKey())))
	tun := e.open(e.config())
	err := tun.Connect(context.Background())
	if err == nil {
		t.Fatal("Connect with a key the host refuses worked")
	}
	for _, want := range []string{"refused user podman", e.identity, ssh.FingerprintSHA256(e.clientKey.PublicKey())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestHandshakeTimeout(t *testing.T) {
	e := newEnv(t)
	addr, accepted, _ := silentServer(t)
	cfg := e.config()
	cfg.Addr = addr
	cfg.DialTimeout = 200 * time.Millisecond
	os.WriteFile(e.knownHosts, []byte(knownLine(addr, e.hostKey.PublicKey())), 0o600)
	tun := e.open(cfg)

	// ctx only guards the test: the dial must end on its own, with the
	// dial timeout's error.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := tun.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "no ssh handshake within 200ms") {
		t.Fatalf("Connect to a silent server: %v", err)
	}
	// Bounded by DialTimeout, with a margin for a slow machine.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Connect took %v with a dial timeout of 200ms", d)
	}
	if accepted.Load() != 1 {
		t.Errorf("silent server accepted %d connections, want 1", accepted.Load())
	}
	if tun.Err() == nil {
		t.Error("Err is nil after a failed dial")
	}
	// A connection to the socket is closed, not left hanging.
	if _, err := get(httpClient(t, tun, false), "/_ping"); err == nil {
		t.Error("GET through a silent server worked")
	}
}

func TestConnectContextAndCloseDuringDial(t *testing.T) {
	base := runtime.NumGoroutine()
	e := newEnv(t)
	addr, accepted, stopSilent := silentServer(t)
	cfg := e.config()
	cfg.Addr = addr
	cfg.DialTimeout = time.Hour
	tun, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, "the dial to reach the server", func() bool { return accepted.Load() == 1 })
		cancel()
	}()
	if err := tun.Connect(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect with a canceled context: %v", err)
	}
	// The dial goes on; a second caller waits for it, and Close ends both.
	res := make(chan error)
	go func() { res <- tun.Connect(context.Background()) }()
	conn, err := net.Dial("unix", socketPath(tun))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, "the tunnel to accept the local connection", func() bool {
		tun.mu.Lock()
		defer tun.mu.Unlock()
		return len(tun.conns) == 1
	})
	if err := tun.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Errorf("Connect during Close: %v, want ErrClosed", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d dials, want 1 shared", n)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read of a local connection after Close: %v, want EOF", err)
	}
	conn.Close()
	stopSilent()
	e.shutdown()
	checkGoroutines(t, base)
}

func TestChannelRefused(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.RemoteSocket = "/nonexistent/podman.sock"
	tun := e.open(cfg)
	if _, err := get(httpClient(t, tun, false), "/_ping"); err == nil {
		t.Fatal("GET to a missing remote socket worked")
	}
	// The SSH connection itself is fine.
	if err := tun.Err(); err != nil {
		t.Errorf("Err: %v", err)
	}
	var found bool
	for _, l := range e.logs.FilterMessage("ssh tunnel: cannot reach the remote socket").All() {
		found = strings.Contains(fmt.Sprint(l.ContextMap()["error"]), "refused to connect to /nonexistent/podman.sock")
	}
	if !found {
		t.Errorf("no log of the refused channel: %v", e.logs.All())
	}
}

func TestChannelOpenTimeout(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.DialTimeout = 500 * time.Millisecond
	tun := e.open(cfg)
	if err := tun.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.srv.holding.Store(true)
	c := httpClient(t, tun, false)
	if _, err := get(c, "/_ping"); err == nil {
		t.Fatal("GET worked while the server held the channel")
	}
	if e.srv.held.Load() != 1 {
		t.Fatalf("%d channel opens held, want 1", e.srv.held.Load())
	}
	// The channel that opens late is closed.
	e.srv.holding.Store(false)
	e.srv.releaseHeld()
	waitFor(t, "the late channel to be closed", func() bool { return e.srv.channelsEnded.Load() == 1 })
	mustGet(t, c, "/_ping")
	if n := e.srv.accepted.Load(); n != 1 {
		t.Errorf("%d ssh connections, want 1", n)
	}
}

func TestKeepAliveNoticesFrozenServer(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.KeepAlive = 50 * time.Millisecond
	tun := e.open(cfg)
	c := httpClient(t, tun, false)
	mustGet(t, c, "/_ping")

	// A forwarded connection left open over the connection.
	conn, err := net.Dial("unix", socketPath(tun))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /open HTTP/1.1\r\nHost: podman\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	e.srv.frozen.Store(true)
	waitFor(t, "the tunnel to drop the frozen connection", func() bool { return tun.Err() != nil })
	if err := tun.Err(); !strings.Contains(err.Error(), "no answer to keepalive") {
		t.Errorf("Err: %v", err)
	}
	// The client is closed, not only forgotten: the server sees its end,
	// and the forwarded connection ends.
	waitFor(t, "the server to see the connection end", func() bool { return e.srv.ended.Load() == 1 })
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("read of a forwarded connection over the dropped client: %v, want EOF", err)
	}

	e.srv.frozen.Store(false)
	mustGet(t, c, "/_ping")
	if n := e.srv.accepted.Load(); n < 2 {
		t.Errorf("%d ssh connections, want a new one", n)
	}
}

func TestConnectionLostRedials(t *testing.T) {
	e := newEnv(t)
	tun := e.open(e.config())
	c := httpClient(t, tun, false)
	mustGet(t, c, "/_ping")
	e.srv.dropAll()
	waitFor(t, "the tunnel to notice the lost connection", func() bool { return tun.Err() != nil })
	if err := tun.Err(); !strings.Contains(err.Error(), "connection lost") {
		t.Errorf("Err: %v", err)
	}
	mustGet(t, c, "/_ping")
	if n := e.srv.accepted.Load(); n != 2 {
		t.Errorf("%d ssh connections, want 2", n)
	}
	if err := tun.Err(); err != nil {
		t.Errorf("Err after the redial: %v", err)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	e := newEnv(t)
	cfg := e.config()
	cfg.KeepAlive = 20 * time.Millisecond
	tun, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := httpClient(t, tun, true)
	mustGet(t, c, "/_ping") // leaves an idle keep-alive connection
	conn, err := net.Dial("unix", socketPath(tun))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /open HTTP/1.1\r\nHost: podman\r\n\r\n")
	br := bufio.NewReader(conn)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}

	if err := tun.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tun.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(socketPath(tun)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	if _, err := net.Dial("unix", socketPath(tun)); err == nil {
		t.Error("dial of the socket after Close worked")
	}
	if err := tun.Connect(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Connect after Close: %v", err)
	}
	if err := tun.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err after Close: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Errorf("forwarded connection after Close: %v, want EOF", err)
	}
	waitFor(t, "the server to see the ssh connection end", func() bool { return e.srv.ended.Load() == 1 })
	conn.Close()
	c.CloseIdleConnections()
	e.shutdown()
	checkGoroutines(t, base)
}

// checkGoroutines waits for the number of goroutines to come back to
// base, once the test's servers are closed.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	var n int
	deadline := time.Now().Add(10 * time.Second)
	for {
		n = runtime.NumGoroutine()
		if n <= base || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before the test:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func TestOpenErrors(t *testing.T) {
	e := newEnv(t)
	encrypted := writeFile(t, e.dir, "id_encrypted", []byte(encryptedKey))
	garbage := writeFile(t, e.dir, "garbage", []byte("not a key\n"))
	badKnown := writeFile(t, e.dir, "bad_known_hosts", []byte("# comment\nhost ssh-ed25519 !!!\n"))
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want []string
	}{
		{"missing identity", func(c *Config) { c.IdentityFile = filepath.Join(e.dir, "nope") }, []string{"identity file", filepath.Join(e.dir, "nope")}},
		{"garbage identity", func(c *Config) { c.IdentityFile = garbage }, []string{"identity file " + garbage}},
		{"encrypted identity", func(c *Config) { c.IdentityFile = encrypted }, []string{encrypted, "passphrase"}},
		{"no known_hosts", func(c *Config) { c.KnownHostsFile = "" }, []string{"no known_hosts file"}},
		{"missing known_hosts", func(c *Config) { c.KnownHostsFile = filepath.Join(e.dir, "nope") }, []string{"known_hosts file", filepath.Join(e.dir, "nope")}},
		{"bad known_hosts", func(c *Config) { c.KnownHostsFile = badKnown }, []string{badKnown + ":2"}},
		{"relative remote socket", func(c *Config) { c.RemoteSocket = "podman.sock" }, []string{"not an absolute path"}},
		{"long local dir", func(c *Config) { c.LocalDir = filepath.Join(e.dir, strings.Repeat("d", 100)) }, []string{"longer than"}},
		{"no address", func(c *Config) { c.Addr = "" }, []string{"no address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			tc.mod(&cfg)
			tun, err := Open(cfg)
			if err == nil {
				tun.Close()
				t.Fatal("Open worked")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// encryptedKey is a throwaway key protected by the passphrase "secret"
// (ssh-keygen -t ed25519 -a 1 -N secret), made for this test only.
const encryptedKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABDXUL6JGV
nTopOk1YUNrWCGAAAAAQAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIBl/i4lmdHQo8+fX
u8gXsspkBjuSKoKAeSMRrx/BTD0qAAAAkAiO7B8VsZ9a7+BO3HaIYnP98T56qQp1fQPCl8
iesnd1ufudC7XOzrrlZmOFdWFrbUF02TDa5x2vj/+Xx60a2vYDU3wz9yxR6Aa0SuC3BBBL
0Lu5aNQ2/3mlJuCiVeU5p4kcRXK/ZOQv/7kyMDozxaaC3ZoqXv4WW8ATkrsfoc9gDcq+pG
ySZpocwH+iqj3bIQ==
-----END OPENSSH PRIVATE KEY-----
`
