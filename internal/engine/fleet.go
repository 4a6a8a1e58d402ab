package engine

import (
	"iter"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// fleet is the bookkeeping of one app's containers: the containers the
// supervisor knows, the names being created, those removed lately, and
// the traffic pool the ready web ones make. It is the one place where a
// container's state changes (setState) and where the pool is swapped
// (publish). It has no lock of its own: the supervisor's lock guards it,
// and the supervisor's unlock publishes.
type fleet struct {
	log  *zap.Logger
	pool *PoolRef
	// changed tells observers that something users see of the app
	// changed.
	changed func()

	// byID are the containers the supervisor knows, by ID, until they
	// are removed.
	byID map[string]*Container
	// creating holds the containers being created (and hooks running),
	// by name, which a resync must not take for leftovers; each with
	// where it is placed, which placement counts.
	creating map[string]placed
	// gone holds the containers removed lately, which a list taken before
	// their removal still shows.
	gone map[string]time.Time
	// dirty is set when the pool must be rebuilt: the next publish swaps
	// it in, once, so that a switch of many containers is one atomic step.
	dirty bool
	// noImage holds, by release, the hosts where a create found the
	// release's image missing: placement passes them over.
	noImage map[string]map[string]bool
	// readyChanged is set when a container entered or left ready: the
	// record of hosted containers may have to follow.
	readyChanged bool
	// allUnhealthy is set while every ready web container fails its
	// health check (the pool keeps them all).
	allUnhealthy bool
	// canaryRelease and canaryRules are the canary in service, if any
	// (canaryRules nil when there is none); canaryClients counts its new
	// clients across publishes, so that a new pool keeps the share even.
	canaryRelease string
	canaryRules   *CanaryRules
	canaryClients *atomic.Uint64
}

func newFleet(log *zap.Logger, pool *PoolRef, changed func()) fleet {
	return fleet{
		log: log, pool: pool, changed: changed,
		byID: map[string]*Container{}, creating: map[string]placed{}, gone: map[string]time.Time{},
	}
}

// add records c, which the supervisor did not know, and moves it to its
// first state.
func (f *fleet) add(c *Container, to State, note string) {
	f.byID[c.ID] = c
	f.setState(c, to, note)
}

// remove moves c, which the runtime removed, to stopped and forgets it;
// it stays noted as gone for a while, since a list taken before its
// removal still shows it.
func (f *fleet) remove(c *Container, note string) {
	f.setState(c, StateStopped, note)
	delete(f.byID, c.ID)
	f.gone[c.ID] = time.Now()
}

// get returns the container of ID id, or nil.
func (f *fleet) get(id string) *Container { return f.byID[id] }

// count returns how many containers the supervisor knows.
func (f *fleet) count() int { return len(f.byID) }

// all yields every container known, in no order.
func (f *fleet) all() iter.Seq[*Container] { return maps.Values(f.byID) }

// filter returns the containers for which keep is true, in no order.
func (f *fleet) filter(keep func(*Container) bool) []*Container {
	var cs []*Container
	for _, c := range f.byID {
		if keep(c) {
			cs = append(cs, c)
		}
	}
	return cs
}

// readyWeb returns the ready web containers that have an address: those
// the pool is made of, and those the health check looks at.
func (f *fleet) readyWeb() []*Container {
	return f.filter(func(c *Container) bool {
		return c.state == StateReady && c.Process == WebProcess && c.Addr != ""
	})
}

// empty reports whether no container is known nor being created.
func (f *fleet) empty() bool { return len(f.byID) == 0 && len(f.creating) == 0 }

// placed is where a container being created goes: its host (of several),
// process type and release.
type placed struct{ host, process, release string }

// markCreating notes that a container (or hook) of that name is being
// created, placed at p; doneCreating that it exists, or will not.
func (f *fleet) markCreating(name string, p placed) { f.creating[name] = p }

func (f *fleet) doneCreating(name string) { delete(f.creating, name) }

// isCreating reports whether a container of that name is being created.
func (f *fleet) isCreating(name string) bool {
	_, ok := f.creating[name]
	return ok
}

// lacksImage notes that host lacks the image of release.
func (f *fleet) lacksImage(release, host string) {
	if f.noImage == nil {
		f.noImage = map[string]map[string]bool{}
	}
	if f.noImage[release] == nil {
		f.noImage[release] = map[string]bool{}
	}
	f.noImage[release][host] = true
}

// onHost counts the containers of process type process and release on
// host: those live (but those waiting for their replacement) and those
// being created. Placement spreads a type by
// it.
func (f *fleet) onHost(host, process, release string) int {
	n := 0
	for _, c := range f.byID {
		if c.state.live() && !c.replacing && c.Process == process && c.Release == release && HostOf(c.ID) == host {
			n++
		}
	}
	for _, p := range f.creating {
		if p.host == host && p.process == process && p.release == release {
			n++
		}
	}
	return n
}

// wasGone reports whether container id was removed lately.
func (f *fleet) wasGone(id string) bool {
	_, ok := f.gone[id]
	return ok
}

// expireGone forgets the containers removed well before a list taken at
// listedAt: no list still shows them.
func (f *fleet) expireGone(listedAt time.Time) {
	for id, at := range f.gone {
		if listedAt.Sub(at) > 2*resyncInterval {
			delete(f.gone, id)
		}
	}
}

// setState moves c to state to, with the supervisor's lock held. It is the
// one place where a container's state changes: it refuses a transition the
// state machine does not have, records the change in the container's
// timeline, logs it, and marks the traffic pool for a rebuild when a web
// container enters or leaves ready (the pool is swapped once, at publish,
// so that a switch of many containers is one atomic step). It reports
// whether the state changed.
func (f *fleet) setState(c *Container, to State, note string) bool {
	from := c.state
	if from == to {
		return false
	}
	if !slices.Contains(next[from], to) {
		f.log.Error("refused container state change", zap.String("container", c.ID),
			zap.String("from", string(from)), zap.String("to", string(to)), zap.String("note", note))
		return false
	}
	c.state = to
	c.timeline = append(c.timeline, Transition{State: to, At: time.Now(), Note: note})
	if c.Process == WebProcess && (from == StateReady || to == StateReady) {
		f.dirty = true
	}
	if from == StateReady || to == StateReady {
		f.readyChanged = true
	}
	if to != StateStarting {
		c.cancelBoot()
	}
	fields := []zap.Field{zap.String("container", shortID(c.ID)), zap.String("process", c.Process),
		zap.String("release", c.Release), zap.String("from", string(from)), zap.String("to", string(to))}
	if note != "" {
		fields = append(fields, zap.String("note", note))
	}
	lvl := zap.InfoLevel
	if to == StateCrashed {
		lvl = zap.WarnLevel
	}
	if ce := f.log.Check(lvl, "container state changed"); ce != nil {
		ce.Write(fields...)
	}
	f.changed()
	return true
}

// markPoolDirty asks for the pool to be rebuilt at the next publish: a
// container's health or the serving release changed.
func (f *fleet) markPoolDirty() { f.dirty = true }

// publish swaps in a pool of release's ready web containers if something
// asked for one since the last publish. A container that stopped
// answering health checks is left out, unless none answers: then the pool
// keeps them all rather than none.
func (f *fleet) publish(release string) {
	if !f.dirty {
		return
	}
	f.dirty = false
	var ready, reachable, canary []*Container
	for _, c := range f.readyWeb() {
		switch {
		case c.canary:
			if !c.unhealthy {
				canary = append(canary, c)
			}
		case !c.unhealthy:
			reachable = append(reachable, c)
			fallthrough
		default:
			ready = append(ready, c)
		}
	}
	f.noteAllUnhealthy(len(ready), len(reachable))
	if len(reachable) > 0 {
		ready = reachable
	}
	slices.SortFunc(ready, byStart)
	f.pool.store(release, addrsOf(ready), f.canaryPool(canary))
}

// addrsOf returns the dial addresses of cs.
func addrsOf(cs []*Container) []string {
	addrs := make([]string, len(cs))
	for i, c := range cs {
		addrs[i] = c.Addr
	}
	return addrs
}

// canaryPool returns the canary the request path reads, with cs as its
// containers, or nil when there is no canary in service.
func (f *fleet) canaryPool(cs []*Container) *Canary {
	if f.canaryRules == nil {
		return nil
	}
	slices.SortFunc(cs, byStart)
	return &Canary{Release: f.canaryRelease, Addrs: addrsOf(cs), CanaryRules: *f.canaryRules, clients: f.canaryClients}
}

// setCanary sets the canary in service (nil rules: none) and marks the
// pool for a rebuild.
func (f *fleet) setCanary(release string, rules *CanaryRules) {
	// The hosted containers of the record list the canary's.
	f.readyChanged = true
	if rules != nil && (f.canaryClients == nil || f.canaryRelease != release) {
		f.canaryClients = new(atomic.Uint64)
	}
	if rules != nil {
		r := *rules
		rules = &r
	}
	f.canaryRelease, f.canaryRules = release, rules
	f.dirty = true
}

// noteAllUnhealthy notes whether every ready web container fails its check
// (the pool then keeps them all): a warning once per episode.
func (f *fleet) noteAllUnhealthy(ready, healthy int) {
	all := ready > 0 && healthy == 0
	if all == f.allUnhealthy {
		return
	}
	f.allUnhealthy = all
	if all {
		f.log.Warn("every web container fails its health check: traffic goes to all of them rather than none", zap.Int("containers", ready))
	} else {
		f.log.Info("a web container passes its health check again: traffic goes to the healthy ones only")
	}
	f.changed()
}
