package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// HostState is what podswitch knows of one Podman host of several, in the
// words users see.
type HostState string

const (
	// HostUp: its API answers and its containers do (or it has none).
	HostUp HostState = "up"
	// HostUnmanaged: its API does not answer but its containers do: they
	// keep serving; nothing new is placed there and nothing is replaced
	// (the host's Podman service restarting must not move apps).
	HostUnmanaged HostState = "unmanaged"
	// HostUnreachable: its containers do not answer (its API may): they
	// are out of the pool; they are replaced elsewhere once the host has
	// been unreachable for host_down_after.
	HostUnreachable HostState = "unreachable"
	// HostLost: unreachable for host_down_after: its containers are
	// replaced on the other hosts, new-first; when it comes back they are
	// stopped once their replacements serve.
	HostLost HostState = "lost"
)

// DefaultHostDownAfter is how long a host's containers may not answer
// before they are replaced on other hosts.
const DefaultHostDownAfter = 10 * time.Second

// Host watching: the API is pinged every hostPingInterval, each ping with
// its own deadline; a host whose containers failed every check for
// hostUnreachableAfter (and answered none) is unreachable.
const (
	hostPingInterval     = 2 * time.Second
	hostPingTimeout      = 2 * time.Second
	hostUnreachableAfter = 2 * time.Second
	// hostEvidenceTTL is how long a failed check counts against its host
	// when no check follows.
	hostEvidenceTTL = 5 * time.Second
	// hostListTimeout bounds one host's answer to a list of every host.
	hostListTimeout = 10 * time.Second
)

// HostConfig is one Podman host of a HostSet.
type HostConfig struct {
	// Name is the host's name in the config: a short word without '/'.
	Name string
	// Runtime runs its containers.
	Runtime Runtime
	// Address is where the host publishes the PORT of web containers: the
	// address podswitch dials them at.
	Address string
	// Ping checks that the host's API answers; nil lists nothing.
	Ping func(ctx context.Context) error
	// Key identifies the host's settings: a host updated with another key
	// gets the new runtime (and the old one is closed), the same key
	// keeps the old one and its connections.
	Key string
	// Close, when set, is called once the runtime is no longer used.
	Close func()
}

// HostStatus is what users see of a host.
type HostStatus struct {
	Name    string    `json:"name"`
	Address string    `json:"address"`
	State   HostState `json:"state"`
	Since   time.Time `json:"since"`
	// APIError is why its API did not answer its last ping.
	APIError string `json:"api_error,omitempty"`
	// Containers counts the containers podswitch knows on the host.
	Containers int `json:"containers"`
}

// PartialListError is returned by HostSet.List, with the containers of the
// hosts that answered, when some hosts did not: a container of those is
// neither present nor gone. It wraps ErrUnavailable, so that a caller that
// does not know it takes the list for failed.
type PartialListError struct {
	Hosts []string
	Err   error
}

func (e *PartialListError) Error() string {
	return fmt.Sprintf("hosts %s did not answer: %v", strings.Join(e.Hosts, ", "), e.Err)
}

func (e *PartialListError) Unwrap() error { return e.Err }

// HostSep separates the host from the container ID in the IDs of a
// HostSet ("a/3f9c..."): a Podman ID or name never holds it.
const HostSep = "/"

// HostOf returns the host of a container ID of a HostSet ("" for a
// container of a single host).
func HostOf(id string) string {
	if i := strings.Index(id, HostSep); i >= 0 {
		return id[:i]
	}
	return ""
}

// QualifyID returns the ID of container id of host in a HostSet.
func QualifyID(host, id string) string {
	if host == "" {
		return id
	}
	return host + HostSep + id
}

func splitID(id string) (host, local string) {
	if i := strings.Index(id, HostSep); i >= 0 {
		return id[:i], id[i+1:]
	}
	return "", id
}

// hostsKey carries the hosts an image must exist on (see WithHosts).
type hostsKey struct{}

// WithHosts returns ctx saying that ImageExists and ImageID of a HostSet
// concern these hosts (every host when none is given).
func WithHosts(ctx context.Context, hosts []string) context.Context {
	if len(hosts) == 0 {
		return ctx
	}
	return context.WithValue(ctx, hostsKey{}, hosts)
}

// HostSet is a Runtime over several Podman hosts, each with its own
// runtime. Container IDs are qualified with their host ("a/<podman id>").
// A container spec names its host (ContainerSpec.Host, chosen by the
// supervisor's placement); its web port is published on the host's
// address, which is what ContainerInfo.Addr then says. It watches every
// host: its API is pinged every 2 s, and what the supervisors' health
// checks find of its containers is noted, so that State tells up,
// unmanaged, unreachable and lost apart.
type HostSet struct {
	log *zap.Logger
	// watchers are told of each change of a host's state.
	watchersMu sync.Mutex
	watchers   []func(HostStatus, HostState)
	// gap, when set, is called when a host's event stream came back after
	// a break: exits may have been missed.
	gap atomic.Pointer[func()]

	mu        sync.RWMutex
	hosts     map[string]*hostEntry
	names     []string
	downAfter time.Duration
	// changed is closed and replaced when the hosts change.
	changed chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type hostEntry struct {
	cfg HostConfig

	apiOK  atomic.Bool
	apiErr atomic.Pointer[string]
	// pinged is set once the API was pinged.
	pinged atomic.Bool
	// lastOK and lastFail are the times (unix nanos) of the last passed
	// and failed health check of a container on the host; failingSince
	// the first failure after the last pass.
	lastOK, lastFail, failingSince atomic.Int64

	// state and since are the host's state, written by the watch.
	state atomic.Pointer[HostState]
	since atomic.Int64
	// stop ends the host's watch and event stream.
	stop context.CancelFunc
}

// NewHostSet returns a set of no host; Update gives it its hosts.
func NewHostSet(log *zap.Logger) *HostSet {
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &HostSet{
		log: log, hosts: map[string]*hostEntry{}, downAfter: DefaultHostDownAfter,
		changed: make(chan struct{}), ctx: ctx, cancel: cancel,
	}
}

// Update sets the hosts. A host whose Key is unchanged keeps its runtime;
// one whose settings changed gets the new one; one that left is no longer
// used (its containers are not touched: a host removed from the config
// with containers of its apps is the user's to empty first).
func (h *HostSet) Update(hosts []HostConfig, downAfter time.Duration) {
	if downAfter <= 0 {
		downAfter = DefaultHostDownAfter
	}
	// A new host is pinged first (all at once, each within its own
	// deadline), so that placement knows at once which hosts answer.
	fresh := make(map[string]*hostEntry, len(hosts))
	var wg sync.WaitGroup
	for _, cfg := range hosts {
		if old := h.entry(cfg.Name); old != nil && old.cfg.Key == cfg.Key {
			continue
		}
		e := &hostEntry{cfg: cfg}
		e.since.Store(time.Now().UnixNano())
		fresh[cfg.Name] = e
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.ping(h.ctx, e)
			st := HostUp
			if !e.apiOK.Load() {
				st = HostUnmanaged
			}
			e.state.Store(&st)
		}()
	}
	wg.Wait()
	h.mu.Lock()
	var closing []func()
	next := make(map[string]*hostEntry, len(hosts))
	names := make([]string, 0, len(hosts))
	for _, cfg := range hosts {
		names = append(names, cfg.Name)
		if old := h.hosts[cfg.Name]; old != nil && old.cfg.Key == cfg.Key {
			next[cfg.Name] = old
			if cfg.Close != nil {
				closing = append(closing, cfg.Close) // the new one is not used
			}
			continue
		}
		e := fresh[cfg.Name]
		if e == nil { // added meanwhile by another Update: ping it at its watch
			e = &hostEntry{cfg: cfg}
			st := HostUnmanaged
			e.state.Store(&st)
			e.since.Store(time.Now().UnixNano())
		}
		next[cfg.Name] = e
	}
	for name, old := range h.hosts {
		if next[name] != old {
			if old.stop != nil {
				old.stop()
			}
			if old.cfg.Close != nil {
				closing = append(closing, old.cfg.Close)
			}
		}
	}
	slices.Sort(names)
	same := len(next) == len(h.hosts)
	for name, e := range next {
		same = same && h.hosts[name] == e
	}
	h.hosts, h.names, h.downAfter = next, names, downAfter
	if !same {
		// The event streams follow the new set.
		close(h.changed)
		h.changed = make(chan struct{})
	}
	if h.ctx.Err() == nil {
		for _, e := range next {
			h.watchLocked(e)
		}
	}
	h.mu.Unlock()
	for _, c := range closing {
		c()
	}
}

// watchLocked starts the watch of e unless it runs.
func (h *HostSet) watchLocked(e *hostEntry) {
	if e.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(h.ctx)
	e.stop = cancel
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.watch(ctx, e)
	}()
}

// Close stops watching the hosts and closes their runtimes.
func (h *HostSet) Close() {
	h.mu.Lock()
	h.cancel()
	h.mu.Unlock()
	h.wg.Wait()
	h.mu.Lock()
	hosts := h.hosts
	h.hosts, h.names = map[string]*hostEntry{}, nil
	h.mu.Unlock()
	for _, e := range hosts {
		if e.cfg.Close != nil {
			e.cfg.Close()
		}
	}
}

// Names returns the names of the hosts, sorted.
func (h *HostSet) Names() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return slices.Clone(h.names)
}

// Len returns how many hosts the set has: 0 when podswitch runs on one
// Podman service.
func (h *HostSet) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.names)
}

// DownAfter returns host_down_after.
func (h *HostSet) DownAfter() time.Duration {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.downAfter
}

func (h *HostSet) entry(name string) *hostEntry {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.hosts[name]
}

// State returns the state of host name ("" for a host it does not have).
func (h *HostSet) State(name string) HostState {
	e := h.entry(name)
	if e == nil {
		return ""
	}
	return *e.state.Load()
}

// Statuses returns what users see of every host, by name.
func (h *HostSet) Statuses() []HostStatus {
	h.mu.RLock()
	entries := make([]*hostEntry, 0, len(h.names))
	for _, n := range h.names {
		entries = append(entries, h.hosts[n])
	}
	h.mu.RUnlock()
	out := make([]HostStatus, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.status())
	}
	return out
}

func (e *hostEntry) status() HostStatus {
	st := HostStatus{Name: e.cfg.Name, Address: e.cfg.Address, State: *e.state.Load(), Since: time.Unix(0, e.since.Load())}
	if !e.apiOK.Load() {
		if msg := e.apiErr.Load(); msg != nil {
			st.APIError = *msg
		}
	}
	return st
}

// NoteCheck notes what a check of container id (a health check, or a
// probe of its boot) found of its host: err is nil when it passed. Only a
// dial that timed out or found no route counts against the host (see
// hostEvidence); a refusal or any answer, even a wrong one, says the host
// is there and its app is at fault. It is called for every check: it
// costs a lookup and two atomic operations.
func (h *HostSet) NoteCheck(id string, err error) {
	name := HostOf(id)
	if name == "" {
		return
	}
	e := h.entry(name)
	if e == nil {
		return
	}
	now := time.Now().UnixNano()
	if err == nil || !hostEvidence(err) {
		e.lastOK.Store(now)
		e.failingSince.Store(0)
		return
	}
	e.lastFail.Store(now)
	e.failingSince.CompareAndSwap(0, now)
}

// hostEvidence reports whether a failed check says that the container's
// host may be cut off: its dial timed out or found no route. A refused
// connection (the host answered for its port) or an exchange that failed
// after the connection was made says the host is there.
func hostEvidence(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	return op.Timeout() || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// watch pings e's API every hostPingInterval and updates its state until
// ctx ends.
func (h *HostSet) watch(ctx context.Context, e *hostEntry) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.ping(ctx, e)
		h.assess(e, time.Now())
		t.Reset(hostPingInterval)
	}
}

func (h *HostSet) ping(ctx context.Context, e *hostEntry) {
	pctx, cancel := context.WithTimeout(ctx, hostPingTimeout)
	defer cancel()
	var err error
	if e.cfg.Ping != nil {
		err = e.cfg.Ping(pctx)
	} else {
		_, err = e.cfg.Runtime.List(pctx, "\x00none")
	}
	if ctx.Err() != nil {
		return
	}
	first := !e.pinged.Swap(true)
	if err != nil {
		msg := err.Error()
		e.apiErr.Store(&msg)
		if e.apiOK.Swap(false) || first {
			h.log.Warn("podman host api does not answer", zap.String("host", e.cfg.Name), zap.Error(err))
		}
		return
	}
	if !e.apiOK.Swap(true) {
		if first {
			h.log.Info("podman host api answers", zap.String("host", e.cfg.Name))
		} else {
			h.log.Info("podman host api answers again", zap.String("host", e.cfg.Name))
		}
	}
}

// assess works out e's state at now from its API and its containers'
// checks, and tells of a change.
func (h *HostSet) assess(e *hostEntry, now time.Time) {
	to := HostUp
	failing := e.failingSince.Load()
	if failing != 0 && now.Sub(time.Unix(0, e.lastFail.Load())) > hostEvidenceTTL {
		// No container of the host was checked lately (they were
		// replaced, or stopped): what they said is stale.
		e.failingSince.CompareAndSwap(failing, 0)
		failing = 0
	}
	from := *e.state.Load()
	switch {
	case failing == 0 && !e.apiOK.Load() && (from == HostUnreachable || from == HostLost):
		// Nothing answers: it stays as it was until its API is back.
		to = from
	case failing != 0 && now.Sub(time.Unix(0, failing)) >= h.DownAfter()+hostUnreachableAfter:
		to = HostLost
	case failing != 0 && now.Sub(time.Unix(0, failing)) >= hostUnreachableAfter:
		to = HostUnreachable
	case !e.apiOK.Load():
		to = HostUnmanaged
	}
	if from == to {
		return
	}
	e.state.Store(&to)
	e.since.Store(now.UnixNano())
	fields := []zap.Field{zap.String("host", e.cfg.Name), zap.String("from", string(from)), zap.String("to", string(to))}
	if to == HostUp {
		h.log.Info("podman host state changed", fields...)
	} else {
		h.log.Warn("podman host state changed", fields...)
	}
	h.watchersMu.Lock()
	watchers := slices.Clone(h.watchers)
	h.watchersMu.Unlock()
	for _, fn := range watchers {
		fn(e.status(), from)
	}
}

// OnState adds fn to what is told of every change of a host's state (from
// the host's watch: fn must not block).
func (h *HostSet) OnState(fn func(st HostStatus, from HostState)) {
	h.watchersMu.Lock()
	h.watchers = append(h.watchers, fn)
	h.watchersMu.Unlock()
}

// Placeable reports whether new containers may go to host name: its API
// answers and its containers do.
func (h *HostSet) Placeable(name string) bool { return h.State(name) == HostUp }

// Place returns the host a new container goes to: of candidates (every
// host when empty) that are up, the one for which count is the lowest,
// ties by name. It fails, saying why, when none is up.
func (h *HostSet) Place(candidates []string, count func(host string) int) (string, error) {
	if len(candidates) == 0 {
		candidates = h.Names()
	}
	best, bestN := "", 0
	var why []string
	for _, name := range candidates {
		st := h.State(name)
		if st != HostUp {
			if st == "" {
				st = "not configured"
			}
			why = append(why, fmt.Sprintf("%s: %s", name, st))
			continue
		}
		n := count(name)
		if best == "" || n < bestN || n == bestN && name < best {
			best, bestN = name, n
		}
	}
	if best == "" {
		return "", fmt.Errorf("no host can take a new container (%s)", strings.Join(why, ", "))
	}
	return best, nil
}

// rt returns the runtime of host name.
func (h *HostSet) rt(name string) (*hostEntry, error) {
	e := h.entry(name)
	if e == nil {
		if name == "" {
			return nil, fmt.Errorf("%w: a container of no host", ErrNotFound)
		}
		return nil, fmt.Errorf("%w: host %q is not in the config", ErrNotFound, name)
	}
	return e, nil
}

func (h *HostSet) qualify(e *hostEntry, info ContainerInfo) ContainerInfo {
	if info.ID != "" {
		info.ID = QualifyID(e.cfg.Name, info.ID)
	}
	if info.Addr != "" {
		if host, port, err := net.SplitHostPort(info.Addr); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			info.Addr = net.JoinHostPort(e.cfg.Address, port)
		}
	}
	return info
}

// Run implements Runtime on the host spec.Host names; a web container's
// port is published on its address.
func (h *HostSet) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	e, err := h.rt(spec.Host)
	if err != nil {
		return ContainerInfo{}, err
	}
	if spec.Port > 0 {
		spec.Publish = e.cfg.Address
	}
	info, err := e.cfg.Runtime.Run(ctx, spec)
	return h.qualify(e, info), err
}

// Inspect implements Runtime.
func (h *HostSet) Inspect(ctx context.Context, id string) (ContainerInfo, error) {
	name, local := splitID(id)
	e, err := h.rt(name)
	if err != nil {
		return ContainerInfo{}, err
	}
	info, err := e.cfg.Runtime.Inspect(ctx, local)
	return h.qualify(e, info), err
}

// Stop implements Runtime.
func (h *HostSet) Stop(ctx context.Context, id string, timeout time.Duration) error {
	name, local := splitID(id)
	e, err := h.rt(name)
	if err != nil {
		return err
	}
	return e.cfg.Runtime.Stop(ctx, local, timeout)
}

// Remove implements Runtime.
func (h *HostSet) Remove(ctx context.Context, id string) error {
	name, local := splitID(id)
	e, err := h.rt(name)
	if err != nil {
		return err
	}
	return e.cfg.Runtime.Remove(ctx, local)
}

// Wait implements Runtime.
func (h *HostSet) Wait(ctx context.Context, id string) (int, error) {
	name, local := splitID(id)
	e, err := h.rt(name)
	if err != nil {
		return -1, err
	}
	return e.cfg.Runtime.Wait(ctx, local)
}

// Kill implements Runtime.
func (h *HostSet) Kill(ctx context.Context, id, signal string) error {
	name, local := splitID(id)
	e, err := h.rt(name)
	if err != nil {
		return err
	}
	return e.cfg.Runtime.Kill(ctx, local, signal)
}

// Logs implements Runtime.
func (h *HostSet) Logs(ctx context.Context, id string, opts LogOptions, fn func(LogLine)) error {
	name, local := splitID(id)
	e, err := h.rt(name)
	if err != nil {
		return err
	}
	return e.cfg.Runtime.Logs(ctx, local, opts, fn)
}

func (h *HostSet) entries(names []string) []*hostEntry {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(names) == 0 {
		names = h.names
	}
	out := make([]*hostEntry, 0, len(names))
	for _, n := range names {
		if e := h.hosts[n]; e != nil {
			out = append(out, e)
		}
	}
	return out
}

// List implements Runtime: the containers of every host, asked at once.
// When some hosts do not answer, it returns those of the others with a
// *PartialListError naming them; when none answers, the first error.
func (h *HostSet) List(ctx context.Context, app string) ([]ContainerInfo, error) {
	entries := h.entries(nil)
	lists := make([][]ContainerInfo, len(entries))
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		if !e.apiOK.Load() {
			// Its watch knows it does not answer: not waited for.
			errs[i] = fmt.Errorf("%w: its API does not answer", ErrUnavailable)
			if msg := e.apiErr.Load(); msg != nil {
				errs[i] = fmt.Errorf("%w: %s", ErrUnavailable, *msg)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each host within its own bound: one that hangs does not
			// take the others' answers with it.
			lctx, cancel := context.WithTimeout(ctx, hostListTimeout)
			defer cancel()
			lists[i], errs[i] = e.cfg.Runtime.List(lctx, app)
			if errs[i] != nil && lctx.Err() != nil && ctx.Err() == nil {
				errs[i] = fmt.Errorf("%w: no answer within %s", ErrUnavailable, hostListTimeout)
			}
		}()
	}
	wg.Wait()
	var out []ContainerInfo
	var failed []string
	var first error
	for i, e := range entries {
		if errs[i] != nil {
			failed = append(failed, e.cfg.Name)
			if first == nil {
				first = fmt.Errorf("host %s: %w", e.cfg.Name, errs[i])
			}
			continue
		}
		for _, info := range lists[i] {
			out = append(out, h.qualify(e, info))
		}
	}
	switch {
	case len(failed) == 0:
		return out, nil
	case len(failed) == len(entries):
		return nil, first
	}
	if !errors.Is(first, ErrUnavailable) {
		first = fmt.Errorf("%w: %w", ErrUnavailable, first)
	}
	return out, &PartialListError{Hosts: failed, Err: first}
}

// Events implements Runtime: it follows every host's stream, each one
// reconnecting on its own, until ctx ends. A stream that came back after a
// break calls the gap function (SetGap): exits may have been missed.
func (h *HostSet) Events(ctx context.Context, fn func(ContainerEvent)) error {
	for {
		h.mu.RLock()
		entries := make([]*hostEntry, 0, len(h.hosts))
		for _, e := range h.hosts {
			entries = append(entries, e)
		}
		changed := h.changed
		h.mu.RUnlock()
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, e := range entries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.follow(sctx, e, fn)
			}()
		}
		select {
		case <-ctx.Done():
		case <-changed:
		}
		cancel()
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The hosts changed: follow the new set; a stream that was cut
		// may have missed exits.
		h.callGap()
	}
}

// SetGap sets what is called when an event stream may have missed exits.
func (h *HostSet) SetGap(fn func()) { h.gap.Store(&fn) }

func (h *HostSet) callGap() {
	if fn := h.gap.Load(); fn != nil {
		(*fn)()
	}
}

// follow follows e's event stream until ctx ends, reconnecting with
// backoff.
func (h *HostSet) follow(ctx context.Context, e *hostEntry, fn func(ContainerEvent)) {
	b := newBackoff(time.Second, 10*time.Second)
	broke := false
	for ctx.Err() == nil {
		t0 := time.Now()
		connected := false
		err := e.cfg.Runtime.Events(ctx, func(ev ContainerEvent) {
			if !connected && broke {
				connected = true
				h.callGap()
			}
			ev.ID = QualifyID(e.cfg.Name, ev.ID)
			fn(ev)
		})
		if ctx.Err() != nil {
			return
		}
		if broke && !connected && time.Since(t0) > time.Second {
			// It ran a while without an event: it was connected.
			h.callGap()
		}
		broke = true
		if time.Since(t0) > time.Minute {
			b.Reset()
		}
		delay := b.NextBackOff()
		if c := h.log.Check(zap.DebugLevel, "podman host event stream ended, reconnecting"); c != nil {
			c.Write(zap.String("host", e.cfg.Name), zap.Error(err), zap.Duration("delay", delay))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// imageHosts returns the hosts ctx names (WithHosts), else every host:
// those of them that are up, which new containers may go to (all of them
// when none is, for the error to say why).
func (h *HostSet) imageHosts(ctx context.Context) []*hostEntry {
	names, _ := ctx.Value(hostsKey{}).([]string)
	all := h.entries(names)
	up := make([]*hostEntry, 0, len(all))
	for _, e := range all {
		if *e.state.Load() == HostUp {
			up = append(up, e)
		}
	}
	if len(up) == 0 {
		return all
	}
	return up
}

// ImageExists implements Runtime: the image must be on every host
// concerned (WithHosts); the error names those that lack it.
func (h *HostSet) ImageExists(ctx context.Context, image string) error {
	_, err := h.imageIDs(ctx, image, func(ctx context.Context, rt Runtime) (string, error) {
		return "", rt.ImageExists(ctx, image)
	})
	return err
}

// ImageID implements Runtime: the image must be on every host concerned,
// with one ID, so that a release runs one image everywhere.
func (h *HostSet) ImageID(ctx context.Context, image string) (string, error) {
	return h.imageIDs(ctx, image, func(ctx context.Context, rt Runtime) (string, error) {
		return rt.ImageID(ctx, image)
	})
}

func (h *HostSet) imageIDs(ctx context.Context, image string, get func(context.Context, Runtime) (string, error)) (string, error) {
	entries := h.imageHosts(ctx)
	if len(entries) == 0 {
		return "", errors.New("no podman host is configured")
	}
	ids := make([]string, len(entries))
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = get(ctx, e.cfg.Runtime)
		}()
	}
	wg.Wait()
	var missing, failed []string
	var firstMissing, firstFailed error
	for i, e := range entries {
		switch {
		case errors.Is(errs[i], ErrImageNotFound):
			missing = append(missing, e.cfg.Name)
			firstMissing = cmp.Or(firstMissing, errs[i])
		case errs[i] != nil:
			failed = append(failed, e.cfg.Name)
			firstFailed = cmp.Or(firstFailed, errs[i])
		}
	}
	switch {
	case len(missing) > 0:
		return "", &HostImageError{Msg: fmt.Sprintf("image %s is missing on host %s (put it on every host of the app: podman save %s | podman --url <host> load)",
			image, strings.Join(missing, ", "), image), Hosts: missing}
	case len(failed) > 0:
		return "", fmt.Errorf("host %s: %w", strings.Join(failed, ", "), firstFailed)
	}
	id := ids[0]
	for i, other := range ids {
		if other != id {
			return "", &HostImageError{Msg: fmt.Sprintf("image %s has ID %s on host %s but %s on host %s: a release runs one image everywhere (load the same image on every host: podman save %s | podman --url <host> load)",
				image, ShortImageID(id), entries[0].cfg.Name, ShortImageID(other), entries[i].cfg.Name, image), Hosts: []string{entries[i].cfg.Name}}
		}
	}
	return id, nil
}

// HostImageError says that an image is missing on some hosts of several,
// or differs between them. It wraps ErrImageNotFound.
type HostImageError struct {
	Msg   string
	Hosts []string
}

func (e *HostImageError) Error() string { return e.Msg }

func (e *HostImageError) Unwrap() error { return ErrImageNotFound }

// Interface guard.
var _ Runtime = (*HostSet)(nil)
