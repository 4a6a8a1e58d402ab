package engine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// holdAll starts n requests through r's gate and returns the channel that
// gets their verdicts.
func holdAll(ctx context.Context, r *PoolRef, n int, release <-chan struct{}) <-chan Verdict {
	out := make(chan Verdict, n)
	for range n {
		go func() {
			_, v := r.Pass(ctx, release)
			out <- v
		}()
	}
	return out
}

// verdicts takes n verdicts from ch, which must all have come.
func verdicts(t *testing.T, ch <-chan Verdict, n int) map[Verdict]int {
	t.Helper()
	got := map[Verdict]int{}
	for range n {
		select {
		case v := <-ch:
			got[v]++
		default:
			t.Fatalf("%d of %d held requests still wait (got %v)", n-len(got), n, got)
		}
	}
	return got
}

// A pause holds at most maxHeld requests: the next one is answered Full at
// once, without being counted; the held ones go on at resume and the count
// goes back to zero.
func TestPauseHoldsAtMostMaxHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newPoolRef()
		r.maxHeld = 3
		r.setGate(&Gate{Timeout: time.Minute, RetryAfter: time.Second})
		held := holdAll(context.Background(), r, 3, nil)
		synctest.Wait()
		if n := r.Held(); n != 3 {
			t.Fatalf("held %d, want 3", n)
		}
		if g, v := r.Pass(context.Background(), nil); v != Full || g == nil || g.RetryAfter != time.Second {
			t.Errorf("a 4th request: verdict %d, gate %+v; want Full with the pause's gate", v, g)
		}
		if n := r.Held(); n != 3 {
			t.Errorf("held %d after a refused request, want 3", n)
		}
		r.setGate(nil)
		synctest.Wait()
		if got := verdicts(t, held, 3); got[Through] != 3 {
			t.Errorf("verdicts at resume %v, want 3 Through", got)
		}
		if n := r.Held(); n != 0 {
			t.Errorf("held %d after resume, want 0", n)
		}
		// A request that was refused takes no slot: after resume and a
		// new pause, three are held again.
		r.setGate(&Gate{Timeout: time.Minute})
		held = holdAll(context.Background(), r, 3, nil)
		synctest.Wait()
		if n := r.Held(); n != 3 {
			t.Errorf("held %d in the second pause, want 3", n)
		}
		r.setGate(nil)
		synctest.Wait()
		verdicts(t, held, 3)
	})
}

// The default bound is MaxHeld.
func TestPauseDefaultBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newPoolRef()
		r.setGate(&Gate{Timeout: time.Minute})
		held := holdAll(context.Background(), r, MaxHeld, nil)
		synctest.Wait()
		if _, v := r.Pass(context.Background(), nil); v != Full || r.Held() != MaxHeld {
			t.Errorf("request %d: verdict %d with %d held; want Full with %d", MaxHeld+1, v, r.Held(), MaxHeld)
		}
		r.setGate(nil)
		synctest.Wait()
		verdicts(t, held, MaxHeld)
	})
}

// The caller's release (its server shuts down) answers its held requests
// Released at once, not those of another caller (another server); the
// count goes back down.
func TestPauseReleasedByCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newPoolRef()
		r.setGate(&Gate{Timeout: time.Hour})
		mine, other := make(chan struct{}), make(chan struct{})
		heldMine := holdAll(context.Background(), r, 2, mine)
		heldOther := holdAll(context.Background(), r, 1, other)
		synctest.Wait()
		close(mine)
		synctest.Wait()
		if got := verdicts(t, heldMine, 2); got[Released] != 2 {
			t.Errorf("verdicts after release %v, want 2 Released", got)
		}
		if n := r.Held(); n != 1 {
			t.Errorf("held %d, want the other server's 1", n)
		}
		if _, v := r.Pass(context.Background(), mine); v != Released {
			t.Errorf("a request after the release: verdict %d, want Released", v)
		}
		r.setGate(nil)
		synctest.Wait()
		if got := verdicts(t, heldOther, 1); got[Through] != 1 {
			t.Errorf("the other server's request: %v, want Through at resume", got)
		}
	})
}

// A manager that closes (the process exits, podswitch leaves the config)
// releases every held request, and answers Released to those that come
// after.
func TestPauseReleasedByManagerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 1))
		ref := h.m.Pool(appName)
		if err := s.Pause(time.Hour); err != nil {
			t.Fatal(err)
		}
		held := holdAll(context.Background(), ref, 2, nil)
		synctest.Wait()
		if p := s.Status().Paused; p == nil || p.Held != 2 || p.MaxHeld != MaxHeld {
			t.Fatalf("status of the pause %+v, want 2 held of %d", p, MaxHeld)
		}
		h.shutdown()
		synctest.Wait()
		if got := verdicts(t, held, 2); got[Released] != 2 {
			t.Errorf("verdicts after Close %v, want 2 Released", got)
		}
		if _, v := ref.Pass(context.Background(), nil); v != Released {
			t.Errorf("a request after Close: verdict %d, want Released", v)
		}
	})
}

// Maintenance answers at once and holds nothing; a pause turned into
// maintenance answers its held requests InMaintenance; a pause's timeout
// and a client that leaves end the hold, each with its verdict.
func TestPauseVerdicts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newPoolRef()
		if g, v := r.Pass(context.Background(), nil); g != nil || v != Through {
			t.Errorf("no gate: %+v %d", g, v)
		}
		r.setGate(&Gate{Maintenance: true, Message: "away"})
		if g, v := r.Pass(context.Background(), nil); v != InMaintenance || g.Message != "away" || r.Held() != 0 {
			t.Errorf("maintenance: %+v %d, held %d", g, v, r.Held())
		}
		r.setGate(&Gate{Timeout: time.Hour})
		held := holdAll(context.Background(), r, 1, nil)
		synctest.Wait()
		r.setGate(&Gate{Maintenance: true, Message: "away"})
		synctest.Wait()
		if got := verdicts(t, held, 1); got[InMaintenance] != 1 {
			t.Errorf("a pause turned into maintenance: %v", got)
		}

		r.setGate(&Gate{Timeout: 10 * time.Second})
		start := time.Now()
		if _, v := r.Pass(context.Background(), nil); v != TimedOut || time.Since(start) != 10*time.Second {
			t.Errorf("timeout: verdict %d after %v, want TimedOut after 10s", v, time.Since(start))
		}
		ctx, cancel := context.WithCancel(context.Background())
		held = holdAll(ctx, r, 1, nil)
		synctest.Wait()
		cancel()
		synctest.Wait()
		if got := verdicts(t, held, 1); got[ClientGone] != 1 || r.Held() != 0 {
			t.Errorf("a client that left: %v, held %d", got, r.Held())
		}
	})
}
