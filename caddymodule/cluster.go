package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/lease"
	"github.com/podswitch/podswitch/internal/store"
)

// Shared mode: when Caddy's `storage` option names a storage other than
// the default directory in Caddy's data dir, podswitch keeps there what
// every proxy must agree on (the app records, their history, the release
// key, each proxy's heartbeat) and leads each app from one proxy at a time
// (see engine.Leadership). The rest of this file is that cluster.

// Timings of the cluster.
const (
	// defaultLeaseDuration is an app lease's term when the config sets
	// none (as client-go's leader election).
	defaultLeaseDuration = 15 * time.Second
	// minLeaseDuration bounds lease_duration from below: a term must hold
	// several renewals of a storage that answers slowly.
	minLeaseDuration = 2 * time.Second
	// beatInterval is how often a proxy writes its heartbeat.
	beatInterval = time.Second
	// peerFresh is how long a heartbeat that did not change still counts
	// its proxy as alive.
	peerFresh = 4 * time.Second
	// opsInterval is how often a leader looks for operations sent to
	// other proxies (one list for all its apps).
	opsInterval = 250 * time.Millisecond
	// statusInterval is how often a leader looks whether an app's status
	// changed, to publish it for the other proxies.
	statusInterval = 250 * time.Millisecond
	// forwardTimeout bounds an operation another proxy carries out
	// (without ?wait: with it, the client's own timeout does).
	forwardTimeout = 30 * time.Second
	// forwardedHeader marks an operation carried out for another proxy:
	// a proxy that lost the lead meanwhile refuses it rather than send it
	// on again.
	forwardedHeader = "X-Podswitch-Forwarded"
)

// sharedStorage returns the storage of ctx's config when it is shared (the
// `storage` option names one other than Caddy's default), else nil.
func sharedStorage(ctx caddy.Context) certmagic.Storage {
	st := ctx.Storage()
	if st == nil {
		return nil
	}
	if fs, ok := st.(*certmagic.FileStorage); ok && fs.Path == caddy.DefaultStorage.Path {
		return nil
	}
	return st
}

// swapStorage is the storage of the config the engine follows: each config
// has its own storage value (a Redis client, closed when its config is
// unloaded), so the cluster, which outlives configs, reaches the current
// one through this.
type swapStorage struct {
	cur atomic.Pointer[certmagic.Storage]

	// locked is the storage value each lock held was taken through: it is
	// released through the same one (a Redis client knows only the locks
	// it took), even if a reload swapped the storage meanwhile.
	mu     sync.Mutex
	locked map[string]certmagic.Storage
}

func (s *swapStorage) set(st certmagic.Storage) { s.cur.Store(&st) }

func (s *swapStorage) get() certmagic.Storage { return *s.cur.Load() }

func (s *swapStorage) Lock(ctx context.Context, name string) error {
	st := s.get()
	err := st.Lock(ctx, name)
	if err == nil {
		s.mu.Lock()
		if s.locked == nil {
			s.locked = map[string]certmagic.Storage{}
		}
		s.locked[name] = st
		s.mu.Unlock()
	}
	return counted("lock", err)
}

func (s *swapStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	st, ok := s.locked[name]
	delete(s.locked, name)
	s.mu.Unlock()
	if !ok {
		st = s.get()
	}
	return counted("unlock", st.Unlock(ctx, name))
}

func (s *swapStorage) Store(ctx context.Context, key string, value []byte) error {
	return counted("store", s.get().Store(ctx, key, value))
}

func (s *swapStorage) Load(ctx context.Context, key string) ([]byte, error) {
	b, err := s.get().Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		counted("load", nil)
		return b, err
	}
	return b, counted("load", err)
}

func (s *swapStorage) Delete(ctx context.Context, key string) error {
	err := s.get().Delete(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		counted("delete", nil)
		return err
	}
	return counted("delete", err)
}

func (s *swapStorage) Exists(ctx context.Context, key string) bool {
	counted("exists", nil)
	return s.get().Exists(ctx, key)
}

func (s *swapStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	keys, err := s.get().List(ctx, path, recursive)
	if errors.Is(err, fs.ErrNotExist) {
		counted("list", nil)
		return keys, err
	}
	return keys, counted("list", err)
}

// counted counts one call of a shared storage and returns its error.
func counted(op string, err error) error {
	result := "ok"
	if err != nil {
		result = "error"
	}
	promMetrics.storageOps.WithLabelValues(op, result).Inc()
	return err
}

// clusterFile is what every proxy of a cluster shares from its first
// start: the id its containers carry (podswitch.instance), so that each
// proxy owns the same containers, and the key release IDs are derived
// with, so that each computes the same ones.
type clusterFile struct {
	ID         string    `json:"id"`
	ReleaseKey string    `json:"release_key"`
	Created    time.Time `json:"created"`
}

const (
	clusterKey  = "podswitch/cluster.json"
	clusterLock = "podswitch/cluster.lock"
)

// joinCluster reads the cluster's file, making it when this is the first
// proxy: then the cluster takes this proxy's own instance id and release
// key (key, when it has one), so that a proxy that ran alone keeps owning
// its containers and their release IDs when others join it. created says
// it was made now.
func joinCluster(ctx context.Context, st store.Storage, instance string, key []byte) (f clusterFile, created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*store.CallTimeout)
	defer cancel()
	if err := st.Lock(ctx, clusterLock); err != nil {
		return clusterFile{}, false, fmt.Errorf("shared storage: locking %s: %w", clusterLock, err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), clusterLock) }()
	f, err = readCluster(ctx, st)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, false, err
	}
	if len(instance) != 32 {
		var id [16]byte
		_, _ = rand.Read(id[:])
		instance = hex.EncodeToString(id[:])
	}
	if len(key) < 16 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	f = clusterFile{ID: instance, ReleaseKey: base64.StdEncoding.EncodeToString(key), Created: time.Now().UTC()}
	b, err := json.Marshal(f)
	if err == nil {
		err = st.Store(ctx, clusterKey, b)
	}
	if err != nil {
		return clusterFile{}, false, fmt.Errorf("shared storage: writing %s: %w", clusterKey, err)
	}
	return f, true, nil
}

// readCluster reads the cluster's file; a missing one is fs.ErrNotExist.
func readCluster(ctx context.Context, st store.Storage) (clusterFile, error) {
	var f clusterFile
	b, err := st.Load(ctx, clusterKey)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return f, err
	case err != nil:
		return f, fmt.Errorf("shared storage: reading %s: %w", clusterKey, err)
	}
	if err := json.Unmarshal(b, &f); err != nil || len(f.ID) != 32 {
		return clusterFile{}, fmt.Errorf("shared storage: %s is damaged (fix or remove it: a new id makes the running containers another's): %v", clusterKey, err)
	}
	return f, nil
}

// sameCluster refuses a storage (of a config reloaded) that holds another
// cluster than the one this proxy runs in, or none: its leases would be
// free, and this proxy would lead apps that others lead in the first.
func sameCluster(st certmagic.Storage, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), store.CallTimeout)
	defer cancel()
	f, err := readCluster(ctx, st)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("this config's storage holds no podswitch cluster, while this proxy runs in one: changing the storage needs a restart of Caddy, not a reload")
	case err != nil:
		return nil // it does not answer: the storage is judged when it does
	case f.ID != id:
		return fmt.Errorf("this config's storage holds podswitch cluster %s, while this proxy runs in %s: changing the storage needs a restart of Caddy, not a reload", f.ID, id)
	}
	return nil
}

// migrateAlone copies the records and history that a proxy kept in its
// data dir while it ran alone into the cluster it just made, for the apps
// the storage has none of, so that its overrides, pause, releases for
// rollback and deployments carry on.
func migrateAlone(st store.Storage, dir string, log *zap.Logger) {
	local := store.NewRecords(filepath.Join(dir, "state"))
	apps, err := local.Apps()
	if err != nil || len(apps) == 0 {
		return
	}
	shared := store.NewSharedRecords(st, nil)
	hist := store.NewHistory(filepath.Join(dir, "history"), log)
	defer hist.Close()
	sharedHist := store.NewSharedHistory(st, nil, log)
	defer sharedHist.Close()
	for _, app := range apps {
		if got, err := shared.Load(app); err != nil || got.Serving != nil || got.Deploying != nil {
			continue
		}
		rec, err := local.Load(app)
		if err != nil {
			continue
		}
		if err := shared.Save(app, rec); err != nil {
			log.Warn("copying an app record into the shared storage failed", zap.String("app", app), zap.Error(err))
			continue
		}
		if past := hist.Load(app); len(past) > 0 {
			sharedHist.Save(app, past)
		}
		log.Info("app record and history copied into the shared storage", zap.String("app", app))
	}
	sharedHist.Flush()
}

// cluster is this proxy's part in a cluster of proxies that share a
// storage: the leases of the apps (engine.Leadership), its heartbeat, the
// operations it carries out for the others, and the statuses it publishes
// for them.
type cluster struct {
	st      *swapStorage
	proxy   string // this proxy's id (its data dir's instance id)
	id      string // the cluster's id
	log     *zap.Logger
	records *store.SharedRecords
	history *store.SharedHistory
	mailbox *store.Mailbox
	beats   *store.Heartbeats
	manager *engine.Manager
	// config is the hash of the podswitch config this proxy follows.
	config   atomic.Value
	leaseDur atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	mu     sync.Mutex
	leases map[string]*appLease
	peers  []store.Heartbeat
	// drift are the proxies whose config differs from this one's, as
	// last logged.
	drift []string
	seq   uint64
	// routed are, by app, the addresses this proxy routed to lately: one
	// that left the pool is reported until its requests in flight end.
	routed map[string]map[string]bool
	// published is the status each app led here last published, by app
	// and epoch.
	published map[string][]byte
	// running are the operations being carried out, by id.
	running map[string]bool
	// storageErr is the last error of the storage, nil once it answers.
	storageErr error
}

// appLease is the lease of one app as this proxy holds or watches it.
type appLease struct {
	l *lease.Lease
	// epoch is the term this proxy holds (0 none), term its context and
	// end what ends it.
	epoch uint64
	end   context.CancelCauseFunc
	// held is closed once the renewals of the term have stopped.
	held chan struct{}
}

func newCluster(st *swapStorage, proxy string, f clusterFile, log *zap.Logger) *cluster {
	ctx, cancel := context.WithCancel(context.Background())
	c := &cluster{
		st: st, proxy: proxy, id: f.ID, log: log,
		mailbox: store.NewMailbox(st),
		beats:   store.NewHeartbeats(st, nil),
		ctx:     ctx, cancel: cancel,
		leases: map[string]*appLease{}, routed: map[string]map[string]bool{},
		published: map[string][]byte{}, running: map[string]bool{},
	}
	c.config.Store("")
	// Seq starts from the clock, so that a restarted proxy's first beats
	// never repeat the numbers its last run wrote.
	c.seq = uint64(time.Now().UnixNano())
	c.leaseDur.Store(int64(defaultLeaseDuration))
	c.records = store.NewSharedRecords(st, c.fence)
	c.history = store.NewSharedHistory(st, c.fence, log.Named("history"))
	return c
}

// start runs the heartbeat, the operations of the others and the
// publishing of statuses, once the manager exists.
func (c *cluster) start(m *engine.Manager) {
	c.manager = m
	c.bg.Go(c.beatLoop)
	c.bg.Go(c.opsLoop)
	c.bg.Go(c.statusLoop)
}

// close gives every lease up (the manager has closed: no app is led) and
// removes this proxy's heartbeat.
func (c *cluster) close() {
	c.cancel()
	c.bg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), store.CallTimeout)
	defer cancel()
	_ = c.beats.Remove(ctx, c.proxy)
}

// follow makes the cluster follow config a: its lease term and the hash
// of its podswitch config, which the other proxies compare with theirs.
func (c *cluster) follow(a *App) {
	d := time.Duration(a.LeaseDuration)
	if d == 0 {
		d = defaultLeaseDuration
	}
	c.leaseDur.Store(int64(d))
	c.mu.Lock()
	for _, al := range c.leases {
		al.l.SetDuration(d)
	}
	c.mu.Unlock()
	c.config.Store(a.configHash())
}

// configHash returns a short hash of a's podswitch config as JSON.
func (a *App) configHash() string {
	b, _ := json.Marshal(a)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

func (c *cluster) leaseKey(app string) string { return "podswitch/apps/" + app + "/lease" }

// leaseOf returns app's lease, made at first use.
func (c *cluster) leaseOf(app string) *appLease {
	c.mu.Lock()
	defer c.mu.Unlock()
	al := c.leases[app]
	if al == nil {
		al = &appLease{l: lease.New(c.st, c.leaseKey(app), c.proxy, time.Duration(c.leaseDur.Load()), nil)}
		c.leases[app] = al
	}
	return al
}

// fence runs write, a write of app's shared state, only while this proxy
// holds app's lease, under the lease's lock.
func (c *cluster) fence(app string, write func() error) error {
	al := c.leaseOf(app)
	ctx, cancel := context.WithTimeout(c.ctx, store.CallTimeout)
	defer cancel()
	err := al.l.Check(ctx, al.l.Epoch(), write)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lease.ErrNotHolder):
		return fmt.Errorf("%w (its term ran out, or another proxy leads app %s now)", err, app)
	}
	return fmt.Errorf("shared storage unavailable: %w", err)
}

// Campaign implements engine.Leadership: it reads app's lease every sixth
// of its term (without the lock), and tries it when it is free or was
// silent for a whole term, until this proxy holds it: a leader that dies
// is replaced within a term and a third of it. A proxy whose config
// differs from a live leader's takes none (see drifted).
func (c *cluster) Campaign(ctx context.Context, app string) (context.Context, uint64, error) {
	al := c.leaseOf(app)
	for {
		if !c.drifted() {
			// Read first, without the lock: the leader's writes take it,
			// and a storage's lock polls once a second.
			tctx, cancel := context.WithTimeout(ctx, store.CallTimeout)
			due, err := al.l.Due(tctx)
			var epoch uint64
			if err == nil && due {
				epoch, err = al.l.Try(tctx)
			}
			cancel()
			c.noteStorage(err)
			if epoch != 0 {
				// What this proxy kept of the app's history from an
				// earlier term is another leader's now.
				c.history.Forget(app)
				term, end := context.WithCancelCause(context.Background())
				held := make(chan struct{})
				c.mu.Lock()
				al.epoch, al.end, al.held = epoch, end, held
				c.mu.Unlock()
				c.bg.Go(func() {
					defer close(held)
					c.hold(app, al, epoch, end)
				})
				return term, epoch, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(c.renewEvery() / 2):
		}
	}
}

// renewEvery is how often a lease is renewed: a third of its term.
func (c *cluster) renewEvery() time.Duration { return time.Duration(c.leaseDur.Load()) / 3 }

// termMargin is how much of its term a leader keeps unused: it starts no
// change of a container (nor ends its term) later than that before its
// term's end, so that a change in flight (a create takes seconds) ends
// before another proxy may take over.
func (c *cluster) termMargin() time.Duration { return time.Duration(c.leaseDur.Load()) / 5 }

// hold renews app's lease while this proxy holds it, and ends the term
// (end) once it runs out, less termMargin, or another proxy took it. The
// renewals run on their own, so that one that hangs on the storage never
// delays the end of the term.
func (c *cluster) hold(app string, al *appLease, epoch uint64, end context.CancelCauseFunc) {
	done := make(chan struct{})
	var renewals sync.WaitGroup
	// The renewals end before hold does: one in flight after Resign's
	// release would take the lease back.
	defer renewals.Wait()
	defer close(done)
	lost := make(chan struct{}, 1)
	renewals.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(c.renewEvery()):
			}
			ctx, cancel := context.WithTimeout(c.ctx, store.CallTimeout)
			got, err := al.l.Try(ctx)
			cancel()
			c.noteStorage(err)
			if err == nil && got != epoch {
				lost <- struct{}{}
				return
			}
		}
	})
	check := time.NewTicker(25 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case <-lost:
			end(fmt.Errorf("another proxy took the lease of app %s", app))
			c.dropTerm(al, epoch)
			return
		case <-check.C:
		case <-c.ctx.Done():
			end(errors.New("podswitch is closing"))
			return
		}
		if !al.l.ValidFor(epoch, c.termMargin()) {
			end(fmt.Errorf("the lease of app %s was not renewed in time", app))
			c.dropTerm(al, epoch)
			return
		}
		c.mu.Lock()
		resigned := al.epoch != epoch
		c.mu.Unlock()
		if resigned {
			return
		}
	}
}

// dropTerm forgets the term of epoch, when it is the one al holds.
func (c *cluster) dropTerm(al *appLease, epoch uint64) {
	c.mu.Lock()
	if al.epoch == epoch {
		al.epoch, al.end = 0, nil
	}
	c.mu.Unlock()
}

// Valid implements engine.Leadership: the term of epoch runs, with more
// than termMargin of it left.
func (c *cluster) Valid(app string, epoch uint64) bool {
	return c.leaseOf(app).l.ValidFor(epoch, c.termMargin())
}

// Resign implements engine.Leadership: it ends the term, waits for its
// renewals to stop (one in flight would take the lease back), then gives
// the lease up.
func (c *cluster) Resign(app string, epoch uint64) {
	al := c.leaseOf(app)
	c.mu.Lock()
	end, held := al.end, al.held
	if al.epoch == epoch {
		al.epoch, al.end = 0, nil
	}
	c.mu.Unlock()
	if end != nil {
		end(errors.New("resigned"))
	}
	if held != nil {
		select {
		case <-held:
		case <-time.After(2 * store.CallTimeout):
		}
	}
	c.history.Flush()
	c.history.Forget(app)
	ctx, cancel := context.WithTimeout(context.Background(), store.CallTimeout)
	defer cancel()
	if err := al.l.Release(ctx); err != nil {
		c.log.Warn("giving the lease of an app up failed; another proxy takes it once it expires", zap.String("app", app), zap.Error(err))
	}
}

// leads reports whether this proxy holds app's lease with time to act.
func (c *cluster) leads(app string) bool {
	c.mu.Lock()
	al := c.leases[app]
	c.mu.Unlock()
	if al == nil {
		return false
	}
	c.mu.Lock()
	epoch := al.epoch
	c.mu.Unlock()
	return epoch != 0 && al.l.ValidFor(epoch, c.termMargin())
}

// ConfiguredElsewhere implements engine.Leadership: whether another live
// proxy has app in its config (its heartbeat lists it).
func (c *cluster) ConfiguredElsewhere(app string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		if _, ok := p.Apps[app]; ok && p.Proxy != c.proxy {
			return true
		}
	}
	return false
}

// Unused implements engine.Leadership: it waits until no other live proxy
// reports addr of app in its pool or with requests in flight.
func (c *cluster) Unused(ctx context.Context, app, addr string) {
	for {
		peers, err := c.beats.Peers(ctx, peerFresh)
		if err == nil && !routedElsewhere(peers, c.proxy, app, addr) {
			return
		}
		select {
		case <-ctx.Done():
			if err != nil {
				c.log.Warn("the other proxies could not be asked whether they still route to a container; stopping it anyway", zap.String("app", app), zap.String("dial", addr), zap.Error(err))
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// routedElsewhere reports whether a proxy other than self routes to addr
// of app.
func routedElsewhere(peers []store.Heartbeat, self, app, addr string) bool {
	for _, p := range peers {
		if p.Proxy == self {
			continue
		}
		if r, ok := p.Apps[app]; ok && slices.Contains(r.Addrs, addr) {
			return true
		}
	}
	return false
}

// noteStorage records whether the storage answered.
func (c *cluster) noteStorage(err error) {
	c.mu.Lock()
	prev := c.storageErr
	c.storageErr = err
	c.mu.Unlock()
	switch {
	case err != nil && prev == nil:
		c.log.Error("shared storage does not answer; routing goes on as before, operations are refused until it does", zap.Error(err))
	case err == nil && prev != nil:
		c.log.Info("shared storage answers again")
	}
}

// beatLoop writes this proxy's heartbeat every second and reads the
// others'.
func (c *cluster) beatLoop() {
	t := time.NewTicker(beatInterval)
	defer t.Stop()
	for {
		c.beat()
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// beat writes the heartbeat: what this proxy routes to for each app (for
// the leaders' drains), which apps it leads, its config's hash.
func (c *cluster) beat() {
	if c.config.Load().(string) == "" {
		return // no config followed yet: nothing to say
	}
	m := c.manager
	hb := store.Heartbeat{
		Proxy: c.proxy, Version: version(), Config: c.config.Load().(string),
		At: time.Now().UTC(), Apps: map[string]store.AppRoute{},
	}
	apps := m.Apps()
	c.mu.Lock()
	c.seq++
	hb.Seq = c.seq
	for app, al := range c.leases {
		if al.epoch != 0 && !slices.Contains(apps, app) {
			apps = append(apps, app) // leaving the config, still led
		}
	}
	for _, app := range apps {
		r := store.AppRoute{}
		p := m.Pool(app).Load()
		seen := c.routed[app]
		if seen == nil {
			seen = map[string]bool{}
			c.routed[app] = seen
		}
		if p != nil {
			r.Release = p.Release
			for _, a := range p.Addrs {
				seen[a] = true
			}
		}
		for a := range seen {
			if p != nil && slices.Contains(p.Addrs, a) || upstreamInFlight(a) > 0 {
				r.Addrs = append(r.Addrs, a)
			} else {
				delete(seen, a)
			}
		}
		slices.Sort(r.Addrs)
		if al := c.leases[app]; al != nil && al.epoch != 0 {
			r.Leader, r.Epoch = true, al.epoch
		}
		r.Used = m.TakeTraffic(app)
		lead := 0.0
		if r.Leader {
			lead = 1
		}
		promMetrics.leading.WithLabelValues(app).Set(lead)
		hb.Apps[app] = r
	}
	for app := range c.routed {
		if _, ok := hb.Apps[app]; !ok {
			delete(c.routed, app)
			promMetrics.leading.DeleteLabelValues(app)
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, store.CallTimeout)
	defer cancel()
	err := c.beats.Beat(ctx, hb)
	var peers []store.Heartbeat
	if err == nil {
		peers, err = c.beats.Peers(ctx, peerFresh)
	}
	if c.ctx.Err() != nil {
		return
	}
	c.noteStorage(err)
	if err != nil {
		return
	}
	for _, p := range peers {
		if p.Proxy == c.proxy {
			continue
		}
		for app, r := range p.Apps {
			if r.Used && m.Leads(app) {
				m.TrafficElsewhere(app)
			}
		}
	}
	var drift []string
	for _, p := range peers {
		if p.Proxy != c.proxy && p.Config != hb.Config {
			drift = append(drift, p.Proxy)
		}
	}
	slices.Sort(drift)
	c.mu.Lock()
	c.peers = peers
	changed := !slices.Equal(drift, c.drift)
	c.drift = drift
	c.mu.Unlock()
	if changed && len(drift) > 0 {
		c.log.Warn("the podswitch config of other proxies differs from this one's: they take no lease this one leads, and this one none they lead",
			zap.Strings("proxies", drift), zap.String("config", hb.Config))
	} else if changed {
		c.log.Info("every proxy has the same podswitch config again", zap.String("config", hb.Config))
	}
}

// drifted reports whether a live proxy that leads an app has a config
// that differs from this one's: then this one takes no lease (it renews
// those it holds), so that apps go to the proxies that run the leaders'
// config until every proxy has the same one. Proxies that are gone no
// longer count: the apps are then taken whatever the config.
func (c *cluster) drifted() bool {
	own := c.config.Load().(string)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		if p.Proxy == c.proxy || p.Config == own {
			continue
		}
		for _, r := range p.Apps {
			if r.Leader {
				return true
			}
		}
	}
	return false
}

// ClusterStatus is what a proxy tells of the cluster in an app's status
// and on GET /podswitch/cluster.
type ClusterStatus struct {
	// This is this proxy's id; Cluster the cluster's (the containers'
	// podswitch.instance label).
	This    string `json:"this"`
	Cluster string `json:"cluster"`
	// Leader is the proxy that leads the app (in an app's status) and
	// Epoch its term; Leading is set when it is this one.
	Leader  string `json:"leader,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Leading bool   `json:"leading"`
	// Storage says why the shared storage does not answer, when it
	// does not.
	Storage string `json:"storage_error,omitempty"`
	// Proxies are the live proxies, this one included.
	Proxies []ProxyStatus `json:"proxies"`
	// Drift lists the proxies whose podswitch config differs from this
	// one's.
	Drift []string `json:"config_drift,omitempty"`
}

// ProxyStatus is one live proxy of the cluster.
type ProxyStatus struct {
	Proxy    string   `json:"proxy"`
	Version  string   `json:"version"`
	Config   string   `json:"config"`
	Differs  bool     `json:"differs,omitempty"`
	LeaderOf []string `json:"leader_of,omitempty"`
	Seen     string   `json:"heartbeat"`
}

// status returns the cluster as this proxy sees it; app, when set, fills
// in its leader.
func (c *cluster) status(app string) *ClusterStatus {
	own := c.config.Load().(string)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &ClusterStatus{This: c.proxy, Cluster: c.id, Proxies: []ProxyStatus{}, Drift: slices.Clone(c.drift)}
	if c.storageErr != nil {
		st.Storage = c.storageErr.Error()
	}
	for _, p := range c.peers {
		ps := ProxyStatus{Proxy: p.Proxy, Version: p.Version, Config: p.Config, Differs: p.Config != own, Seen: p.At.Format(time.RFC3339)}
		for _, a := range slices.Sorted(maps.Keys(p.Apps)) {
			if r := p.Apps[a]; r.Leader {
				ps.LeaderOf = append(ps.LeaderOf, a)
				if a == app && r.Epoch >= st.Epoch {
					st.Leader, st.Epoch = p.Proxy, r.Epoch
				}
			}
		}
		st.Proxies = append(st.Proxies, ps)
	}
	if app != "" {
		if al := c.leases[app]; al != nil && al.epoch != 0 {
			st.Leader, st.Epoch, st.Leading = c.proxy, al.epoch, true
		}
	}
	return st
}

// opsLoop carries out the operations sent to the other proxies on the
// apps this proxy leads, with one list of the storage each time for all
// apps.
func (c *cluster) opsLoop() {
	t := time.NewTicker(opsInterval)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		leads := false
		for _, app := range c.manager.Apps() {
			if c.manager.Leads(app) {
				leads = true
				break
			}
		}
		if !leads {
			continue
		}
		c.takeOps()
		if time.Since(lastSweep) > sweepInterval {
			lastSweep = time.Now()
			for _, app := range c.manager.Apps() {
				if c.manager.Leads(app) {
					ctx, cancel := context.WithTimeout(c.ctx, store.CallTimeout)
					_ = c.mailbox.Sweep(ctx, app, 10*time.Minute)
					cancel()
				}
			}
		}
	}
}

// maxRunningOps bounds the operations of other proxies a leader carries
// out at once (each may wait for its deployment's end): the next ones
// stay posted until one ends.
const maxRunningOps = 64

// sweepInterval is how often a leader deletes the answers nobody read.
const sweepInterval = time.Minute

// takeOps carries out the pending operations of the apps this proxy
// leads: each is taken (deleted) first, so that it is carried out once
// even if this proxy dies midway (its sender then gets no answer, and
// says so), then run through this proxy's own admin API, and its answer
// written for its sender.
func (c *cluster) takeOps() {
	ctx, cancel := context.WithTimeout(c.ctx, store.CallTimeout)
	defer cancel()
	ops, err := c.mailbox.PendingOf(ctx, func(app string) bool { return c.manager.Leads(app) && c.leads(app) })
	if err != nil {
		return
	}
	for _, op := range ops {
		c.mu.Lock()
		busy, full := c.running[op.ID], len(c.running) >= maxRunningOps
		if !busy && !full {
			c.running[op.ID] = true
		}
		c.mu.Unlock()
		if busy || full {
			continue // a full leader takes the rest at a later look
		}
		if err := c.mailbox.Cancel(ctx, op.App, op.ID); err != nil {
			c.mu.Lock()
			delete(c.running, op.ID)
			c.mu.Unlock()
			continue
		}
		c.bg.Go(func() { c.carryOut(op) })
	}
}

// carryOut runs op through this proxy's admin API and answers it.
func (c *cluster) carryOut(op store.Op) {
	defer func() {
		c.mu.Lock()
		delete(c.running, op.ID)
		c.mu.Unlock()
	}()
	target := op.Path
	if op.Query != "" {
		target += "?" + op.Query
	}
	req := httptest.NewRequestWithContext(c.ctx, op.Method, target, strings.NewReader(string(op.Body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, op.From)
	rec := httptest.NewRecorder()
	if err := newAdminAPI(currentManager).ServeHTTP(rec, req); err != nil {
		code, msg := http.StatusInternalServerError, err.Error()
		var ae caddy.APIError
		if errors.As(err, &ae) {
			code, msg = ae.HTTPStatus, ae.Message
		}
		rec = httptest.NewRecorder()
		_ = writeJSON(rec, code, map[string]string{"error": msg})
	}
	c.log.Info("carried out an operation sent to another proxy", zap.String("app", op.App), zap.String("op", op.Method+" "+op.Path),
		zap.String("from", op.From), zap.Int("status", rec.Code))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), store.CallTimeout)
	defer cancel()
	if err := c.mailbox.Answer(ctx, op.App, store.Result{ID: op.ID, Status: rec.Code, Body: rec.Body.Bytes(), By: c.proxy, At: time.Now().UTC()}); err != nil {
		c.log.Warn("answering an operation sent to another proxy failed", zap.String("app", op.App), zap.Error(err))
	}
}

// forward sends an operation on app, made on this proxy, to the app's
// leader through the shared storage and writes its answer.
func (c *cluster) forward(w http.ResponseWriter, r *http.Request, app string) error {
	if r.Header.Get(forwardedHeader) != "" {
		return apiErr(http.StatusServiceUnavailable, "this proxy no longer leads app %s; send the operation again", app)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodySize))
	if err != nil {
		return bodyErr(err)
	}
	op := store.Op{App: app, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body, From: c.proxy, At: time.Now().UTC()}
	pctx, cancel := context.WithTimeout(r.Context(), store.CallTimeout)
	id, err := c.mailbox.Post(pctx, op)
	cancel()
	if err != nil {
		return apiErr(http.StatusServiceUnavailable, "shared storage unavailable, so the operation could not be sent to the leader of app %s: %v", app, err)
	}
	ctx := r.Context()
	if r.URL.Query().Get("wait") == "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, forwardTimeout)
		defer cancel()
	}
	res, err := c.mailbox.Await(ctx, app, id, 100*time.Millisecond)
	if err != nil {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(r.Context()), store.CallTimeout)
		_ = c.mailbox.Cancel(dctx, app, id)
		dcancel()
		if r.Context().Err() != nil {
			return r.Context().Err()
		}
		return apiErr(http.StatusGatewayTimeout, "the leader of app %s did not answer the operation within %s (it may have carried it out: see the app's status)", app, forwardTimeout)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Podswitch-Carried-Out-By", res.By)
	w.WriteHeader(res.Status)
	_, _ = w.Write(res.Body)
	return nil
}

// statusKey is where the leader of app publishes its status.
func statusKey(app string) string { return "podswitch/apps/" + app + "/status.json" }

// statusLoop publishes, for the other proxies, the status of each app this
// proxy leads whenever it changed (at most every statusInterval).
func (c *cluster) statusLoop() {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		for _, app := range c.manager.Apps() {
			s := c.manager.App(app)
			if s == nil || !c.leads(app) {
				continue // only the leader, while its term runs
			}
			b, err := json.Marshal(s.Status())
			if err != nil {
				continue
			}
			c.mu.Lock()
			// A term of its own: another leader may have published since
			// this one's last term.
			key := app
			if al := c.leases[app]; al != nil {
				key = fmt.Sprintf("%s@%d", app, al.epoch)
			}
			same := string(c.published[key]) == string(b)
			c.mu.Unlock()
			if same {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, store.CallTimeout)
			err = c.st.Store(ctx, statusKey(app), b)
			cancel()
			if err == nil {
				c.mu.Lock()
				c.published[key] = b
				c.mu.Unlock()
			}
		}
	}
}

// leaderStatus returns the status app's leader published.
func (c *cluster) leaderStatus(ctx context.Context, app string) (engine.AppStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, store.CallTimeout)
	defer cancel()
	var st engine.AppStatus
	b, err := c.st.Load(ctx, statusKey(app))
	if errors.Is(err, fs.ErrNotExist) {
		return engine.AppStatus{Name: app, Containers: []engine.ContainerStatus{}, Deployments: []engine.Deployment{}, Processes: map[string]int{}}, nil
	}
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(b, &st)
	return st, err
}

// version returns the version of the running binary, for the heartbeat.
func version() string {
	_, full := caddy.Version()
	return full
}

// currentCluster returns the cluster of the running podswitch, nil when it
// runs alone.
func currentCluster() *cluster {
	if h := currentHost(); h != nil {
		return h.cluster
	}
	return nil
}

// clusterAppStatus is an app's status on a proxy of several: the leader's
// view of the app, and the cluster as this proxy sees it.
type clusterAppStatus struct {
	engine.AppStatus
	Cluster *ClusterStatus `json:"cluster"`
}

// appStatus returns app's status: this proxy's own when it leads the app,
// else the one its leader published.
func appStatus(ctx context.Context, m *engine.Manager, c *cluster, app string) (clusterAppStatus, error) {
	if s := m.App(app); s != nil {
		return clusterAppStatus{AppStatus: s.Status(), Cluster: c.status(app)}, nil
	}
	st, err := c.leaderStatus(ctx, app)
	if err != nil {
		return clusterAppStatus{}, apiErr(http.StatusServiceUnavailable, "shared storage unavailable, so the status of app %s, which another proxy leads, could not be read: %v", app, err)
	}
	st.Name = app
	if st.Paused != nil {
		// The requests this proxy holds, not the leader's.
		st.Paused.Held = m.Pool(app).Held()
	}
	return clusterAppStatus{AppStatus: st, Cluster: c.status(app)}, nil
}

// followed answers a request on an app another proxy leads: what is read
// comes from the status the leader published, what changes is carried
// out by the leader.
func (a *adminAPI) followed(w http.ResponseWriter, r *http.Request, m *engine.Manager, c *cluster, app string) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return c.forward(w, r, app)
	}
	base := "/podswitch/apps/" + app
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == base:
		st, err := appStatus(r.Context(), m, c, app)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, st)
	case path == base+"/deployments":
		st, err := appStatus(r.Context(), m, c, app)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, st.Deployments)
	case strings.HasPrefix(path, base+"/deployments/"):
		v := r.PathValue("id")
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			return apiErr(http.StatusBadRequest, "deployment id %q: want a positive whole number", v)
		}
		// A deployment the leader started a moment ago shows in the
		// status it publishes a moment later.
		for deadline := time.Now().Add(8 * statusInterval); ; {
			st, err := appStatus(r.Context(), m, c, app)
			if err != nil {
				return err
			}
			for _, d := range st.Deployments {
				if d.ID == id {
					return writeJSON(w, http.StatusOK, d)
				}
			}
			if time.Now().After(deadline) || r.Context().Err() != nil {
				break
			}
			time.Sleep(statusInterval / 2)
		}
		ctx, cancel := context.WithTimeout(r.Context(), store.CallTimeout)
		defer cancel()
		past, err := c.history.Read(ctx, app)
		if err != nil {
			return apiErr(http.StatusServiceUnavailable, "shared storage unavailable: %v", err)
		}
		for _, d := range past {
			if d.ID == id {
				return writeJSON(w, http.StatusOK, d)
			}
		}
		return apiErr(http.StatusNotFound, "app %s has no deployment %d", app, id)
	}
	if r.URL.Query().Get("follow") != "" {
		st := c.status(app)
		return apiErr(http.StatusConflict, "app %s is led by proxy %s: follow its logs there", app, st.Leader)
	}
	return c.forward(w, r, app)
}

// statusOf returns app's status for a page: this proxy's own when it
// leads the app (or runs alone), else the one its leader published; false
// when the app is not in the running config or that status cannot be
// read.
func statusOf(m *engine.Manager, app string) (engine.AppStatus, bool) {
	if s := m.App(app); s != nil {
		return s.Status(), true
	}
	c := currentCluster()
	if c == nil || !m.Follows(app) {
		return engine.AppStatus{}, false
	}
	st, err := c.leaderStatus(context.Background(), app)
	if err != nil {
		return engine.AppStatus{}, false
	}
	st.Name = app
	return st, true
}
