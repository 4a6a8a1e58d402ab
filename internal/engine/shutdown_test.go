package engine

import (
	"testing"
	"testing/synctest"
	"time"
)

// A clean exit during a deployment keeps it recorded as on its way, with
// its containers as retiring: the next start begins it again.
func TestRegressionExitKeepsDeploying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 2))
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		s.Update(appSpecKept(t, "localhost/blog:v2", 2))
		settle(time.Second)
		if r := store.get(appName); r.Deploying == nil {
			t.Fatal("no deploying before exit")
		}
		h.m.Close()
		synctest.Wait()
		r := store.get(appName)
		t.Logf("after exit: deploying=%v retiring=%v", r.Deploying, r.Retiring)
		if r.Deploying == nil {
			t.Errorf("exit erased the deploying record: the next start does not know the deploy was interrupted")
		}
	})
}
