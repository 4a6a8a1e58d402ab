package engine

// StorePoolForTest installs a pool as a deployment would. It exists for the
// tests and benchmarks of the packages that read pools.
func StorePoolForTest(r *PoolRef, release string, addrs []string) { r.store(release, addrs) }
