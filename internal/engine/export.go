package engine

// StorePoolForTest installs a pool as a deployment would. It exists for the
// tests and benchmarks of the packages that read pools.
func StorePoolForTest(r *PoolRef, release string, addrs []string) { r.store(release, addrs) }

// SetMaxHeldForTest sets how many requests a pause of r holds at once
// (MaxHeld by default). Call it before any request comes.
func SetMaxHeldForTest(r *PoolRef, n int64) { r.maxHeld = n }
