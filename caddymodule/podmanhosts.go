package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/podman"
	"github.com/podswitch/podswitch/internal/sshtunnel"
)

// HostConfig is one Podman host of several (`host <name> { ... }`). Each
// process type of an app is spread over the app's hosts; web containers
// publish their PORT on the host's address, where Caddy dials them.
type HostConfig struct {
	// Podman is the host's Podman API service:
	// `ssh://user@host[:port]/run/podman/podman.sock` (the connection is
	// podswitch's own: the host key is checked against known_hosts, never
	// added), `tcp://host:port` (with the tls_* files, or `insecure`:
	// plain tcp:// is an unauthenticated root API) or `unix:///path` (a
	// service on this machine). Required.
	Podman string `json:"podman,omitempty"`

	// Identity is the private key of the SSH user (an unencrypted key
	// file). Required with ssh://.
	Identity string `json:"identity,omitempty"`

	// KnownHosts is the OpenSSH known_hosts file that holds the host's
	// key. Required with ssh://. A key not in it is refused, with its
	// fingerprint: check it, then add it yourself.
	KnownHosts string `json:"known_hosts,omitempty"`

	// Address is the IP address the host publishes web containers' ports
	// on, and where Caddy dials them. Required, but for a unix:// host,
	// where it defaults to 127.0.0.1.
	Address string `json:"address,omitempty"`

	// Insecure allows a tcp:// service without TLS.
	Insecure bool `json:"insecure,omitempty"`

	// TLSCert, TLSKey and TLSCA are the client certificate, its key and
	// the CA of a tcp:// service that speaks TLS (Podman 5.7 and later).
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  string `json:"tls_key,omitempty"`
	TLSCA   string `json:"tls_ca,omitempty"`
}

// minHostDownAfter bounds host_down_after from below: a host is judged on
// checks made every half second and pings every 2 s.
const minHostDownAfter = 2 * time.Second

// checkHost refuses an incomplete or unsafe host.
func checkHost(name string, h *HostConfig) error {
	if !engine.ValidName(name) {
		return fmt.Errorf("host %q: a name is lowercase letters, digits and dashes (at most 42)", name)
	}
	if h == nil || h.Podman == "" {
		return fmt.Errorf("host %q: podman is required: the address of the host's Podman service, e.g. podman ssh://podswitch@10.0.0.11/run/podman/podman.sock", name)
	}
	if err := checkPodmanURI(h.Podman); err != nil {
		return fmt.Errorf("host %q: %w", name, err)
	}
	u, _ := url.Parse(h.Podman)
	tls := h.TLSCert != "" || h.TLSKey != "" || h.TLSCA != ""
	switch u.Scheme {
	case "ssh":
		if h.KnownHosts == "" {
			return fmt.Errorf("host %q: an ssh:// podman needs known_hosts: the file that holds the host's SSH key (podswitch never adds a key)", name)
		}
		if h.Identity == "" {
			return fmt.Errorf("host %q: an ssh:// podman needs identity: the SSH user's private key file", name)
		}
		if u.User == nil || u.User.Username() == "" {
			return fmt.Errorf("host %q: podman %q: want a user: ssh://user@host/run/podman/podman.sock", name, podman.Redact(h.Podman))
		}
		if _, ok := u.User.Password(); ok {
			return fmt.Errorf("host %q: podman: a password in the address is not supported; use identity", name)
		}
		if u.Path == "" || u.Path == "/" {
			return fmt.Errorf("host %q: podman %q: want the path of the Podman socket on the host, e.g. ssh://podswitch@10.0.0.11/run/podman/podman.sock", name, podman.Redact(h.Podman))
		}
		if tls || h.Insecure {
			return fmt.Errorf("host %q: tls_* and insecure are for tcp:// only", name)
		}
	case "tcp":
		if !tls && !h.Insecure {
			return fmt.Errorf("host %q: a tcp:// podman without TLS is an unauthenticated root API: give tls_cert, tls_key and tls_ca, or say insecure (only on a private network you trust)", name)
		}
		if tls && (h.TLSCert == "") != (h.TLSKey == "") {
			return fmt.Errorf("host %q: tls_cert and tls_key go together", name)
		}
		if tls && h.Insecure {
			return fmt.Errorf("host %q: insecure and tls_* exclude each other", name)
		}
		if h.Identity != "" || h.KnownHosts != "" {
			return fmt.Errorf("host %q: identity and known_hosts are for ssh:// only", name)
		}
	case "unix":
		if tls || h.Insecure || h.Identity != "" || h.KnownHosts != "" {
			return fmt.Errorf("host %q: identity, known_hosts, tls_* and insecure are not for a unix:// podman", name)
		}
	}
	if h.Address == "" && u.Scheme != "unix" {
		return fmt.Errorf("host %q: address is required: the IP address the host publishes container ports on, which Caddy dials", name)
	}
	if h.Address != "" && net.ParseIP(h.Address) == nil {
		return fmt.Errorf("host %q: address %q: want an IP address", name, h.Address)
	}
	return nil
}

// address returns where h publishes ports.
func (h *HostConfig) address() string {
	if h.Address != "" {
		return h.Address
	}
	return "127.0.0.1"
}

// key identifies h's connection settings: a reload that keeps it keeps
// the host's connection.
func (h *HostConfig) key() string {
	return strings.Join([]string{h.Podman, h.Identity, h.KnownHosts, h.address(), fmt.Sprint(h.Insecure), h.TLSCert, h.TLSKey, h.TLSCA}, "\x00")
}

// checkHosts refuses hosts that are incomplete, and apps that name hosts
// the config does not have.
func (a *App) checkHosts() error {
	if len(a.Hosts) == 0 {
		for _, n := range slices.Sorted(maps.Keys(a.Apps)) {
			if len(a.Apps[n].Hosts) > 0 {
				return fmt.Errorf("app %q: hosts %v: the config has no host block", n, a.Apps[n].Hosts)
			}
		}
		if a.HostDownAfter != 0 {
			return errors.New("host_down_after: the config has no host block")
		}
		return nil
	}
	if a.Podman != "" {
		return errors.New("podman and host blocks exclude each other: put the Podman address in a host block")
	}
	if d := time.Duration(a.HostDownAfter); d != 0 && d < minHostDownAfter {
		return fmt.Errorf("host_down_after %s: want at least %s", d, minHostDownAfter)
	}
	for _, n := range slices.Sorted(maps.Keys(a.Hosts)) {
		if err := checkHost(n, a.Hosts[n]); err != nil {
			return err
		}
	}
	for _, n := range slices.Sorted(maps.Keys(a.Apps)) {
		for i, h := range a.Apps[n].Hosts {
			if slices.Contains(a.Apps[n].Hosts[:i], h) {
				return fmt.Errorf("app %q: host %q is named twice in hosts", n, h)
			}
			if a.Hosts[h] == nil {
				return fmt.Errorf("app %q: host %q is not defined (hosts: %s)", n, h, strings.Join(slices.Sorted(maps.Keys(a.Hosts)), ", "))
			}
		}
	}
	return nil
}

// hostConfigs opens what the engine needs of each host: its runtime (over
// a forwarded socket of podswitch's own SSH connection for ssh://). A
// host that cannot be set up (an unreadable key or known_hosts) fails the
// config.
func (a *App) hostConfigs(log *zap.Logger) ([]engine.HostConfig, error) {
	var out []engine.HostConfig
	fail := func(err error) ([]engine.HostConfig, error) {
		for _, c := range out {
			if c.Close != nil {
				c.Close()
			}
		}
		return nil, err
	}
	for _, n := range slices.Sorted(maps.Keys(a.Hosts)) {
		h := a.Hosts[n]
		cfg := engine.HostConfig{Name: n, Address: h.address(), Key: h.key()}
		u, _ := url.Parse(h.Podman)
		switch u.Scheme {
		case "ssh":
			t, dir, err := openTunnel(n, h, u, log)
			if err != nil {
				return fail(fmt.Errorf("host %q: %w", n, err))
			}
			rt := podman.NewWithOptions(h.Podman, podman.Options{Via: t.URI()})
			cfg.Runtime, cfg.Close = rt, func() {
				_ = t.Close()
				_ = os.RemoveAll(dir)
			}
			cfg.Ping = func(ctx context.Context) error { return pingVia(ctx, t, rt) }
		default:
			rt := podman.NewWithOptions(h.Podman, podman.Options{TLSCert: h.TLSCert, TLSKey: h.TLSKey, TLSCA: h.TLSCA})
			cfg.Runtime, cfg.Ping = rt, rt.Ping
		}
		out = append(out, cfg)
	}
	return out, nil
}

// openTunnel opens the forwarded socket of an ssh:// host, in a directory
// of its own that only this process's user may enter (made with an
// unpredictable name, so that no other user can have made it first): the
// socket is the host's root API. The caller removes dir once done.
func openTunnel(name string, h *HostConfig, u *url.URL, log *zap.Logger) (t *sshtunnel.Tunnel, dir string, err error) {
	port := u.Port()
	if port == "" {
		port = "22"
	}
	dir, err = os.MkdirTemp("", "podswitch-ssh-")
	if err != nil {
		return nil, "", fmt.Errorf("a directory for the forwarded socket: %w", err)
	}
	t, err = sshtunnel.Open(sshtunnel.Config{
		Addr:           net.JoinHostPort(u.Hostname(), port),
		User:           u.User.Username(),
		IdentityFile:   h.Identity,
		KnownHostsFile: h.KnownHosts,
		RemoteSocket:   u.Path,
		LocalDir:       dir,
		Logger:         log.Named("ssh").With(zap.String("host", name)),
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", err
	}
	return t, dir, nil
}

// pingVia checks that an ssh:// host answers: its SSH connection (whose
// error says why, a refused host key for one), then its Podman service.
func pingVia(ctx context.Context, t *sshtunnel.Tunnel, rt *podman.Runtime) error {
	if err := t.Connect(ctx); err != nil {
		return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
	}
	return rt.Ping(ctx)
}
