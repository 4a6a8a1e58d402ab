// Package sshtunnel gives the Podman bindings a local unix socket that
// leads to a remote Podman socket over SSH, on an SSH connection that
// podswitch owns.
//
// The bindings' own SSH client adds unknown host keys to known_hosts,
// ignores the context while it dials, sends no keepalives and cannot be
// closed. A Tunnel instead:
//
//   - checks the host's key against one known_hosts file only, and never
//     writes to any file: an unknown or changed key is refused with an
//     error (HostKeyError) that says what to check;
//   - listens on a unix socket of its own (URI) and forwards each
//     connection accepted there to the remote socket over a
//     direct-streamlocal@openssh.com channel;
//   - dials SSH lazily: the first connection (or Connect) dials, and the
//     connections that come during that dial share it; the dial (TCP and
//     SSH handshake) is bounded by Config.DialTimeout, and so is the
//     opening of each channel;
//   - sends keepalive@openssh.com requests every Config.KeepAlive; a
//     request left unanswered for two intervals closes the SSH connection
//     (and the connections forwarded over it), so a dead host is noticed
//     within three intervals and the next connection dials again;
//   - closes everything on Close: listener, socket file, SSH connection,
//     forwarded connections, and waits for its goroutines.
//
// A local connection that cannot be forwarded (no SSH connection, channel
// refused or not opened in time) is closed at once: the HTTP client of the
// bindings sees a transport error, and Err tells why.
package sshtunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
)

// ErrClosed is returned by Connect and Err once the tunnel is closed.
var ErrClosed = errors.New("ssh tunnel closed")

// Config describes a tunnel.
type Config struct {
	// Addr is the address of the SSH server, host:port (host alone means
	// port 22).
	Addr string
	// User is the remote user.
	User string
	// IdentityFile is the private key to log in with: an unencrypted
	// OpenSSH or PEM key (ed25519, rsa, ecdsa).
	IdentityFile string
	// KnownHostsFile is an OpenSSH known_hosts file with the host's key.
	// Required. It is read at Open and again at each dial (a key added
	// after a refusal is taken at the next dial), never written.
	KnownHostsFile string
	// RemoteSocket is the path of the Podman socket on the remote host.
	RemoteSocket string
	// LocalDir is the directory of the local socket; it is created with
	// mode 0700 when missing.
	LocalDir string
	// KeepAlive is the interval of keepalive requests; 5s when zero.
	KeepAlive time.Duration
	// DialTimeout bounds the TCP dial and SSH handshake together, and the
	// opening of each forwarded channel; 10s when zero.
	DialTimeout time.Duration
	// Logger may be nil.
	Logger *zap.Logger
}

// Tunnel forwards the connections of a local unix socket to a remote
// unix socket over SSH. Its methods are safe for concurrent use.
type Tunnel struct {
	cfg    Config
	addr   string // cfg.Addr with a port
	log    *zap.Logger
	auth   ssh.Signer
	ln     *net.UnixListener
	path   string
	ctx    context.Context // done once Close starts
	cancel context.CancelFunc

	// wg counts every goroutine the tunnel starts. Add happens either in
	// a goroutine it already counts or under mu while !closed, so never
	// after Close's Wait has begun with a zero count.
	wg sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	client  *client   // current SSH connection; nil when none
	dialing *dialCall // dial in flight; nil when none
	lastErr error
	conns   map[net.Conn]struct{} // local and forwarded connections open

	closeOnce sync.Once
	closeErr  error
}

type client struct {
	*ssh.Client
	gone chan struct{} // closed when the connection has ended
}

type dialCall struct {
	done chan struct{} // closed when c or err is set
	c    *client
	err  error
}

// maxSocketPath is the longest path a unix socket may have on the
// platforms podswitch runs on (sun_path is 108 bytes on Linux, 104 on BSDs).
const maxSocketPath = 103

// Open checks cfg (it reads the identity file and the known_hosts file)
// and listens on a new socket in cfg.LocalDir, with mode 0600. It does not
// connect to the SSH server: the first connection to the socket, or
// Connect, does.
func Open(cfg Config) (*Tunnel, error) {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 5 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	switch {
	case cfg.Addr == "":
		return nil, errors.New("ssh tunnel: no address of the ssh server")
	case cfg.User == "":
		return nil, errors.New("ssh tunnel: no user")
	case cfg.IdentityFile == "":
		return nil, errors.New("ssh tunnel: no identity file")
	case cfg.KnownHostsFile == "":
		return nil, errors.New("ssh tunnel: no known_hosts file: the host's key must be known in advance")
	case !strings.HasPrefix(cfg.RemoteSocket, "/"):
		return nil, fmt.Errorf("ssh tunnel: remote socket %q is not an absolute path", cfg.RemoteSocket)
	case cfg.LocalDir == "":
		return nil, errors.New("ssh tunnel: no local directory for the socket")
	case cfg.KeepAlive < 0 || cfg.DialTimeout < 0:
		return nil, errors.New("ssh tunnel: negative keepalive or dial timeout")
	}
	addr := cfg.Addr
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "22")
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("ssh_host", addr), zap.String("ssh_user", cfg.User))

	signer, err := readIdentity(cfg.IdentityFile)
	if err != nil {
		return nil, fmt.Errorf("ssh tunnel: %w", err)
	}
	if _, _, err := loadKnownHosts(cfg.KnownHostsFile, addr); err != nil {
		return nil, fmt.Errorf("ssh tunnel: %w", err)
	}

	if err := os.MkdirAll(cfg.LocalDir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh tunnel: local directory: %w", err)
	}
	if fi, err := os.Stat(cfg.LocalDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the directory of the local ssh tunnel socket is open to other users",
			zap.String("dir", cfg.LocalDir), zap.Stringer("mode", fi.Mode().Perm()))
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.LocalDir, "ssh-"+hex.EncodeToString(rnd[:])+".sock")
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("ssh tunnel: socket path %s is longer than %d bytes: choose a shorter local directory", path, maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("ssh tunnel: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("ssh tunnel: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t := &Tunnel{
		cfg: cfg, addr: addr, log: log, auth: signer, ln: ln, path: path,
		ctx: ctx, cancel: cancel, conns: make(map[net.Conn]struct{}),
	}
	t.wg.Add(1)
	go t.serve()
	log.Debug("ssh tunnel listening", zap.String("socket", path), zap.String("remote_socket", cfg.RemoteSocket))
	return t, nil
}

func readIdentity(file string) (ssh.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	var pe *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pe):
		return nil, fmt.Errorf("identity file %s is protected by a passphrase, which podswitch cannot give: use a key without one", file)
	case err != nil:
		return nil, fmt.Errorf("identity file %s: %w", file, err)
	}
	return signer, nil
}

// URI is the address of the local socket for the Podman bindings:
// unix:///path/of/socket.
func (t *Tunnel) URI() string { return "unix://" + t.path }

// Connect makes sure an SSH connection is up, dialing one when there is
// none, and returns the dial's error (a *HostKeyError for a refused host
// key). A dial runs at most DialTimeout and is shared by every caller
// that comes meanwhile; when ctx ends first, Connect returns ctx's error
// and the dial goes on for the others. It returns ErrClosed once Close
// has begun.
func (t *Tunnel) Connect(ctx context.Context) error {
	_, err := t.get(ctx)
	return err
}

// Err returns the error of the last dial or the reason the last
// connection ended, nil while an SSH connection is up or before the
// first dial, and ErrClosed after Close.
func (t *Tunnel) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return ErrClosed
	case t.client != nil:
		return nil
	}
	return t.lastErr
}

// Close stops the listener, removes the socket file, closes the SSH
// connection and every forwarded connection, ends a dial in flight, and
// waits for all of the tunnel's goroutines. Calls of Connect in flight
// return ErrClosed. Close may be called more than once.
func (t *Tunnel) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		c := t.client
		t.client = nil
		conns := t.conns
		t.conns = nil
		t.mu.Unlock()

		t.cancel()
		err := t.ln.Close()
		if c != nil {
			c.Close()
		}
		for conn := range conns {
			conn.Close()
		}
		t.wg.Wait()
		if rerr := os.Remove(t.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
		t.closeErr = err
		t.log.Debug("ssh tunnel closed", zap.String("socket", t.path))
	})
	return t.closeErr
}

// get returns the current SSH connection, dialing one if none.
func (t *Tunnel) get(ctx context.Context) (*client, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	if c := t.client; c != nil {
		t.mu.Unlock()
		return c, nil
	}
	call := t.dialing
	if call == nil {
		call = &dialCall{done: make(chan struct{})}
		t.dialing = call
		t.wg.Add(1)
		go t.dial(call)
	}
	t.mu.Unlock()
	select {
	case <-call.done:
		return call.c, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.ctx.Done():
		return nil, ErrClosed
	}
}

func (t *Tunnel) dial(call *dialCall) {
	defer t.wg.Done()
	sc, err := t.dialSSH()
	var c *client
	t.mu.Lock()
	t.dialing = nil
	prev := t.lastErr
	switch {
	case err == nil && t.closed:
		sc.Close()
		err = ErrClosed
	case err == nil:
		c = &client{Client: sc, gone: make(chan struct{})}
		t.client = c
		t.lastErr = nil
		t.wg.Add(2)
		go t.wait(c)
		go t.keepAlive(c)
	case !t.closed:
		t.lastErr = err
	}
	t.mu.Unlock()
	call.c, call.err = c, err
	close(call.done)
	if err != nil && !errors.Is(err, ErrClosed) {
		// Each local connection may dial again: say the same failure
		// once at warn level.
		lvl := zap.WarnLevel
		if prev != nil && prev.Error() == err.Error() {
			lvl = zap.DebugLevel
		}
		t.log.Log(lvl, "ssh connection failed", zap.Error(err))
	}
}

// dialSSH dials the server and does the SSH handshake within DialTimeout;
// Close ends it at once.
func (t *Tunnel) dialSSH() (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	checkHostKey, algos, err := loadKnownHosts(t.cfg.KnownHostsFile, t.addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		switch {
		case t.ctx.Err() != nil:
			return nil, ErrClosed
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: no tcp connection within %s", t.addr, t.cfg.DialTimeout)
		}
		return nil, fmt.Errorf("ssh %s: %w", t.addr, err)
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { raw.Close() })

	var hostKey ssh.PublicKey
	conf := &ssh.ClientConfig{
		User: t.cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(t.auth)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			hostKey = key
			return checkHostKey(hostname, remote, key)
		},
		HostKeyAlgorithms: algos,
	}
	sc, chans, reqs, err := ssh.NewClientConn(raw, t.addr, conf)
	if !stop() {
		// ctx ended: raw is closed (or being closed).
		if err == nil {
			sc.Close()
		}
		if t.ctx.Err() != nil {
			return nil, ErrClosed
		}
		err = os.ErrDeadlineExceeded
	}
	if err != nil {
		raw.Close()
		var he *HostKeyError
		switch {
		case errors.As(err, &he):
			return nil, he // names the address already
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("ssh %s: no ssh handshake within %s", t.addr, t.cfg.DialTimeout)
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("ssh %s: the host refused user %s with the key of %s (%s %s): is its public key in the user's ~/.ssh/authorized_keys? (%w)",
				t.addr, t.cfg.User, t.cfg.IdentityFile, t.auth.PublicKey().Type(), ssh.FingerprintSHA256(t.auth.PublicKey()), err)
		}
		return nil, fmt.Errorf("ssh %s: %w", t.addr, err)
	}
	raw.SetDeadline(time.Time{})
	t.log.Info("ssh connected", zap.String("host_key_type", hostKey.Type()),
		zap.String("host_key_fingerprint", ssh.FingerprintSHA256(hostKey)))
	return ssh.NewClient(sc, chans, reqs), nil
}

// drop forgets c if it is the current connection, recording why, and
// closes it.
func (t *Tunnel) drop(c *client, why error) {
	t.mu.Lock()
	current := t.client == c
	if current {
		t.client = nil
		t.lastErr = why
	}
	closed := t.closed
	t.mu.Unlock()
	c.Close()
	if current && !closed {
		t.log.Warn("ssh connection ended", zap.Error(why))
	}
}

// wait notices the end of c's connection.
func (t *Tunnel) wait(c *client) {
	defer t.wg.Done()
	err := c.Wait()
	close(c.gone)
	if err == nil {
		err = io.EOF
	}
	t.drop(c, fmt.Errorf("ssh %s: connection lost: %w", t.addr, err))
}

// keepAlive sends a keepalive request every KeepAlive, one at a time, and
// closes c when a request has gone unanswered for two intervals or could
// not be sent.
func (t *Tunnel) keepAlive(c *client) {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.KeepAlive)
	defer tick.Stop()
	var reply chan error // of the request in flight; nil when none
	missed := 0
	for {
		select {
		case <-c.gone:
			return
		case err := <-reply:
			reply, missed = nil, 0
			if err != nil {
				t.drop(c, fmt.Errorf("ssh %s: keepalive failed: %w", t.addr, err))
				return
			}
		case <-tick.C:
			if reply != nil {
				if missed++; missed >= 2 {
					t.drop(c, fmt.Errorf("ssh %s: no answer to keepalive within %s: connection closed", t.addr, 2*t.cfg.KeepAlive))
					return
				}
				continue
			}
			reply = make(chan error, 1)
			t.wg.Add(1)
			go func(reply chan<- error) {
				defer t.wg.Done()
				// The server's answer, success or failure, shows it is alive.
				_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
				reply <- err
			}(reply)
		}
	}
}

// serve accepts local connections until Close.
func (t *Tunnel) serve() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		conn, err := t.ln.AcceptUnix()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("ssh tunnel: accept failed", zap.Error(err), zap.Duration("retry_in", delay))
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if !t.track(conn) {
			conn.Close()
			return
		}
		t.wg.Add(1)
		go t.forward(conn)
	}
}

// track records conn so that Close closes it; false once closed.
func (t *Tunnel) track(conn net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[conn] = struct{}{}
	return true
}

func (t *Tunnel) untrackClose(conn net.Conn) {
	t.mu.Lock()
	delete(t.conns, conn) // no-op on the nil map after Close
	t.mu.Unlock()
	conn.Close()
}

// forward connects local to the remote socket, or closes it.
func (t *Tunnel) forward(local *net.UnixConn) {
	defer t.wg.Done()
	defer t.untrackClose(local)
	c, err := t.get(t.ctx)
	if err != nil {
		t.log.Debug("ssh tunnel: local connection closed: no ssh connection", zap.Error(err))
		return
	}
	remote, err := t.openChannel(c)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			t.log.Warn("ssh tunnel: cannot reach the remote socket", zap.String("remote_socket", t.cfg.RemoteSocket), zap.Error(err))
		}
		return
	}
	if !t.track(remote) {
		remote.Close()
		return
	}
	defer t.untrackClose(remote)
	pipe(local, remote)
}

// openChannel opens a channel to the remote socket within DialTimeout. A
// channel that opens later is closed.
func (t *Tunnel) openChannel(c *client) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	res := make(chan result, 1)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		conn, err := c.Dial("unix", t.cfg.RemoteSocket)
		res <- result{conn, err}
	}()
	timer := time.NewTimer(t.cfg.DialTimeout)
	defer timer.Stop()
	var err error
	select {
	case r := <-res:
		if r.err != nil {
			var oe *ssh.OpenChannelError
			if errors.As(r.err, &oe) {
				return nil, fmt.Errorf("ssh %s: the host refused to connect to %s (is the podman socket there, and can user %s open it?): %w",
					t.addr, t.cfg.RemoteSocket, t.cfg.User, r.err)
			}
			return nil, fmt.Errorf("ssh %s: opening %s: %w", t.addr, t.cfg.RemoteSocket, r.err)
		}
		return r.conn, nil
	case <-timer.C:
		err = fmt.Errorf("ssh %s: no channel to %s within %s", t.addr, t.cfg.RemoteSocket, t.cfg.DialTimeout)
	case <-t.ctx.Done():
		err = ErrClosed
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		// Ends at the latest when the connection closes (Close, keepalive).
		if r := <-res; r.conn != nil {
			r.conn.Close()
		}
	}()
	return nil, err
}

type closeWriter interface{ CloseWrite() error }

// pipe copies both ways between a and b. A side that ends with EOF
// half-closes the other (CloseWrite); an error either way closes both.
// It returns when both directions have ended; the caller closes a and b.
func pipe(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(b, a)
	}()
	copyHalf(a, b)
	<-done
}

func copyHalf(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return
		}
	}
	// An error, or no half-close: end both directions.
	dst.Close()
	src.Close()
}
