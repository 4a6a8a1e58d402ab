package caddymodule

import (
	"maps"
	"slices"
	"sync"
)

// changeFeed tells subscribers which apps changed. The engine publishes
// with an app's lock held, many times a second during a deployment:
// publish never blocks, and a subscriber that is behind gets the names of
// every app that changed since it last looked, once.
type changeFeed struct {
	mu   sync.Mutex
	subs map[*changeSub]struct{}
}

// changeSub is one subscriber: the apps that changed since its last take,
// and a channel that wakes it.
type changeSub struct {
	mu      sync.Mutex
	pending map[string]bool
	wake    chan struct{}
}

func newChangeFeed() *changeFeed { return &changeFeed{subs: map[*changeSub]struct{}{}} }

// publish notes that app changed; "" means the list of apps.
func (f *changeFeed) publish(app string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		s.mu.Lock()
		s.pending[app] = true
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// subscribe returns a subscriber and the function that ends it.
func (f *changeFeed) subscribe() (*changeSub, func()) {
	s := &changeSub{pending: map[string]bool{}, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	return s, func() {
		f.mu.Lock()
		delete(f.subs, s)
		f.mu.Unlock()
	}
}

// Wake receives a value when apps changed since the last
// Take.
func (s *changeSub) Wake() <-chan struct{} { return s.wake }

// Take returns the apps that changed since the last Take, sorted.
func (s *changeSub) Take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	apps := slices.Sorted(maps.Keys(s.pending))
	clear(s.pending)
	return apps
}
