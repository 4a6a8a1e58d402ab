package podman

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// What an unreachable service's error tells to check, for each cause.
func TestWhatToCheck(t *testing.T) {
	const sock = "/run/podman/podman.sock"
	me := ids{uid: 1001, gid: 1001, groups: []uint32{1001, 1002}}
	socket := func(uid, gid uint32, mode fs.FileMode) func(string) socketInfo {
		return func(string) socketInfo {
			return socketInfo{exists: true, isSocket: true, uid: uid, gid: gid, mode: mode}
		}
	}
	missing := func(string) socketInfo { return socketInfo{} }
	dialErr := func(errno syscall.Errno) error {
		return fmt.Errorf("unable to connect to Podman socket: %w", &net.OpError{Op: "dial", Net: "unix", Err: &os.SyscallError{Syscall: "connect", Err: errno}})
	}
	for _, tc := range []struct {
		name string
		uri  string
		err  error
		stat func(string) socketInfo
		want []string
	}{
		{"socket missing", "unix://" + sock, dialErr(syscall.ENOENT), missing,
			[]string{"the socket /run/podman/podman.sock does not exist", "systemctl enable --now podman.socket", "systemctl status podman.socket", "podman system service --time=0 unix:///run/podman/podman.sock"}},
		{"rootless socket missing", "unix:///run/user/1001/podman/podman.sock", dialErr(syscall.ENOENT), missing,
			[]string{"does not exist", "systemctl --user enable --now podman.socket"}},
		{"permission denied", "unix://" + sock, dialErr(syscall.EACCES), socket(0, 0, 0o660),
			[]string{"permission denied on the socket /run/podman/podman.sock", "mode -rw-rw----", "for this process (user ", "1001", "other groups ", "1002", "SocketGroup="}},
		{"permission denied, in words only", "unix://" + sock, errors.New("dial unix /run/podman/podman.sock: connect: permission denied"), socket(0, 0, 0o600),
			[]string{"permission denied on the socket", "owner root (0)"}},
		{"connection refused", "unix://" + sock, dialErr(syscall.ECONNREFUSED), socket(0, 0, 0o660),
			[]string{"the socket /run/podman/podman.sock exists but no service answers on it", "systemctl status podman.socket"}},
		{"not a socket", "unix://" + sock, dialErr(syscall.ECONNREFUSED), func(string) socketInfo { return socketInfo{exists: true} },
			[]string{"exists but is not a socket"}},
		{"stat refused", "unix://" + sock, dialErr(syscall.EACCES), func(string) socketInfo { return socketInfo{exists: true, err: fs.ErrPermission} },
			[]string{"cannot look at the socket /run/podman/podman.sock", "a directory on its path is not open to this process (user "}},
		{"tcp", "tcp://10.0.0.5:8888", dialErr(syscall.ECONNREFUSED), missing,
			[]string{"a Podman service listens at 10.0.0.5:8888"}},
		{"ssh", "ssh://core@10.0.0.5/run/podman/podman.sock", errors.New("handshake failed"), missing,
			[]string{"ssh to 10.0.0.5 works", "/run/podman/podman.sock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := whatToCheck(tc.uri, tc.err, tc.stat, me)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q\ndoes not say %q", got, w)
				}
			}
		})
	}
}

// With a real runtime: a missing socket and a stale one (nothing listens)
// are told apart in the error, which wraps engine.ErrUnavailable.
func TestUnreachableMessages(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "nobody.sock"), "does not exist"},
		{stale, "exists but no service answers on it"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := New("unix://"+tc.path).ImageExists(ctx, "localhost/x:v1")
		cancel()
		if !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrUnavailable saying %q", tc.path, err, tc.want)
		}
	}
}
