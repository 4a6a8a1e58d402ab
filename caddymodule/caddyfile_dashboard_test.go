package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// The directive adapts to the handler, after basic_auth, at a site root
// and under handle_path; it takes no argument.
func TestDashboardCaddyfile(t *testing.T) {
	const global = "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t}\n\t}\n}\n"
	adapt := func(site string) (string, error) {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+site), nil)
		return string(out), err
	}
	for _, site := range []string{
		// podswitch_dashboard first: the order puts basic_auth in front anyway.
		"ops.example.com {\n\tpodswitch_dashboard\n\tbasic_auth {\n\t\tadmin $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t}\n}\n",
		"example.com {\n\thandle_path /podswitch/* {\n\t\tpodswitch_dashboard\n\t\tbasic_auth {\n\t\t\tadmin $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG\n\t\t}\n\t}\n\thandle {\n\t\tpodswitch blog\n\t}\n}\n",
	} {
		out, err := adapt(site)
		if err != nil {
			t.Fatalf("adapt %q: %v", site, err)
		}
		auth, dash := strings.Index(out, `"handler":"authentication"`), strings.Index(out, `"handler":"podswitch_dashboard"`)
		if auth < 0 || dash < 0 || auth > dash {
			t.Errorf("adapted %q: want authentication before podswitch_dashboard:\n%s", site, out)
		}
	}
	for _, bad := range []string{"podswitch_dashboard extra", "podswitch_dashboard {\n\t\ttitle x\n\t}"} {
		if _, err := adapt(":80 {\n\t" + bad + "\n}\n"); err == nil || !strings.Contains(err.Error(), "podswitch_dashboard") {
			t.Errorf("%q: %v, want an error", bad, err)
		}
	}
	if _, err := caddy.GetModule("http.handlers.podswitch_dashboard"); err != nil {
		t.Error(err)
	}
}
