// Command testapp is a tiny HTTP application used as both the podswitch demo
// app and the integration test app. It is built as a static binary and runs as
// PID 1 in a FROM scratch container, so it handles SIGTERM explicitly.
//
// Behaviour is chosen by environment variables:
//
//	PORT          port to listen on (0.0.0.0:$PORT); required in web modes
//	APP_VERSION   version reported by GET / and GET /version
//	MODE          normal (default) | never-listen | crash | ignore-term |
//	              quick-exit | worker
//	LISTEN_DELAY  Go duration to sleep before listening (default 0)
//	HOOK_EXIT     exit code for the "hook" subcommand (default 0)
//	HOOK_DELAY    Go duration the "hook" subcommand runs before it exits
//	UP_STATUS     status GET /up answers (default 200), for ready_path
//	EXIT_AFTER    Go duration after which a listening web container exits
//	              with code 5 (a crash after it served)
//	TERM_DELAY    Go duration a worker (or a web container, after its
//	              graceful shutdown) waits after SIGTERM before it exits 0
//	PRINT_ENV     name of an env var whose value the app prints at start
//	              (as an app printing a connection string would)
//	ALLOC_MB      MiB the app allocates and touches at start (and keeps),
//	              to go over a memory limit
//
// Web containers answer control requests, so that a test can change them
// while they run (send them to the container's own address):
//
//	POST /control/up?status=N   GET /up answers N from now on
//	POST /control/close         closes the listener; the process lives on
//	POST /control/hang          every later request hangs (a deadlock):
//	                            the kernel still accepts connections
//	GET /control/fetch?url=U    GETs U and answers its body (or 502)
//	GET /control/write?path=P&v=V  writes V to file P
//	GET /control/read?path=P    answers the content of file P
//
// Arguments: "hook" prints "hook ran" and exits with $HOOK_EXIT; "worker"
// behaves as MODE=worker.
//
// GET /echo with "Connection: Upgrade" and "Upgrade: echo" switches the
// connection to a line echo (101 Switching Protocols): each line sent comes
// back prefixed with "<host> ", until either side closes. It stands for a
// WebSocket in the tests of upgraded connections.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("testapp: ")
	log.SetOutput(os.Stdout)

	if k := os.Getenv("PRINT_ENV"); k != "" {
		fmt.Fprintf(os.Stderr, "testapp: connecting with %s=%s\n", k, os.Getenv(k))
	}
	if v := os.Getenv("ALLOC_MB"); v != "" {
		allocate(v)
	}
	mode := os.Getenv("MODE")
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "hook":
			runHook()
			return
		case "worker":
			mode = "worker"
		}
	}
	if mode == "" {
		mode = "normal"
	}
	// CRASH_AFTER (unix seconds): containers booted after that moment exit
	// at once with code 4, so a test can make every later boot fail while
	// the running containers keep serving.
	if v := os.Getenv("CRASH_AFTER"); v != "" {
		if sec, err := strconv.ParseInt(v, 10, 64); err == nil && time.Now().Unix() >= sec {
			fmt.Fprintln(os.Stderr, "testapp: booted after CRASH_AFTER, exiting with code 4")
			os.Exit(4)
		}
	}

	switch mode {
	case "crash":
		fmt.Fprintln(os.Stderr, "testapp: MODE=crash, exiting with code 3")
		os.Exit(3)
	case "worker":
		runWorker()
		return
	case "never-listen":
		runNeverListen()
		return
	case "normal", "ignore-term", "quick-exit":
		runWeb(mode)
	default:
		fmt.Fprintf(os.Stderr, "testapp: unknown MODE %q\n", mode)
		os.Exit(2)
	}
}

func runHook() {
	if s := os.Getenv("HOOK_DELAY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp: bad HOOK_DELAY %q: %v\n", s, err)
			os.Exit(2)
		}
		fmt.Printf("hook running for %s\n", d)
		time.Sleep(d)
	}
	fmt.Println("hook ran")
	code := 0
	if s := os.Getenv("HOOK_EXIT"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp: bad HOOK_EXIT %q: %v\n", s, err)
			os.Exit(2)
		}
		code = n
	}
	os.Exit(code)
}

func termChan() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return ch
}

func runWorker() {
	sig := termChan()
	log.Printf("worker started (version=%s)", os.Getenv("APP_VERSION"))
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case s := <-sig:
			d := termDelay()
			log.Printf("worker got %v, exiting in %s", s, d)
			if d > 0 {
				time.Sleep(d)
				log.Printf("worker exiting")
			}
			os.Exit(0)
		case <-t.C:
			log.Printf("worker tick")
		}
	}
}

func runNeverListen() {
	sig := termChan()
	log.Printf("MODE=never-listen: not opening any port")
	s := <-sig
	log.Printf("got %v, exiting", s)
	os.Exit(0)
}

// termDelay is TERM_DELAY: how long the app takes to exit after SIGTERM.
func termDelay() time.Duration {
	s := os.Getenv("TERM_DELAY")
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testapp: bad TERM_DELAY %q: %v\n", s, err)
		os.Exit(2)
	}
	return d
}

func listenDelay() time.Duration {
	s := os.Getenv("LISTEN_DELAY")
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testapp: bad LISTEN_DELAY %q: %v\n", s, err)
		os.Exit(2)
	}
	return d
}

func runWeb(mode string) {
	port := os.Getenv("PORT")
	if port == "" {
		fmt.Fprintln(os.Stderr, "testapp: PORT environment variable is required")
		os.Exit(1)
	}

	var sig chan os.Signal
	if mode == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
		sig = make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT)
	} else {
		sig = termChan()
	}

	if d := listenDelay(); d > 0 {
		log.Printf("LISTEN_DELAY=%s: sleeping before listening", d)
		select {
		case <-time.After(d):
		case s := <-sig:
			log.Printf("got %v before listening, exiting", s)
			os.Exit(0)
		}
	}

	version := os.Getenv("APP_VERSION")
	host, _ := os.Hostname()

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "version=%s host=%s\n", version, host)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, version)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d := time.Second
		if s := r.URL.Query().Get("d"); s != "" {
			var err error
			if d, err = time.ParseDuration(s); err != nil {
				http.Error(w, "bad duration: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		time.Sleep(d)
		fmt.Fprint(w, "slow done")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("k")))
	})
	var upStatus atomic.Int64
	upStatus.Store(http.StatusOK)
	if s := os.Getenv("UP_STATUS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp: bad UP_STATUS %q: %v\n", s, err)
			os.Exit(2)
		}
		upStatus.Store(int64(n))
	}
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		n := int(upStatus.Load())
		w.WriteHeader(n)
		fmt.Fprintf(w, "up status %d\n", n)
	})
	mux.HandleFunc("POST /control/up", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("status"))
		if err != nil || n < 100 || n > 599 {
			http.Error(w, "want ?status=100..599", http.StatusBadRequest)
			return
		}
		upStatus.Store(int64(n))
		log.Printf("control: /up answers %d from now on", n)
		fmt.Fprintf(w, "up status %d\n", n)
	})
	hung := make(chan struct{})
	var hangOnce sync.Once
	mux.HandleFunc("POST /control/hang", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("control: every later request hangs")
		fmt.Fprintln(w, "hanging from now on")
		hangOnce.Do(func() { close(hung) })
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { serveEcho(w, r, host) })
	handleFiles(mux)

	addr := net.JoinHostPort("0.0.0.0", port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testapp: listen %s: %v\n", addr, err)
		os.Exit(1)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
			<-r.Context().Done() // a deadlock: the request never gets an answer
			return
		default:
		}
		mux.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /control/close", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("control: closing the listener, the process lives on")
		fmt.Fprintln(w, "listener closed")
		go func() {
			time.Sleep(50 * time.Millisecond) // the answer goes out first
			_ = ln.Close()
		}()
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("listening on %s (version=%s mode=%s)", addr, version, mode)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if s := os.Getenv("EXIT_AFTER"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp: bad EXIT_AFTER %q: %v\n", s, err)
			os.Exit(2)
		}
		go func() {
			time.Sleep(d)
			fmt.Fprintf(os.Stderr, "testapp: EXIT_AFTER=%s, exiting with code 5\n", d)
			os.Exit(5)
		}()
	}

	errs := errc
	for {
		select {
		case err := <-errs:
			if errors.Is(err, net.ErrClosed) {
				// The listener was closed on request: live on, serving no
				// new connection, until a signal.
				log.Printf("listener closed: no new connections")
				errs = nil
				continue
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintf(os.Stderr, "testapp: serve: %v\n", err)
				os.Exit(1)
			}
			os.Exit(0)
		case s := <-sig:
			shutdown(srv, mode, s)
		}
	}
}

// shutdown ends the web app after signal s: at once with MODE=quick-exit,
// else after the requests in flight ended, then TERM_DELAY.
func shutdown(srv *http.Server, mode string, s os.Signal) {
	if mode == "quick-exit" {
		log.Printf("got %v, MODE=quick-exit: exiting immediately", s)
		os.Exit(0)
	}
	log.Printf("got %v, shutting down gracefully", s)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
		os.Exit(1)
	}
	if d := termDelay(); d > 0 {
		log.Printf("TERM_DELAY=%s: waiting before exiting", d)
		time.Sleep(d)
	}
	log.Printf("shutdown complete")
	os.Exit(0)
}

// serveEcho switches the connection to a line echo, as the package doc
// says. The connection is hijacked, so http.Server.Shutdown does not wait
// for it: it lasts until the client closes it or the process exits.
func serveEcho(w http.ResponseWriter, r *http.Request, host string) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "echo") {
		http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if err := rw.Flush(); err != nil {
		return
	}
	log.Printf("echo connection from %s", r.RemoteAddr)
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := rw.WriteString(host + " " + line); err != nil {
			return
		}
		if err := rw.Flush(); err != nil {
			return
		}
	}
}

// held keeps what ALLOC_MB allocated.
var held [][]byte

// allocate allocates v MiB and writes to every page of it, so that it is
// resident.
func allocate(v string) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "testapp: bad ALLOC_MB %q\n", v)
		os.Exit(2)
	}
	log.Printf("allocating %d MiB", n)
	for range n {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
	}
	log.Printf("allocated %d MiB", n)
}

// handleFiles adds the control routes that reach another container and
// write and read files (a volume).
func handleFiles(mux *http.ServeMux) {
	client := &http.Client{Timeout: 5 * time.Second}
	mux.HandleFunc("GET /control/fetch", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	mux.HandleFunc("GET /control/write", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := os.WriteFile(q.Get("path"), []byte(q.Get("v")), 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "written")
	})
	mux.HandleFunc("GET /control/read", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
	})
}
