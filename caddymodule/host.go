package caddymodule

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/store"
)

// host is podswitch's process-wide state: the engine and what it shares
// across config reloads (the Podman runtime, the deployment history, the
// app records, the notify target and the logger of the config the engine
// follows). There is one at a time, reference-counted by the podswitch
// apps of the configs Caddy has loaded, in a caddy.UsagePool as reverse
// proxy keeps its hosts. It must not be copied.
type host struct {
	manager *engine.Manager
	runtime *switchRuntime
	// hostSet holds the Podman hosts of a config with host blocks (none
	// with a lone podman).
	hostSet *engine.HostSet
	history interface {
		engine.History
		Close()
	}
	// cluster is this proxy's part in a cluster of proxies sharing
	// Caddy's storage (shared), nil when podswitch runs alone.
	cluster *cluster
	shared  *swapStorage
	logCore *swapCore
	target  atomic.Pointer[notifyTarget]
	// changes tells live views (the dashboard) which apps changed.
	changes *changeFeed
	// lockErr is set when the data dir could not be locked (another
	// process uses it): then the host never runs an app.
	lockErr error
	// stopped is closed once the host is done with the apps' containers,
	// and not before prev, the previous host's, is.
	stopped chan struct{}
	prev    <-chan struct{}

	mu        sync.Mutex
	committed *App
}

var (
	hosts = caddy.NewUsagePool()
	// lastStopped is closed when the previous host is done with the
	// apps: a new host's apps wait for it, so that an app has one owner at
	// a time even when podswitch leaves the config and comes back.
	lastStopped atomic.Pointer[chan struct{}]
)

const hostKey = "podswitch"

// acquireHost returns the host, making it if there is none, and takes a
// reference on it.
func acquireHost(log *zap.Logger, shared certmagic.Storage) (*host, error) {
	v, _, err := hosts.LoadOrNew(hostKey, func() (caddy.Destructor, error) { return newHost(log, shared), nil })
	if err != nil {
		return nil, err
	}
	return v.(*host), nil
}

// releaseHost drops a reference; the last one destructs the host.
func releaseHost() { _, _ = hosts.Delete(hostKey) }

// newHost makes the host. It first takes the lock on the data dir, held
// until the host is done (close), across reloads. When another process
// holds it (or the instance id cannot be had), the host keeps the error
// and App.Start returns it: `caddy run` fails with it and a reload is
// refused, while `caddy validate`, which provisions but never starts,
// still works next to a running server.
func newHost(log *zap.Logger, shared certmagic.Storage) *host {
	dir := filepath.Join(caddy.AppDataDir(), "podswitch")
	var instance string
	err := dirLock.acquire(dir)
	if err == nil {
		if instance, err = instanceID(dir); err != nil {
			dirLock.release()
		}
	}
	h := &host{
		lockErr: err,
		runtime: new(switchRuntime),
		logCore: newSwapCore(log.Core()),
		stopped: make(chan struct{}),
		changes: newChangeFeed(),
	}
	var records engine.Store
	var leadership engine.Leadership
	owner := instance
	if shared != nil && err == nil {
		// Several proxies: the records, the history, the release key and
		// the owner of the containers are the cluster's.
		h.shared = new(swapStorage)
		h.shared.set(shared)
		f, created, jerr := joinCluster(context.Background(), h.shared, instance, localReleaseKey())
		if jerr != nil {
			err = jerr
			h.lockErr = err
			dirLock.release()
		} else {
			if created {
				migrateAlone(h.shared, dir, log.Named("podswitch.cluster"))
			}
			key, kerr := base64.StdEncoding.DecodeString(f.ReleaseKey)
			if kerr == nil && len(key) >= 16 {
				engine.SetReleaseKey(key)
			}
			h.cluster = newCluster(h.shared, instance, f, zap.New(h.logCore).Named("podswitch.cluster"))
			h.history, records, leadership, owner = h.cluster.history, h.cluster.records, h.cluster, f.ID
		}
	}
	if h.cluster == nil {
		setReleaseKey(log)
		h.history = store.NewHistory(filepath.Join(dir, "history"), log.Named("history"))
		records = store.NewRecords(filepath.Join(dir, "state"))
	}
	h.hostSet = engine.NewHostSet(zap.New(h.logCore).Named("podswitch.hosts"))
	h.hostSet.OnState(h.hostChanged)
	h.manager = engine.NewManager(engine.Deps{
		Runtime:     h.runtime,
		Hosts:       h.hostSet,
		Prober:      engine.TCPProber{},
		Logger:      zap.New(h.logCore).Named("podswitch"),
		Notify:      h.notify,
		History:     h.history,
		Store:       records,
		ResolveEnv:  resolveEnv,
		InFlight:    upstreamInFlight,
		ObserveBoot: promMetrics.observeBoot,
		ObserveWake: promMetrics.observeWake,
		Changed:     h.changes.publish,
		Instance:    owner,
		Leadership:  leadership,
	})
	if h.cluster != nil {
		h.cluster.start(h.manager)
	}
	err = h.lockErr
	if err != nil {
		// This host never runs an app: it is not the previous host of
		// the next one.
		close(h.stopped)
		return h
	}
	if prev := lastStopped.Swap(&h.stopped); prev != nil {
		h.prev = *prev
		h.manager.After(h.prev)
	}
	log.Info("podswitch data dir locked", zap.String("dir", dir), zap.String("instance", instance))
	if h.cluster != nil {
		log.Info("podswitch shares its state with other proxies through caddy's storage", zap.String("proxy", instance), zap.String("cluster", owner))
	}
	return h
}

// notify hands an engine event to the metrics and to the notify target of
// the config the engine follows.
func (h *host) notify(ev engine.Event) {
	promMetrics.observe(ev)
	if t := h.target.Load(); t != nil {
		t.notify(ev)
	}
}

// commitWhenActive makes the engine follow a's config once Caddy runs it,
// or gives up when a is cleaned up first (Caddy refused its config).
func (h *host) commitWhenActive(a *App) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for h.commitActive() != a {
		select {
		case <-a.done:
			return
		case <-t.C:
		}
	}
}

// commitActive makes the engine follow the running config, if it has a
// podswitch app the engine does not follow yet, and returns the app it
// follows.
func (h *host) commitActive() *App {
	// Under h.mu, so that a caller that read an older running config
	// cannot commit it after a newer one was committed.
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lockErr != nil {
		return nil
	}
	v, err := caddy.ActiveContext().AppIfConfigured("podswitch")
	a, _ := v.(*App)
	if err != nil || a == nil || a.host != h || h.committed == a {
		return h.committed
	}
	h.committed = a
	h.logCore.set(a.logger.Core())
	h.target.Store(a.notify)
	if h.cluster != nil {
		h.cluster.follow(a)
	}
	h.useRuntime(a)
	h.manager.Apply(a.specs)
	h.changes.publish("") // the list of apps may have changed
	return a
}

// useRuntime makes the engine run a's containers where a says: on its
// hosts, or on its one Podman service. Hosts that cannot be set up (a key
// file gone since the config was checked) keep the previous ones.
func (h *host) useRuntime(a *App) {
	if len(a.Hosts) == 0 {
		for _, n := range h.hostSet.Names() {
			promMetrics.forgetHost(n)
		}
		h.hostSet.Update(nil, 0)
		h.runtime.setPodman(a.Podman)
		return
	}
	cfgs, err := a.hostConfigs(a.logger)
	if err != nil {
		a.logger.Error("podman hosts could not be set up; the previous ones are kept", zap.Error(err))
	} else {
		before := h.hostSet.Names()
		h.hostSet.Update(cfgs, time.Duration(a.HostDownAfter))
		for _, n := range before {
			if a.Hosts[n] == nil {
				promMetrics.forgetHost(n)
			}
		}
	}
	h.runtime.set("hosts", h.hostSet)
	for _, st := range h.hostSet.Statuses() {
		promMetrics.observeHost(st)
	}
}

// committedApp returns the config the engine follows, if any.
func (h *host) committedApp() *App {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.committed
}

// hostChanged tells the apps that run on a host that its state changed:
// a notification (event host) for each, the metrics and the dashboard.
func (h *host) hostChanged(st engine.HostStatus, from engine.HostState) {
	promMetrics.observeHost(st)
	h.mu.Lock()
	a := h.committed
	h.mu.Unlock()
	if a != nil {
		for _, spec := range a.specs {
			if len(spec.Hosts) > 0 && !slices.Contains(spec.Hosts, st.Name) {
				continue
			}
			h.notify(engine.Event{Name: engine.EventHost, App: spec.Name, Host: st.Name, Message: hostMessage(st, from), Time: time.Now()})
		}
	}
	h.changes.publish("")
}

// hostMessage says what a host's new state means for its apps.
func hostMessage(st engine.HostStatus, from engine.HostState) string {
	switch st.State {
	case engine.HostUp:
		return fmt.Sprintf("host %s is up again (was %s): it takes new containers", st.Name, from)
	case engine.HostUnmanaged:
		return fmt.Sprintf("host %s: its Podman API does not answer (%s); its containers keep serving, nothing new goes there and nothing is replaced", st.Name, st.APIError)
	case engine.HostUnreachable:
		return fmt.Sprintf("host %s: its containers do not answer; they are out of the pool and are replaced on other hosts if it stays so", st.Name)
	case engine.HostLost:
		return fmt.Sprintf("host %s is lost: its containers are being replaced on the other hosts; when it comes back they are stopped once their replacements serve", st.Name)
	}
	return fmt.Sprintf("host %s is %s", st.Name, st.State)
}

// Destruct is called when the last config with podswitch is unloaded. If
// Caddy is exiting, or no config ever ran (a first start that failed, a
// validation), the apps keep running for the next start to adopt;
// otherwise podswitch left the running config and every app is drained
// and stopped, in the background so that the reload returns promptly.
func (h *host) Destruct() error {
	h.mu.Lock()
	committed := h.committed != nil
	h.mu.Unlock()
	// The config unloaded has closed its logs and stopped its events app:
	// what the engine still says goes to Caddy's default log, and no
	// event is sent to that config's targets.
	h.logCore.set(caddy.Log().Core())
	h.target.Store(nil)
	if caddy.Exiting() || !committed || caddy.ActiveContext().Context == nil {
		h.close()
		return nil
	}
	h.manager.Apply(nil)
	go func() {
		h.manager.Wait()
		h.close()
	}()
	return nil
}

func (h *host) close() {
	h.manager.Close()
	if h.cluster != nil {
		h.cluster.close()
	}
	h.hostSet.Close()
	h.history.Close()
	if h.lockErr != nil {
		return
	}
	// A host that never ran (a refused config) is done only once the
	// host before it is: the next one must not start while that one
	// still stops the apps' containers.
	go func() {
		if h.prev != nil {
			<-h.prev
		}
		close(h.stopped)
		dirLock.release()
	}()
}

// currentHost returns the host, or nil when no config has podswitch.
func currentHost() *host {
	var h *host
	hosts.Range(func(_, v any) bool {
		h, _ = v.(*host)
		return false
	})
	return h
}

// currentManager returns the engine, or nil when no config has podswitch.
// It first makes the engine follow the running config if it does not yet
// (the poller of App.Start may not have seen it), so that an admin request
// right after a config load sees that config's apps.
func currentManager() *engine.Manager {
	if h := currentHost(); h != nil {
		h.commitActive()
		return h.manager
	}
	return nil
}

// Interface guards
var _ caddy.Destructor = (*host)(nil)
