package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// upstreamInFlight returns the requests reverse_proxy has in flight to the
// dial address addr, all handlers and configs together: a draining
// container waits for its own requests, and only those. Caddy counts them
// per address and shows them on its admin API (GET
// /reverse_proxy/upstreams); podswitch reads that route in-process, off the
// request path, at most every inFlightTTL.
func upstreamInFlight(addr string) int {
	counts := inFlightCache.get()
	return counts[addr]
}

// inFlightTTL is how long one reading of the counts serves.
const inFlightTTL = 20 * time.Millisecond

var inFlightCache = &inFlightReader{}

type inFlightReader struct {
	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

func (r *inFlightReader) get() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.at) < inFlightTTL && r.counts != nil {
		return r.counts
	}
	r.counts = readUpstreamCounts()
	r.at = time.Now()
	return r.counts
}

// readUpstreamCounts asks reverse_proxy's admin route for its upstreams and
// returns the requests in flight per address (an address may be listed
// more than once: as a static, an in-flight and a dynamic upstream; the
// largest count holds).
func readUpstreamCounts() map[string]int {
	counts := map[string]int{}
	info, err := caddy.GetModule("admin.api.reverse_proxy")
	if err != nil {
		return counts
	}
	router, ok := info.New().(caddy.AdminRouter)
	if !ok {
		return counts
	}
	for _, route := range router.Routes() {
		if route.Pattern != "/reverse_proxy/upstreams" {
			continue
		}
		w := &bufferWriter{header: http.Header{}}
		req, _ := http.NewRequest(http.MethodGet, route.Pattern, nil)
		if err := route.Handler.ServeHTTP(w, req); err != nil {
			return counts
		}
		var list []struct {
			Address     string `json:"address"`
			NumRequests int    `json:"num_requests"`
		}
		if json.Unmarshal(w.buf.Bytes(), &list) != nil {
			return counts
		}
		for _, u := range list {
			counts[u.Address] = max(counts[u.Address], u.NumRequests)
		}
	}
	return counts
}

// bufferWriter is the http.ResponseWriter of an in-process admin call.
type bufferWriter struct {
	header http.Header
	buf    bytes.Buffer
}

func (w *bufferWriter) Header() http.Header         { return w.header }
func (w *bufferWriter) Write(b []byte) (int, error) { return w.buf.Write(b) }
func (w *bufferWriter) WriteHeader(int)             {}
