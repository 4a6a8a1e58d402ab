package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin serves the podswitch API under /podswitch/ on Caddy's admin
// endpoint, with whatever origin and access rules that endpoint has.
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.podswitch",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes returns the admin routes.
func (a Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/podswitch/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a Admin) serve(w http.ResponseWriter, r *http.Request) error {
	m := currentManager()
	if m == nil {
		return apiErr(http.StatusNotFound, "podswitch is not configured")
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/podswitch/"), "/"), "/")
	if len(parts) == 0 || parts[0] != "apps" {
		return apiErr(http.StatusNotFound, "no such podswitch endpoint: %s", r.URL.Path)
	}
	if len(parts) == 1 {
		if r.Method != http.MethodGet {
			return apiErr(http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
		}
		out := []engine.AppStatus{}
		for _, name := range m.Apps() {
			if s := m.App(name); s != nil {
				out = append(out, s.Status())
			}
		}
		return writeJSON(w, http.StatusOK, out)
	}
	s := m.App(parts[1])
	if s == nil {
		return apiErr(http.StatusNotFound, "unknown app %q", parts[1])
	}
	switch {
	case len(parts) == 2:
		if r.Method != http.MethodGet {
			return apiErr(http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
		}
		return writeJSON(w, http.StatusOK, s.Status())
	case len(parts) == 3 && parts[2] == "deployments":
		if r.Method != http.MethodGet {
			return apiErr(http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
		}
		return writeJSON(w, http.StatusOK, s.Status().Deployments)
	}
	return apiErr(http.StatusNotFound, "no such podswitch endpoint: %s", r.URL.Path)
}

func apiErr(code int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return caddy.APIError{HTTPStatus: code, Err: fmt.Errorf("%s", msg), Message: msg}
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = Admin{}
