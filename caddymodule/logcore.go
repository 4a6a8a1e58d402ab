package caddymodule

import (
	"slices"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// swapCore is a zap core that writes through the core of the config the
// engine follows. The engine lives as long as the process, configs do not:
// Caddy closes a config's log writers when it unloads the config, so the
// engine must never keep a config's logger. Commit points it at the new
// config's core before the old config is unloaded.
type swapCore struct {
	cur    *atomic.Pointer[zapcore.Core]
	fields []zapcore.Field
}

func newSwapCore(c zapcore.Core) *swapCore {
	s := &swapCore{cur: new(atomic.Pointer[zapcore.Core])}
	s.set(c)
	return s
}

// set makes c the core written to, by this core and every core made from
// it with With.
func (s *swapCore) set(c zapcore.Core) { s.cur.Store(&c) }

func (s *swapCore) base() zapcore.Core { return *s.cur.Load() }

// Enabled implements zapcore.LevelEnabler.
func (s *swapCore) Enabled(l zapcore.Level) bool { return s.base().Enabled(l) }

// With implements zapcore.Core: the fields are kept and added at write
// time, to whatever core is current then.
func (s *swapCore) With(fields []zapcore.Field) zapcore.Core {
	return &swapCore{cur: s.cur, fields: append(slices.Clip(s.fields), fields...)}
}

// Check implements zapcore.Core by handing the entry to the current core.
func (s *swapCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	c := s.base()
	if !c.Enabled(e.Level) {
		return ce
	}
	if len(s.fields) > 0 {
		c = c.With(s.fields)
	}
	return c.Check(e, ce)
}

// Write implements zapcore.Core; Check hands entries to the current core,
// so this is only reached by a caller that skips Check.
func (s *swapCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	return s.base().With(s.fields).Write(e, fields)
}

// Sync implements zapcore.Core.
func (s *swapCore) Sync() error { return s.base().Sync() }

var _ zapcore.Core = (*swapCore)(nil)
