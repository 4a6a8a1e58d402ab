package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// hostsCaddyfile returns a podswitch option with host blocks a (ssh) and b
// (tcp, insecure) and an app blog, each host's lines given; the first
// line of host a's block is on line 4.
func hostsCaddyfile(a, b []string, app ...string) string {
	return "{\n\tpodswitch {\n\t\thost a {\n\t\t\t" + strings.Join(a, "\n\t\t\t") + "\n\t\t}\n" +
		"\t\thost b {\n\t\t\t" + strings.Join(b, "\n\t\t\t") + "\n\t\t}\n" +
		"\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t\t" + strings.Join(app, "\n\t\t\t") + "\n\t\t}\n\t}\n}\n"
}

func TestCaddyfileHosts(t *testing.T) {
	a := []string{"podman ssh://podswitch@10.0.0.11:22/run/podman/podman.sock", "identity /etc/caddy/id", "known_hosts /etc/caddy/known_hosts", "address 10.0.0.11"}
	b := []string{"podman tcp://10.0.0.12:8080", "insecure", "address 10.0.0.12"}
	out := mustAdapt(t, []byte(hostsCaddyfile(a, b, "web 4", "hosts a b")), false)
	var cfg struct {
		Apps struct {
			Podswitch App `json:"podswitch"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	p := cfg.Apps.Podswitch
	if h := p.Hosts["a"]; h == nil || h.Podman != "ssh://podswitch@10.0.0.11:22/run/podman/podman.sock" || h.Identity != "/etc/caddy/id" || h.KnownHosts != "/etc/caddy/known_hosts" || h.Address != "10.0.0.11" {
		t.Errorf("host a = %+v", h)
	}
	if h := p.Hosts["b"]; h == nil || !h.Insecure || h.Address != "10.0.0.12" {
		t.Errorf("host b = %+v", h)
	}
	if got := p.Apps["blog"].Hosts; len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("blog hosts = %v", got)
	}
	spec, err := p.Apps["blog"].spec("blog", false)
	if err != nil || len(spec.Hosts) != 2 {
		t.Errorf("spec hosts = %v, %v", spec.Hosts, err)
	}
}

func TestCaddyfileHostsErrors(t *testing.T) {
	sshOK := []string{"podman ssh://podswitch@10.0.0.11/run/podman/podman.sock", "identity /k", "known_hosts /kh", "address 10.0.0.11"}
	tcpOK := []string{"podman tcp://10.0.0.12:8080", "insecure", "address 10.0.0.12"}
	tests := []struct {
		name      string
		caddyfile string
		want      string
		line      int
	}{
		{"ssh without known_hosts", hostsCaddyfile([]string{"podman ssh://podswitch@10.0.0.11/run/podman/podman.sock", "identity /k", "address 10.0.0.11"}, tcpOK),
			`host "a": an ssh:// podman needs known_hosts`, 3},
		{"ssh without identity", hostsCaddyfile([]string{"podman ssh://podswitch@10.0.0.11/run/podman/podman.sock", "known_hosts /kh", "address 10.0.0.11"}, tcpOK),
			`host "a": an ssh:// podman needs identity`, 3},
		{"ssh without user", hostsCaddyfile([]string{"podman ssh://10.0.0.11/run/podman/podman.sock", "identity /k", "known_hosts /kh", "address 10.0.0.11"}, tcpOK),
			`want a user`, 3},
		{"remote without address", hostsCaddyfile(sshOK, []string{"podman tcp://10.0.0.12:8080", "insecure"}),
			`host "b": address is required`, 9},
		{"plain tcp", hostsCaddyfile(sshOK, []string{"podman tcp://10.0.0.12:8080", "address 10.0.0.12"}),
			`host "b": a tcp:// podman without TLS is an unauthenticated root API`, 9},
		{"address not an IP", hostsCaddyfile(sshOK, []string{"podman tcp://10.0.0.12:8080", "insecure", "address example.com"}),
			`address "example.com": want an IP address`, 9},
		{"tls cert without key", hostsCaddyfile(sshOK, []string{"podman tcp://10.0.0.12:8080", "tls_cert /c", "address 10.0.0.12"}),
			`tls_cert and tls_key go together`, 9},
		{"unknown host subdirective", hostsCaddyfile(append(sshOK, "port 22"), tcpOK),
			`host "a": unknown subdirective "port"`, 8},
		{"app on an unknown host", hostsCaddyfile(sshOK, tcpOK, "hosts a c"),
			`app "blog": host "c" is not defined (hosts: a, b)`, 16},
		{"host without podman", hostsCaddyfile([]string{"address 10.0.0.11"}, tcpOK),
			`host "a": podman is required`, 3},
		{"podman and hosts", strings.Replace(hostsCaddyfile(sshOK, tcpOK), "podswitch {\n", "podswitch {\n\t\tpodman unix:///x.sock\n", 1),
			`podman and host blocks exclude each other`, 3},
		{"short host_down_after", strings.Replace(hostsCaddyfile(sshOK, tcpOK), "podswitch {\n", "podswitch {\n\t\thost_down_after 1s\n", 1),
			`host_down_after: "1s" is too short`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := adaptCaddyfile(t, []byte(tt.caddyfile))
			if err == nil {
				t.Fatalf("adapted without error:\n%s", tt.caddyfile)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
			if at := fmt.Sprintf("Caddyfile:%d", tt.line); !strings.Contains(err.Error(), at) {
				t.Errorf("error = %v, want it at %s", err, at)
			}
		})
	}
}

func TestHostsJSONErrors(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		app  App
		want string
	}{
		{"app hosts without host blocks", App{Apps: map[string]*AppConfig{"blog": {Image: "localhost/blog:v1", Hosts: []string{"a"}}}},
			`app "blog": hosts [a]: the config has no host block`},
		{"host_down_after without hosts", App{HostDownAfter: 5_000_000_000},
			`host_down_after: the config has no host block`},
		{"bad host name", App{Hosts: map[string]*HostConfig{"A_1": {Podman: "unix:///x.sock"}}},
			`host "A_1": a name is lowercase`},
		{"unix with identity", App{Hosts: map[string]*HostConfig{"a": {Podman: "unix:///x.sock", Identity: "/k"}}},
			`not for a unix:// podman`},
		{"ssh with password", App{Hosts: map[string]*HostConfig{"a": {Podman: "ssh://u:pw@10.0.0.1/run/podman/podman.sock", Identity: key, KnownHosts: key, Address: "10.0.0.1"}}},
			`a password in the address is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.app.checkHosts()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("checkHosts = %v, want %q", err, tt.want)
			}
		})
	}
	// A key file that is not a key refuses the config when it is opened.
	a := App{Hosts: map[string]*HostConfig{"a": {Podman: "ssh://u@10.0.0.1/run/podman/podman.sock", Identity: key, KnownHosts: key, Address: "10.0.0.1"}}}
	if err := a.checkHosts(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.hostConfigs(zap.NewNop()); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("hostConfigs with a bad key = %v, want an error naming %s", err, key)
	}
	// A unix host publishes on loopback by default.
	u := &HostConfig{Podman: "unix:///x.sock"}
	if err := checkHost("a", u); err != nil || u.address() != "127.0.0.1" {
		t.Errorf("unix host: %v, address %q", err, u.address())
	}
}
