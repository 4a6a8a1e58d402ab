package engine

import (
	"fmt"
	"maps"
	"slices"

	"go.uber.org/zap"
)

// RecordError is an app record that could not be written (a full disk, a
// read-only data dir). An operation that meets it is refused and changes
// nothing: answering it would be undone by the next restart.
type RecordError struct {
	App string
	Err error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("app %s: its record could not be written, so nothing was changed: %v", e.App, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// clone returns a copy of r that shares nothing that the engine changes in
// place (the count overrides, the lists of releases and of retiring
// containers), so that a change made on it and refused by the store can be
// dropped.
func (r AppRecord) clone() AppRecord {
	r.Retiring = slices.Clone(r.Retiring)
	r.Releases = slices.Clone(r.Releases)
	r.Overrides.Counts = maps.Clone(r.Overrides.Counts)
	return r
}

// saveRecordLocked writes the app's record and returns a *RecordError when
// it could not be written. Callers that answer a user refuse the operation
// and put the record back as it was (see keepLocked); internal steps that
// cannot be refused log it (the next write carries the change).
func (s *Supervisor) saveRecordLocked() error {
	if s.deps.Store == nil || s.removed {
		return nil
	}
	if err := s.deps.Store.Save(s.name, s.rec); err != nil {
		s.log.Error("writing the app record", zap.Error(err))
		return &RecordError{App: s.name, Err: err}
	}
	return nil
}

// keepLocked writes the record as it now is; when that fails, it puts back
// prev (the record before the change) and the desired spec that follows
// from it, and returns the error: the change is refused, and memory keeps
// what the disk has.
func (s *Supervisor) keepLocked(prev AppRecord) error {
	err := s.saveRecordLocked()
	if err != nil {
		s.rec = prev
		s.refreshDesiredLocked()
	}
	return err
}
