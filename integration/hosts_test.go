package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Extra Podman hosts for the multi-host tests. scripts/psh.sh (run by
// scripts/setup.sh --tests as `psh.sh up 2 3`) makes each one on this
// machine: a network namespace pshN reached from the root namespace at
// 10.250.N.2, its own storage, its API on a unix socket and on
// tcp://10.250.N.2:8080, and an sshd on 10.250.N.2:22. Its state is under
// $PSH_BASE (default /tmp/podswitch-psh).

// pshScript is scripts/psh.sh, from the package's folder (go test runs
// there).
const pshScript = "../scripts/psh.sh"

// pshBase is where scripts/psh.sh keeps the hosts' state.
func pshBase() string {
	if b := os.Getenv("PSH_BASE"); b != "" {
		return b
	}
	return "/tmp/podswitch-psh"
}

// pshHost is one extra Podman host, as extraHost found it up.
type pshHost struct {
	N int
	// IP is the host's address, reachable from the root namespace (the
	// tests' and Caddy's): publish ports on it (-p IP::PORT).
	IP string
	// Socket is the path of its API's unix socket.
	Socket string
	// TCP is its API's tcp:// URL.
	TCP string
	// SSH is its API's ssh:// URL (root, port 22, the unix socket's path).
	SSH string
	// Key is the private key that logs in as root over SSH.
	Key string
	// KnownHosts is a known_hosts file with the host's key.
	KnownHosts string
}

// extraHost returns host n, and fails the test when it does not answer
// on its unix socket within 2 s.
func extraHost(t testing.TB, n int) pshHost {
	t.Helper()
	base := pshBase()
	ip := fmt.Sprintf("10.250.%d.2", n)
	h := pshHost{
		N:          n,
		IP:         ip,
		Socket:     fmt.Sprintf("%s/h%d/podman.sock", base, n),
		TCP:        "tcp://" + ip + ":8080",
		Key:        base + "/ssh/id_ed25519",
		KnownHosts: base + "/home/.ssh/known_hosts",
	}
	h.SSH = "ssh://root@" + ip + ":22" + h.Socket
	if err := pingUnix(h.Socket, 2*time.Second); err != nil {
		t.Fatalf("extra Podman host %d is not up: no answer on %s: %v (run `bash scripts/setup.sh --tests`, or `bash scripts/psh.sh up %d` as root)", n, h.Socket, err, n)
	}
	return h
}

// pingUnix asks the Podman service on a unix socket for /_ping.
func pingUnix(socket string, timeout time.Duration) error {
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://d/_ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping answered %s", resp.Status)
	}
	return nil
}

// run runs the podman command line against the host's unix socket and
// returns its output; it fails the test on error.
func (h pshHost) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := h.podman(args...)
	if err != nil {
		t.Fatalf("host %d: podman %v: %v\n%s", h.N, args, err, out)
	}
	return string(out)
}

func (h pshHost) podman(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append([]string{"--remote", "--url", "unix://" + h.Socket}, args...)
	return exec.CommandContext(ctx, "podman", args...).CombinedOutput()
}

// psh runs scripts/psh.sh CMD N.
func (h pshHost) psh(cmd string) error {
	c := exec.Command("bash", pshScript, cmd, fmt.Sprint(h.N))
	c.Env = append(os.Environ(), "PSH_BASE="+pshBase())
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("psh.sh %s %d: %v\n%s", cmd, h.N, err, out)
	}
	return nil
}

// linkDown cuts the host's network (its veth, from the root namespace):
// a dial to h.IP then times out. The link comes up again when the test
// ends.
func (h pshHost) linkDown(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if err := h.psh("link-up"); err != nil {
			t.Error(err)
		}
	})
	if err := h.psh("link-down"); err != nil {
		t.Fatal(err)
	}
}

// linkUp restores the host's network.
func (h pshHost) linkUp(t *testing.T) {
	t.Helper()
	if err := h.psh("link-up"); err != nil {
		t.Fatal(err)
	}
}

// stopService stops the host's API services (unix and tcp); its
// containers keep running. They start again when the test ends.
func (h pshHost) stopService(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if err := h.psh("svc-start"); err != nil {
			t.Error(err)
		}
	})
	if err := h.psh("svc-stop"); err != nil {
		t.Fatal(err)
	}
}

// startService starts the host's API services and waits until they
// answer.
func (h pshHost) startService(t *testing.T) {
	t.Helper()
	if err := h.psh("svc-start"); err != nil {
		t.Fatal(err)
	}
}

// removeApps removes the containers of the given apps on the host.
func (h pshHost) removeApps(t *testing.T, apps ...string) {
	t.Helper()
	for _, app := range apps {
		ids := strings.Fields(h.run(t, "ps", "-aq", "--filter", "label=podswitch.app="+app))
		if len(ids) > 0 {
			h.run(t, append([]string{"rm", "-f", "-t", "0"}, ids...)...)
		}
	}
}

// TestExtraHosts checks what the multi-host tests take for granted: hosts
// 2 and 3 are up, their tcp API answers, they have both test images, and
// a container published on the host's address answers from here.
func TestExtraHosts(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("host%d", n), func(t *testing.T) {
			h := extraHost(t, n)
			// tryGet (ops_test.go) has a 2 s timeout and answers code 0 and the error on failure.
			if code, body := tryGet("http" + strings.TrimPrefix(h.TCP, "tcp") + "/_ping"); code != http.StatusOK {
				t.Fatalf("%s/_ping: %d %q", h.TCP, code, body)
			}
			for _, img := range []string{imageV1, imageV2} {
				h.run(t, "image", "exists", img)
			}

			name := uniqueName("psh-check")
			id := strings.TrimSpace(h.run(t, "run", "-d", "--name", name, "--label", "podswitch.app="+name,
				"-p", h.IP+"::5000", "-e", "PORT=5000", imageV1))
			t.Cleanup(func() { _, _ = h.podman("rm", "-f", "-t", "0", id) })
			addr := strings.TrimSpace(h.run(t, "port", id, "5000/tcp"))
			if host, _, err := net.SplitHostPort(addr); err != nil || host != h.IP {
				t.Fatalf("podman port: %q, want %s:PORT", addr, h.IP)
			}

			deadline := time.Now().Add(10 * time.Second)
			code, body := tryGet("http://" + addr + "/")
			for code != http.StatusOK {
				if time.Now().After(deadline) {
					t.Fatalf("GET http://%s/: %d %s", addr, code, body)
				}
				time.Sleep(100 * time.Millisecond)
				code, body = tryGet("http://" + addr + "/")
			}
			if !strings.HasPrefix(body, "version=v1 ") {
				t.Fatalf("GET http://%s/: %q, want version=v1", addr, body)
			}

			h.run(t, "rm", "-f", "-t", "0", id)
			if left := strings.TrimSpace(h.run(t, "ps", "-aq", "--filter", "name="+name)); left != "" {
				t.Fatalf("container %s still there after rm: %s", name, left)
			}
		})
	}
}
