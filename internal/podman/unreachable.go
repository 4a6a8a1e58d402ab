package podman

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/user"
	"strings"
	"syscall"

	"github.com/podswitch/podswitch/internal/engine"
)

// unreachable is the error of a call that could not reach the service at
// uri (err, the transport's words), with what to check.
func unreachable(uri string, err error) error {
	return fmt.Errorf("%w: podman service at %s: %v; %s", engine.ErrUnavailable, Redact(uri), err, whatToCheck(uri, err, statSocket, currentIDs()))
}

// socketInfo is what a stat of a unix socket says.
type socketInfo struct {
	exists   bool
	isSocket bool
	// err is why a stat failed for another reason than a missing file.
	err      error
	uid, gid uint32
	mode     fs.FileMode
}

// ids are the process's user, group and supplementary groups.
type ids struct {
	uid, gid uint32
	groups   []uint32
}

func currentIDs() ids {
	me := ids{uid: uint32(os.Getuid()), gid: uint32(os.Getgid())}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			me.groups = append(me.groups, uint32(g))
		}
	}
	return me
}

func statSocket(path string) socketInfo {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return socketInfo{}
	}
	if err != nil {
		return socketInfo{exists: true, err: err}
	}
	si := socketInfo{exists: true, isSocket: fi.Mode()&fs.ModeSocket != 0, mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		si.uid, si.gid = st.Uid, st.Gid
	}
	return si
}

// startService says how to start the service behind socket path.
func startService(path string) string {
	if strings.HasPrefix(path, "/run/user/") {
		return fmt.Sprintf("start it as that user: systemctl --user enable --now podman.socket (or podman system service --time=0 unix://%s)", path)
	}
	return fmt.Sprintf("start it: systemctl enable --now podman.socket, and check systemctl status podman.socket (or run podman system service --time=0 unix://%s)", path)
}

// whatToCheck says what to check when the service at uri cannot be
// reached with err: for a unix socket, whether it exists, whether this
// process (me) may use it and whether a service answers on it; stat
// returns what the socket is.
func whatToCheck(uri string, err error, stat func(string) socketInfo, me ids) string {
	u, perr := url.Parse(uri)
	if perr != nil {
		return "check the podman address"
	}
	switch u.Scheme {
	case "tcp":
		return fmt.Sprintf("check that a Podman service listens at %s (podman system service --time=0 tcp://%s on that machine) and that no firewall blocks it", u.Host, u.Host)
	case "ssh":
		return fmt.Sprintf("check that ssh to %s works for this process's user (keys, known_hosts) and that podman.socket runs there at %s (systemctl status podman.socket)", u.Host, u.Path)
	case "unix":
	default:
		return "check the podman address"
	}
	path := u.Path
	si := stat(path)
	msg := err.Error()
	switch {
	case si.err != nil:
		return fmt.Sprintf("cannot look at the socket %s: %v: a directory on its path is not open to this process (user %s, group %s%s)",
			path, si.err, userName(me.uid), groupName(me.gid), otherGroups(me))
	case !si.exists:
		return fmt.Sprintf("the socket %s does not exist: the Podman service is not running there; %s", path, startService(path))
	case !si.isSocket:
		return fmt.Sprintf("%s exists but is not a socket: check the podman address", path)
	case errors.Is(err, fs.ErrPermission) || strings.Contains(msg, "permission denied"):
		return fmt.Sprintf("permission denied on the socket %s (owner %s, group %s, mode %v) for this process (user %s, group %s%s): run Caddy as a user that may use it, or give its user access (for example a group that owns the socket, in podman.socket's SocketGroup= and SocketMode=0660)",
			path, userName(si.uid), groupName(si.gid), si.mode, userName(me.uid), groupName(me.gid), otherGroups(me))
	case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(msg, "connection refused"):
		return fmt.Sprintf("the socket %s exists but no service answers on it (a stale socket of a stopped service); %s", path, startService(path))
	}
	return fmt.Sprintf("check the socket %s and the service: systemctl status podman.socket (or podman system service)", path)
}

func userName(uid uint32) string {
	if u, err := user.LookupId(fmt.Sprint(uid)); err == nil {
		return fmt.Sprintf("%s (%d)", u.Username, uid)
	}
	return fmt.Sprint(uid)
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(fmt.Sprint(gid)); err == nil {
		return fmt.Sprintf("%s (%d)", g.Name, gid)
	}
	return fmt.Sprint(gid)
}

// otherGroups lists me's supplementary groups other than its group.
func otherGroups(me ids) string {
	var names []string
	for _, g := range me.groups {
		if g != me.gid {
			names = append(names, groupName(g))
		}
	}
	if len(names) == 0 {
		return ", no other group"
	}
	return ", other groups " + strings.Join(names, ", ")
}
