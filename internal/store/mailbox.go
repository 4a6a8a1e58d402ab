package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Op is an operation on an app sent to any proxy and carried out by the
// app's leader: the API request as the proxy received it.
type Op struct {
	ID     string `json:"id"`
	App    string `json:"app"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Query  string `json:"query,omitempty"`
	Body   []byte `json:"body,omitempty"`
	// From is the proxy that posted it.
	From string `json:"from"`
	// At is the poster's wall clock when it posted it.
	At time.Time `json:"at"`
}

// Result is the leader's answer to an Op: the status and body of its API
// response.
type Result struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
	Body   []byte `json:"body,omitempty"`
	// By is the proxy that carried the operation out.
	By string `json:"by"`
	// At is its wall clock when it answered, for people.
	At time.Time `json:"at"`
}

// Mailbox carries operations from the proxy that received them to the
// app's leader, and its answers back, through the shared storage:
// podswitch/apps/<app>/ops/<id>.json and results/<id>.json. Its methods
// are safe for concurrent use.
type Mailbox struct {
	kv  *kv
	now func() time.Time

	mu sync.Mutex
	// seen is when this mailbox first saw each result, by key, for Sweep:
	// the clocks of different proxies are never compared.
	seen map[string]time.Time
}

// NewMailbox returns the mailbox kept in st.
func NewMailbox(st Storage) *Mailbox {
	return &Mailbox{kv: newKV(st), now: time.Now, seen: map[string]time.Time{}}
}

// opsDir holds the operations of every app, so that a leader finds them
// all with one list, whatever the number of apps.
const opsDir = "podswitch/ops"

func opKey(app, id string) string     { return opsDir + "/" + app + "." + id + ".json" }
func resultKey(app, id string) string { return appKey(app, "results/"+id+".json") }

// checkOp returns an error unless app and id may name an operation.
func checkOp(app, id string) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	if !idRE.MatchString(id) {
		return fmt.Errorf("operation id %q", id)
	}
	return nil
}

// Post writes op for the app's leader to carry out, and returns its id: a
// random one when op.ID is empty. A zero op.At is set to now.
func (m *Mailbox) Post(ctx context.Context, op Op) (string, error) {
	if op.ID == "" {
		var raw [16]byte
		_, _ = rand.Read(raw[:])
		op.ID = hex.EncodeToString(raw[:])
	}
	if err := checkOp(op.App, op.ID); err != nil {
		return "", err
	}
	if op.At.IsZero() {
		op.At = m.now()
	}
	b, err := json.Marshal(op)
	if err != nil {
		return "", err
	}
	if err := m.kv.store(ctx, opKey(op.App, op.ID), b); err != nil {
		return "", err
	}
	return op.ID, nil
}

// Pending returns the operations posted for app and neither answered nor
// cancelled, oldest first (by At, then ID). A damaged one is left out.
func (m *Mailbox) Pending(ctx context.Context, app string) ([]Op, error) {
	if !engine.ValidName(app) {
		return nil, fmt.Errorf("app name %q", app)
	}
	return m.PendingOf(ctx, func(a string) bool { return a == app })
}

// PendingOf returns the operations posted for the apps of which mine
// reports true, with one list of the storage for all apps, as Pending
// does for one.
func (m *Mailbox) PendingOf(ctx context.Context, mine func(app string) bool) ([]Op, error) {
	names, err := m.kv.list(ctx, opsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ops []Op
	for _, name := range names {
		base, ok := strings.CutSuffix(name, ".json")
		app, id, dot := strings.Cut(base, ".")
		if !ok || !dot || checkOp(app, id) != nil || !mine(app) {
			continue
		}
		b, err := m.kv.load(ctx, opKey(app, id))
		if errors.Is(err, fs.ErrNotExist) {
			continue // answered or cancelled since it was listed
		}
		if err != nil {
			return nil, err
		}
		var op Op
		if json.Unmarshal(b, &op) != nil || op.ID != id || op.App != app {
			continue
		}
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b Op) int {
		return cmp.Or(a.At.Compare(b.At), strings.Compare(a.ID, b.ID))
	})
	return ops, nil
}

// Answer writes r, the answer to the operation r.ID of app, then deletes
// the operation. A zero r.At is set to now.
func (m *Mailbox) Answer(ctx context.Context, app string, r Result) error {
	if err := checkOp(app, r.ID); err != nil {
		return err
	}
	if r.At.IsZero() {
		r.At = m.now()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := m.kv.store(ctx, resultKey(app, r.ID), b); err != nil {
		return err
	}
	return m.kv.del(ctx, opKey(app, r.ID))
}

// Await returns the answer to the operation id of app, reading it every
// poll until it is there or ctx ends, and deletes it once read. Storage
// errors do not end the wait (the leader may still answer); the last one
// is in the error returned when ctx ends.
func (m *Mailbox) Await(ctx context.Context, app, id string, poll time.Duration) (Result, error) {
	if err := checkOp(app, id); err != nil {
		return Result{}, err
	}
	poll = max(poll, 10*time.Millisecond)
	key := resultKey(app, id)
	var last error
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("awaiting the answer to operation %s of %s: %w", id, app, errors.Join(context.Cause(ctx), last))
		case <-t.C:
		}
		b, err := m.kv.load(ctx, key)
		switch {
		case err == nil:
			_ = m.kv.del(ctx, key) // or else Sweep deletes it
			var r Result
			if err := json.Unmarshal(b, &r); err != nil {
				return Result{}, fmt.Errorf("%s is damaged: %w", key, err)
			}
			return r, nil
		case ctx.Err() != nil:
			// Cut short by ctx: the storage's own last word is kept.
		case !errors.Is(err, fs.ErrNotExist):
			last = err
		}
		t.Reset(poll)
	}
}

// Cancel deletes the operation id of app, whose poster gave up on it; an
// operation already taken may still be carried out (its answer is then
// left for Sweep).
func (m *Mailbox) Cancel(ctx context.Context, app, id string) error {
	if err := checkOp(app, id); err != nil {
		return err
	}
	return m.kv.del(ctx, opKey(app, id))
}

// Sweep deletes the answers of app that nobody read: those this mailbox
// has seen for olderThan or longer (by its own clock, from the first
// Sweep that saw them). The app's leader calls it with Pending.
func (m *Mailbox) Sweep(ctx context.Context, app string, olderThan time.Duration) error {
	if !engine.ValidName(app) {
		return fmt.Errorf("app name %q", app)
	}
	names, err := m.kv.list(ctx, appKey(app, "results"))
	if err != nil {
		return err
	}
	prefix := appKey(app, "results/")
	now := m.now()
	listed := make(map[string]bool, len(names))
	var old []string
	m.mu.Lock()
	for _, name := range names {
		key := prefix + name
		listed[key] = true
		first, ok := m.seen[key]
		if !ok {
			first = now
			m.seen[key] = now
		}
		if now.Sub(first) >= olderThan {
			old = append(old, key)
		}
	}
	for key := range m.seen {
		if strings.HasPrefix(key, prefix) && !listed[key] {
			delete(m.seen, key)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, key := range old {
		if err := m.kv.del(ctx, key); err != nil {
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		delete(m.seen, key)
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}
