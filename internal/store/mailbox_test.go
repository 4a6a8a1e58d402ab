package store

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"
)

// Operations are posted, listed oldest first, cancelled or answered; the
// poster awaits the answer, which is deleted once read.
func TestMailbox(t *testing.T) {
	eachStorage(t, func(t *testing.T, st Storage) {
		ctx := context.Background()
		m := NewMailbox(st)
		t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		if ops, err := m.Pending(ctx, "blog"); err != nil || len(ops) != 0 {
			t.Fatalf("Pending of an empty mailbox = %v, %v", ops, err)
		}
		for _, op := range []Op{
			{ID: "c", App: "blog", Method: "POST", Path: "/podswitch/apps/blog/deploy", At: t0.Add(2 * time.Second)},
			{ID: "b", App: "blog", Method: "POST", Path: "/podswitch/apps/blog/restart", At: t0},
			{ID: "a", App: "blog", Method: "POST", Path: "/podswitch/apps/blog/pause", Query: "timeout=5s", Body: []byte(`{"x":1}`), From: "p1", At: t0},
			{ID: "z", App: "shop", Method: "POST", At: t0},
		} {
			if id, err := m.Post(ctx, op); err != nil || id != op.ID {
				t.Fatalf("Post %s = %q, %v", op.ID, id, err)
			}
		}
		id, err := m.Post(ctx, Op{App: "blog", Method: "DELETE"})
		if err != nil || len(id) != 32 {
			t.Fatalf("Post without an id = %q, %v; want a random id", id, err)
		}
		if _, err := m.Post(ctx, Op{ID: "../x", App: "blog"}); err == nil {
			t.Error("Post with a bad id succeeded")
		}
		if _, err := m.Post(ctx, Op{App: "../x"}); err == nil {
			t.Error("Post for a bad app name succeeded")
		}
		ids := func() []string {
			t.Helper()
			ops, err := m.Pending(ctx, "blog")
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, op := range ops {
				ids = append(ids, op.ID)
			}
			return ids
		}
		if got, want := ids(), []string{"a", "b", "c", id}; !slices.Equal(got, want) {
			t.Fatalf("Pending = %v, want %v (by At, then ID)", got, want)
		}
		ops, _ := m.Pending(ctx, "blog")
		if op := ops[0]; op.Query != "timeout=5s" || string(op.Body) != `{"x":1}` || op.From != "p1" || !op.At.Equal(t0) {
			t.Errorf("op read back as %+v", op)
		}

		if err := m.Cancel(ctx, "blog", id); err != nil {
			t.Fatal(err)
		}
		if err := m.Cancel(ctx, "blog", id); err != nil {
			t.Errorf("Cancel of a cancelled op: %v", err)
		}
		if got, want := ids(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
			t.Fatalf("Pending after Cancel = %v, want %v", got, want)
		}

		if err := m.Answer(ctx, "blog", Result{ID: "a", Status: 200, Body: []byte(`{"ok":true}`), By: "p2"}); err != nil {
			t.Fatal(err)
		}
		if got, want := ids(), []string{"b", "c"}; !slices.Equal(got, want) {
			t.Fatalf("Pending after Answer = %v, want %v", got, want)
		}
		r, err := m.Await(ctx, "blog", "a", time.Millisecond)
		if err != nil || r.ID != "a" || r.Status != 200 || string(r.Body) != `{"ok":true}` || r.By != "p2" || r.At.IsZero() {
			t.Fatalf("Await = %+v, %v", r, err)
		}
		if _, err := st.Load(ctx, "podswitch/apps/blog/results/a.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("result still there once read: %v", err)
		}

		// Awaiting an answer that comes later.
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(30 * time.Millisecond)
			if err := m.Answer(ctx, "blog", Result{ID: "b", Status: 409}); err != nil {
				t.Error(err)
			}
		})
		r, err = m.Await(ctx, "blog", "b", 5*time.Millisecond)
		wg.Wait()
		if err != nil || r.Status != 409 {
			t.Errorf("Await of a later answer = %+v, %v", r, err)
		}

		// Nobody answers.
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := m.Await(short, "blog", "c", 5*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Await without an answer: %v", err)
		}
		if got, want := ids(), []string{"c"}; !slices.Equal(got, want) {
			t.Errorf("Pending at the end = %v, want %v", got, want)
		}
		if ops, err := m.Pending(ctx, "shop"); err != nil || len(ops) != 1 || ops[0].ID != "z" {
			t.Errorf("Pending of another app = %v, %v", ops, err)
		}
	})
}

// Storage errors while awaiting do not end the wait; when it ends, the last
// one is in the error.
func TestMailboxAwaitErrors(t *testing.T) {
	ctx := context.Background()
	st := newMem()
	m := NewMailbox(st)
	down := errors.New("storage down")
	var mu sync.Mutex
	failing := true
	st.setBefore(func(op, key string) error {
		mu.Lock()
		defer mu.Unlock()
		if failing && op == "load" {
			return down
		}
		return nil
	})
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := m.Await(short, "blog", "a", 5*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, down) {
		t.Errorf("Await while the storage fails: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(20 * time.Millisecond)
		if err := m.Answer(ctx, "blog", Result{ID: "a", Status: 200}); err != nil {
			t.Error(err)
		}
		mu.Lock()
		failing = false
		mu.Unlock()
	})
	r, err := m.Await(ctx, "blog", "a", 5*time.Millisecond)
	wg.Wait()
	if err != nil || r.Status != 200 {
		t.Errorf("Await once the storage is back = %+v, %v", r, err)
	}
}

// Sweep deletes the answers nobody read once this mailbox has seen them
// for olderThan, by its own clock.
func TestMailboxSweep(t *testing.T) {
	eachStorage(t, func(t *testing.T, st Storage) {
		ctx := context.Background()
		m := NewMailbox(st)
		now := time.Now()
		m.now = func() time.Time { return now }
		if err := m.Sweep(ctx, "blog", 10*time.Minute); err != nil {
			t.Errorf("Sweep of an empty mailbox: %v", err)
		}
		// Written by a proxy whose clock is an hour ahead: no matter.
		if err := m.Answer(ctx, "blog", Result{ID: "a", Status: 200, At: now.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		exists := func(id string) bool {
			_, err := st.Load(ctx, "podswitch/apps/blog/results/"+id+".json")
			return err == nil
		}
		if err := m.Sweep(ctx, "blog", 10*time.Minute); err != nil || !exists("a") {
			t.Fatalf("first Sweep: %v; a there: %v", err, exists("a"))
		}
		now = now.Add(5 * time.Minute)
		if err := m.Answer(ctx, "blog", Result{ID: "b", Status: 200}); err != nil {
			t.Fatal(err)
		}
		if err := m.Sweep(ctx, "blog", 10*time.Minute); err != nil || !exists("a") || !exists("b") {
			t.Fatalf("Sweep after 5 minutes: %v; a, b there: %v, %v", err, exists("a"), exists("b"))
		}
		now = now.Add(5 * time.Minute)
		if err := m.Sweep(ctx, "blog", 10*time.Minute); err != nil || exists("a") || !exists("b") {
			t.Fatalf("Sweep after 10 minutes: %v; a, b there: %v, %v", err, exists("a"), exists("b"))
		}
		now = now.Add(5 * time.Minute)
		if err := m.Sweep(ctx, "blog", 10*time.Minute); err != nil || exists("b") {
			t.Fatalf("Sweep after 15 minutes: %v; b there: %v", err, exists("b"))
		}
		if len(m.seen) != 0 {
			t.Errorf("sightings kept of deleted results: %v", m.seen)
		}
	})
}

// PendingOf finds the operations of several apps with one list of the
// storage, and only those of the apps asked for.
func TestMailboxPendingOf(t *testing.T) {
	eachStorage(t, func(t *testing.T, st Storage) {
		ctx := context.Background()
		m := NewMailbox(st)
		for _, op := range []Op{{ID: "a", App: "blog"}, {ID: "b", App: "shop"}, {ID: "c", App: "wiki"}, {ID: "d", App: "blog-2"}} {
			if _, err := m.Post(ctx, op); err != nil {
				t.Fatal(err)
			}
		}
		ops, err := m.PendingOf(ctx, func(app string) bool { return app == "blog" || app == "wiki" })
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, op := range ops {
			got = append(got, op.App+"/"+op.ID)
		}
		if want := []string{"blog/a", "wiki/c"}; !slices.Equal(got, want) {
			t.Errorf("PendingOf(blog, wiki) = %v, want %v", got, want)
		}
	})
}
