package sshtunnel

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyError is the error of a connection refused because of the host's
// key. Connect and Err return it wrapped; find it with errors.As.
type HostKeyError struct {
	// Addr is the address whose key was checked, host:port.
	Addr string
	// KeyType and Fingerprint describe the key the host presented
	// (ssh-ed25519, SHA256:...).
	KeyType     string
	Fingerprint string
	// KnownHostsFile is the file the key was checked against.
	KnownHostsFile string
	// Changed is true when the file has other keys for Addr: the host's
	// key changed, or someone sits between podswitch and the host.
	Changed bool
	// Known lists the keys the file has for Addr when Changed, or the
	// @revoked line when Revoked, each as "file:line type fingerprint".
	Known []string
	// Revoked is true when the key is marked @revoked in the file.
	Revoked bool
}

func (e *HostKeyError) Error() string {
	switch {
	case e.Revoked:
		return fmt.Sprintf("ssh host key of %s (%s %s) is marked @revoked (%s): connection refused",
			e.Addr, e.KeyType, e.Fingerprint, strings.Join(e.Known, ", "))
	case e.Changed:
		return fmt.Sprintf("ssh host key of %s has CHANGED: the host presented %s %s, not the key known for it (%s); "+
			"this may be an attack (someone intercepting the connection) or a reinstalled host: connection refused; "+
			"if the change is expected, check the new fingerprint with the host's administrator, then replace the host's line in %s",
			e.Addr, e.KeyType, e.Fingerprint, strings.Join(e.Known, ", "), e.KnownHostsFile)
	default:
		host, port, _ := net.SplitHostPort(e.Addr)
		return fmt.Sprintf("ssh host key of %s is unknown: the host presented %s %s, which is not in %s: connection refused; "+
			"check this fingerprint with the host's administrator (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the host), "+
			"then add the key to %s (ssh-keyscan -t %s -p %s %s prints its line); podswitch never adds host keys itself",
			e.Addr, e.KeyType, e.Fingerprint, e.KnownHostsFile, e.KnownHostsFile, e.KeyType, port, host)
	}
}

// loadKnownHosts reads the known_hosts file and returns its host key
// callback, which turns the knownhosts package's errors into HostKeyError,
// and the host key algorithms to ask addr for (nil: the defaults). The file
// is only read: nothing ever writes to it.
func loadKnownHosts(file, addr string) (ssh.HostKeyCallback, []string, error) {
	check, err := knownhosts.New(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, nil, fmt.Errorf("known_hosts file: %w", err)
		}
		// Parse errors name the file and line already.
		return nil, nil, fmt.Errorf("known_hosts file %s: %w", file, err)
	}
	cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		if err == nil {
			return nil
		}
		he := &HostKeyError{Addr: addr, KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key), KnownHostsFile: file}
		describe := func(k knownhosts.KnownKey) string {
			return fmt.Sprintf("%s:%d %s %s", k.Filename, k.Line, k.Key.Type(), ssh.FingerprintSHA256(k.Key))
		}
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &re):
			he.Revoked = true
			he.Known = []string{describe(re.Revoked)}
		case errors.As(err, &ke):
			he.Changed = len(ke.Want) > 0
			for _, k := range ke.Want {
				he.Known = append(he.Known, describe(k))
			}
		default:
			return err
		}
		return he
	}
	algos, err := knownAlgorithms(check, file, addr)
	if err != nil {
		return nil, nil, err
	}
	return cb, algos, nil
}

var probeKey = sync.OnceValue(func() ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
})

// knownAlgorithms returns the host key algorithms of the keys that file
// has for addr, so that a host with keys of several types presents one
// that the file has (as OpenSSH does): without it, a host with an ECDSA
// and an Ed25519 key, whose Ed25519 key only is known, would be refused
// as if its key had changed. It returns nil (the library's defaults) when
// the file has no key for addr, or has @cert-authority lines (whose keys
// the knownhosts package does not tell apart from plain keys).
func knownAlgorithms(check ssh.HostKeyCallback, file, addr string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("known_hosts file: %w", err)
	}
	for line := range bytes.Lines(data) {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("@cert-authority")) {
			return nil, nil
		}
	}
	// A random key is never in the file: the error lists the keys the
	// file has for addr.
	var ke *knownhosts.KeyError
	if err := check(addr, &net.TCPAddr{IP: net.IPv4zero, Port: 22}, probeKey()); !errors.As(err, &ke) {
		return nil, nil
	}
	var algos []string
	for _, k := range ke.Want {
		names := []string{k.Key.Type()}
		if k.Key.Type() == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, a := range names {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	return algos, nil
}
