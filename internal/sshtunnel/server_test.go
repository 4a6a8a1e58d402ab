package sshtunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshServer is an in-process SSH server: it lets in one client key,
// forwards direct-streamlocal@openssh.com channels to local unix sockets
// and answers keepalive requests, unless frozen.
type sshServer struct {
	t    *testing.T
	ln   net.Listener
	conf *ssh.ServerConfig

	// frozen: keepalive requests get no answer.
	frozen atomic.Bool
	// holding: channel opens wait for release before any answer.
	holding atomic.Bool
	release chan struct{}
	quit    chan struct{}

	accepted      atomic.Int32 // ssh connections established
	ended         atomic.Int32 // ssh connections ended
	held          atomic.Int32 // channel opens held
	channelsEnded atomic.Int32 // forwarded channels ended

	mu    sync.Mutex
	raws  map[net.Conn]struct{}
	wg    sync.WaitGroup
	close sync.Once
}

func newSigner(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func newECDSASigner(t *testing.T) ssh.Signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSSHServer(t *testing.T, clientKey ssh.PublicKey, hostKeys ...ssh.Signer) *sshServer {
	t.Helper()
	conf := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown client key")
		},
	}
	for _, k := range hostKeys {
		conf.AddHostKey(k)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{t: t, ln: ln, conf: conf, release: make(chan struct{}), quit: make(chan struct{}), raws: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

func (s *sshServer) Addr() string { return s.ln.Addr().String() }

func (s *sshServer) Close() {
	s.close.Do(func() {
		close(s.quit)
		s.ln.Close()
		s.dropAll()
		s.wg.Wait()
	})
}

// dropAll closes every connection, as a crash of the server would.
func (s *sshServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.raws {
		c.Close()
	}
}

func (s *sshServer) releaseHeld() { close(s.release) }

func (s *sshServer) serve() {
	defer s.wg.Done()
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.raws[raw] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(raw)
	}
}

func (s *sshServer) handle(raw net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.raws, raw)
		s.mu.Unlock()
		raw.Close()
	}()
	sc, chans, reqs, err := ssh.NewServerConn(raw, s.conf)
	if err != nil {
		return
	}
	s.accepted.Add(1)
	defer s.ended.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for r := range reqs {
			switch {
			case r.Type != "keepalive@openssh.com":
				r.Reply(false, nil)
			case !s.frozen.Load():
				r.Reply(true, nil)
			}
		}
	}()
	for nc := range chans {
		s.wg.Add(1)
		go s.channel(nc)
	}
	sc.Close()
}

func (s *sshServer) channel(nc ssh.NewChannel) {
	defer s.wg.Done()
	if nc.ChannelType() != "direct-streamlocal@openssh.com" {
		nc.Reject(ssh.UnknownChannelType, "only direct-streamlocal")
		return
	}
	var p struct {
		SocketPath string
		Reserved0  string
		Reserved1  uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		nc.Reject(ssh.ConnectionFailed, "bad payload")
		return
	}
	if s.holding.Load() {
		s.held.Add(1)
		select {
		case <-s.release:
		case <-s.quit:
		}
	}
	conn, err := net.Dial("unix", p.SocketPath)
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	defer conn.Close()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer s.channelsEnded.Add(1)
	defer ch.Close()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(conn, ch)
		conn.(*net.UnixConn).CloseWrite()
	}()
	io.Copy(ch, conn)
	ch.CloseWrite()
	<-done
}

// silentServer accepts TCP connections and never says a word.
func silentServer(t *testing.T) (addr string, accepted *atomic.Int32, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			accepted.Add(1)
		}
	}()
	stop = onClose(t, func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted, stop
}

// httpBackend serves HTTP on a unix socket: the Podman service's stand-in.
func httpBackend(t *testing.T, dir string) (path string, stop func()) {
	t.Helper()
	path = filepath.Join(dir, "podman.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "podman says hello to "+r.URL.Path)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return path, onClose(t, func() {
		srv.Close()
		<-done
	})
}

// echoBackend echoes what it reads on a unix socket until EOF, then closes.
func echoBackend(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "echo.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return path
}

// onClose returns f run once, and runs it at the end of the test if not
// called before.
func onClose(t *testing.T, f func()) func() {
	var once sync.Once
	g := func() { once.Do(f) }
	t.Cleanup(g)
	return g
}

// writeFile writes data to a new file of dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
