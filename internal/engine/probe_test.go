package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHTTPProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "podswitch-readiness" || r.Host == "" || !r.Close {
			http.Error(w, "bad request line or headers", http.StatusTeapot)
			return
		}
		switch r.URL.Path {
		case "/up":
			w.WriteHeader(http.StatusNoContent)
		case "/down":
			http.Error(w, "database down", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for path, want := range map[string]int{"/up": 204, "/down": 503, "/moved": 302, "/big": 200, "/up?x=1": 204, "/nope": 404} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, err := httpProbe(ctx, addr, path)
		cancel()
		if err != nil || code != want {
			t.Errorf("GET %s: %d %v, want %d", path, code, err, want)
		}
	}
	for _, bad := range []string{"", "up", "/a b", "/a\r\nX: y"} {
		if _, err := httpProbe(context.Background(), addr, bad); err == nil {
			t.Errorf("path %q: no error", bad)
		}
	}
}

// A listener that answers with raw bytes, or never.
func rawServer(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answer(c)
		}
	}()
	return ln.Addr().String()
}

func TestHTTPProbeFailures(t *testing.T) {
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	for _, tc := range []struct {
		name    string
		answer  func(net.Conn)
		timeout bool
	}{
		{"closes at once", func(c net.Conn) { c.Close() }, false},
		{"answers garbage", func(c net.Conn) { _, _ = io.WriteString(c, "SSH-2.0-OpenSSH\r\n"); c.Close() }, false},
		{"bad status", func(c net.Conn) { _, _ = io.WriteString(c, "HTTP/1.1 2x0 OK\r\n\r\n"); c.Close() }, false},
		{"never answers", func(c net.Conn) { <-hung; c.Close() }, true},
		{"half a status line, then silence", func(c net.Conn) { _, _ = io.WriteString(c, "HTTP/1.1 2"); <-hung; c.Close() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, tc.answer)
			// A short deadline where the deadline is what ends it, a long
			// one where the answer must end it by itself.
			limit := 10 * time.Second
			if tc.timeout {
				limit = 300 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			code, err := httpProbe(ctx, addr, "/up")
			if err == nil {
				t.Fatalf("answered %d, want an error", code)
			}
			if tc.timeout && ctx.Err() == nil {
				t.Errorf("error %v before the deadline, want the deadline to end it", err)
			}
			if !tc.timeout && ctx.Err() != nil {
				t.Errorf("error %v only at the deadline, want it at once", err)
			}
		})
	}

	// A cancelled context (no deadline reached) ends a probe that waits.
	addr := rawServer(t, func(c net.Conn) { <-hung; c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := httpProbe(ctx, addr, "/up"); errc <- err }()
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled probe answered")
	}

	// HTTP/1.0 answers count.
	addr = rawServer(t, func(c net.Conn) { _, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nok"); c.Close() })
	if code, err := httpProbe(context.Background(), addr, "/up"); err != nil || code != 200 {
		t.Errorf("HTTP/1.0 answer: %d %v", code, err)
	}
	var ne net.Error
	if _, err := httpProbe(context.Background(), "127.0.0.1:1", "/up"); err == nil || !errors.As(err, &ne) && !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v", err)
	}
}

// netHTTPProbe is the check as net/http's client makes it: the baseline
// of BenchmarkHTTPProbe.
func netHTTPProbe(ctx context.Context, addr, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "podswitch-readiness")
	resp, err := benchClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

var benchClient = &http.Client{
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// BenchmarkHTTPProbe compares one health check made by httpProbe with the
// same check made with net/http's client (the baseline, measured in the
// same run). The server runs in the test process, so ns/op counts both
// sides; allocs/op counts the server's too (the same for both).
//
//	go test -tags "$TAGS" -run '^$' -bench HTTPProbe -benchmem -count 5 ./internal/engine/
func BenchmarkHTTPProbe(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, p := range []struct {
		name  string
		probe func(context.Context, string, string) (int, error)
	}{{"net-http", netHTTPProbe}, {"podswitch", httpProbe}} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				code, err := p.probe(ctx, addr, "/up")
				cancel()
				if err != nil || code != 200 {
					b.Fatal(code, err)
				}
			}
		})
	}
}
