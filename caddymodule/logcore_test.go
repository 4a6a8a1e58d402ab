package caddymodule

import (
	"slices"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// entries returns the messages of logs with their logger name and fields.
func entries(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.AllUntimed() {
		s := e.LoggerName + ": " + e.Message
		for k, v := range e.ContextMap() {
			s += " " + k + "=" + v.(string)
		}
		out = append(out, s)
	}
	return out
}

// A logger made from the swappable core writes to the core set last,
// and only to it, with the fields and name it was made with; the level is
// that core's.
func TestSwapCore(t *testing.T) {
	coreA, logsA := observer.New(zapcore.DebugLevel)
	coreB, logsB := observer.New(zapcore.InfoLevel)
	s := newSwapCore(coreA)
	root := zap.New(s).Named("podswitch")
	log := root.With(zap.String("app", "blog"))

	log.Info("one")
	log.Debug("debug to A")
	s.set(coreB)
	log.Info("two")
	log.Debug("debug not enabled on B")
	root.Info("three")
	// A logger made after the swap writes to B as well.
	root.With(zap.String("process", "web")).Warn("four")

	if got, want := entries(logsA), []string{"podswitch: one app=blog", "podswitch: debug to A app=blog"}; !slices.Equal(got, want) {
		t.Errorf("core A got %q, want %q", got, want)
	}
	if got, want := entries(logsB), []string{"podswitch: two app=blog", "podswitch: three", "podswitch: four process=web"}; !slices.Equal(got, want) {
		t.Errorf("core B got %q, want %q", got, want)
	}
	if log.Core().Enabled(zapcore.DebugLevel) {
		t.Error("debug enabled after the swap to an info core")
	}

	// Write, for callers that skip Check, goes to the current core too.
	s.set(coreA)
	logsA.TakeAll()
	c := s.With([]zapcore.Field{zap.String("app", "shop")})
	if err := c.Write(zapcore.Entry{Level: zapcore.InfoLevel, LoggerName: "direct", Message: "five"}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := entries(logsA), []string{"direct: five app=shop"}; !slices.Equal(got, want) {
		t.Errorf("core A got %q from Write, want %q", got, want)
	}
	if err := c.Sync(); err != nil {
		t.Errorf("Sync: %v", err)
	}
}

// Loggers may be swapped while others log (go test -race).
func TestSwapCoreConcurrent(t *testing.T) {
	coreA, logsA := observer.New(zapcore.InfoLevel)
	coreB, logsB := observer.New(zapcore.InfoLevel)
	s := newSwapCore(coreA)
	log := zap.New(s).With(zap.String("app", "blog"))
	var wg sync.WaitGroup
	const n = 200
	for range 4 {
		wg.Go(func() {
			for range n {
				log.Info("x")
			}
		})
	}
	wg.Go(func() {
		for i := range n {
			if i%2 == 0 {
				s.set(coreB)
			} else {
				s.set(coreA)
			}
		}
	})
	wg.Wait()
	if got := logsA.Len() + logsB.Len(); got != 4*n {
		t.Errorf("%d entries written, want %d: each goes to exactly one core", got, 4*n)
	}
}
