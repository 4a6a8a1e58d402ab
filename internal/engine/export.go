package engine

import "sync/atomic"

// StorePoolForTest installs a pool as a deployment would. It exists for the
// tests and benchmarks of the packages that read pools.
func StorePoolForTest(r *PoolRef, release string, addrs []string) { r.store(release, addrs, nil) }

// SetMaxHeldForTest sets how many requests a pause of r holds at once
// (MaxHeld by default). Call it before any request comes.
func SetMaxHeldForTest(r *PoolRef, n int64) { r.maxHeld = n }

// SetGateForTest installs g as r's gate (nil lifts it), as a pause,
// maintenance or a sleep would. It exists for the tests of the packages
// that answer for gates; a gate built outside the engine has no
// supervisor to wake.
func SetGateForTest(r *PoolRef, g *Gate) { r.setGate(g) }

// NewCanaryForTest returns a canary of release at addrs with rules, as the
// request path reads it.
func NewCanaryForTest(release string, addrs []string, rules CanaryRules) *Canary {
	return &Canary{Release: release, Addrs: addrs, CanaryRules: rules, clients: new(atomic.Uint64)}
}

// StoreCanaryPoolForTest installs a pool with a canary, as a canary in
// service would.
func StoreCanaryPoolForTest(r *PoolRef, release string, addrs []string, c *Canary) {
	r.store(release, addrs, c)
}
