package engine

import (
	"slices"
	"time"
)

// deployLog is an app's deployments, oldest first, at most historySize.
// Its entries are guarded by the supervisor's lock.
type deployLog struct {
	entries []*logEntry
	nextID  int64
}

// logEntry is one deployment: its record, a channel closed when it ends,
// and, until the containers it replaced are gone, the live containers whose
// timelines its record shows.
type logEntry struct {
	d     Deployment
	done  chan struct{}
	fresh []*Container
	old   []*Container
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// load takes the deployments kept by a previous run. Those that had not
// ended then never will.
func (l *deployLog) load(past []Deployment) {
	for _, d := range past {
		if !d.Status.Ended() {
			d.Status, d.Error, d.EndedAt = StatusAborted, "podswitch stopped before it ended", d.StartedAt
		}
		l.entries = append(l.entries, &logEntry{d: d, done: closedChan})
		l.nextID = max(l.nextID, d.ID)
	}
}

// add starts the record of a new deployment and returns it.
func (l *deployLog) add(d Deployment) *logEntry {
	l.nextID++
	d.ID = l.nextID
	d.Status = StatusStarting
	d.StartedAt = time.Now()
	e := &logEntry{d: d, done: make(chan struct{})}
	l.entries = append(l.entries, e)
	if n := len(l.entries); n > historySize {
		l.entries = slices.Delete(l.entries, 0, n-historySize)
	}
	return e
}

func (l *deployLog) find(id int64) *logEntry {
	for _, e := range l.entries {
		if e.d.ID == id {
			return e
		}
	}
	return nil
}

// end closes the done channel of deployment id, whose status is final.
func (l *deployLog) end(id int64) {
	if e := l.find(id); e != nil && e.done != closedChan {
		select {
		case <-e.done:
		default:
			close(e.done)
		}
	}
}

// snapshots returns copies of the deployments, newest first.
func (l *deployLog) snapshots() []Deployment {
	out := make([]Deployment, 0, len(l.entries))
	for i := len(l.entries) - 1; i >= 0; i-- {
		out = append(out, l.entries[i].snapshot())
	}
	return out
}

// records returns copies of the deployments, oldest first, as the history
// keeps them.
func (l *deployLog) records() []Deployment {
	out := make([]Deployment, len(l.entries))
	for i, e := range l.entries {
		out[i] = e.snapshot()
	}
	return out
}

// snapshot returns a copy of the deployment with its containers' timelines
// as they are now.
func (e *logEntry) snapshot() Deployment {
	d := e.d
	if e.fresh != nil || e.old != nil {
		d.Containers = make([]ContainerRecord, 0, len(e.fresh)+len(e.old))
		for _, c := range e.fresh {
			d.Containers = append(d.Containers, c.record("new"))
		}
		for _, c := range e.old {
			d.Containers = append(d.Containers, c.record("old"))
		}
	} else {
		d.Containers = slices.Clone(d.Containers)
	}
	if d.Hook != nil {
		h := *d.Hook
		h.Output = slices.Clone(h.Output)
		d.Hook = &h
	}
	return d
}

// settle freezes the container timelines into the record, once none of
// them changes any more.
func (e *logEntry) settle() {
	if e.fresh == nil && e.old == nil {
		return
	}
	e.d = e.snapshot()
	e.fresh, e.old = nil, nil
}

// saveHistoryLocked hands the deployments to the history.
func (s *Supervisor) saveHistoryLocked() {
	if s.deps.History == nil {
		return
	}
	s.deps.History.Save(s.name, s.log_.records())
}

// endLocked gives deployment e its final status. A successful deployment's
// record stays live until the containers it replaced are gone.
func (s *Supervisor) endLocked(e *logEntry, st Status, msg string) {
	if e.d.Status.Ended() {
		return
	}
	e.d.Status, e.d.Error, e.d.EndedAt = st, msg, time.Now()
	s.log_.end(e.d.ID)
	s.noteUsed()
	if st != StatusSuccess || len(e.old) == 0 {
		e.settle()
	}
	s.saveHistoryLocked()
	s.touch()
	d := e.snapshot()
	fields := deploymentFields(&d)
	if st == StatusSuccess || st == StatusAborted {
		s.log.Info("deployment ended", fields...)
	} else {
		s.log.Error("deployment ended", fields...)
	}
	s.emit(Event{Name: EventDeployment, Deployment: &d, Message: msg})
	s.deploymentEndedLocked(&d)
}

// retiredLocked notes that one container deployment e replaced is gone;
// once all are, the record is final.
func (s *Supervisor) retiredLocked(e *logEntry) {
	for _, c := range e.old {
		if c.state != StateStopped {
			return
		}
	}
	e.d.RetiredAt = time.Now()
	e.settle()
	s.saveHistoryLocked()
}
