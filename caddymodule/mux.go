package caddymodule

import (
	"net/http"
	"slices"
	"strings"
)

// errMux routes requests with a standard http.ServeMux (patterns such as
// "POST /podswitch/apps/{app}/deploy", read with r.PathValue) to handlers
// that return an error, as Caddy's admin and HTTP handlers do. What the
// ServeMux would answer by itself (404 when no pattern matches, 405 with
// Allow when none has the method, a redirect to a cleaned path), in plain
// text, is never written: serve reports it, and the caller answers in its
// own shape.
type errMux struct {
	mux *http.ServeMux
}

func newErrMux() *errMux { return &errMux{mux: http.NewServeMux()} }

// handle routes pattern to h. A GET pattern answers HEAD as well.
func (m *errMux) handle(pattern string, h func(http.ResponseWriter, *http.Request) error) {
	m.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		// serve hands the mux a *muxAnswer: h answers on the request's
		// own writer, with its flushing and deadlines, and leaves its
		// error there.
		a := w.(*muxAnswer)
		a.matched = true
		a.err = h(a.w, r)
	})
}

// serve routes r. When a pattern matched, it returns matched and the
// error of its handler. Else nothing was written to w, and allow lists
// the methods the path has ("GET, HEAD"), or is empty when no pattern
// has the path: then the answer is a 405 or a 404, the caller's to give.
func (m *errMux) serve(w http.ResponseWriter, r *http.Request) (allow string, matched bool, err error) {
	a := &muxAnswer{w: w}
	m.mux.ServeHTTP(a, r)
	if a.matched {
		return "", true, a.err
	}
	if a.code == http.StatusMethodNotAllowed {
		return a.header.Get("Allow"), false, nil
	}
	return "", false, nil
}

// muxAnswer is the writer a request goes through the mux with: a matched
// handler finds the real writer in w; the mux's own answer goes to code and
// header, and its body nowhere.
type muxAnswer struct {
	w       http.ResponseWriter
	matched bool
	err     error
	code    int
	header  http.Header
}

func (a *muxAnswer) Header() http.Header {
	if a.header == nil {
		a.header = http.Header{}
	}
	return a.header
}

func (a *muxAnswer) WriteHeader(code int) {
	if a.code == 0 {
		a.code = code
	}
}

func (a *muxAnswer) Write(b []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	return len(b), nil
}

// useMethods words an Allow list for a message: "GET, HEAD" is "GET",
// HEAD going with GET.
func useMethods(allow string) string {
	methods := strings.Split(allow, ", ")
	if slices.Contains(methods, http.MethodGet) {
		methods = slices.DeleteFunc(methods, func(m string) bool { return m == http.MethodHead })
	}
	return strings.Join(methods, " or ")
}

// Interface guards
var _ http.ResponseWriter = (*muxAnswer)(nil)
