package engine

import (
	"go.uber.org/zap"
)

// LabelInstance names the podswitch instance (Deps.Instance) that started
// a container. An instance adopts, replaces and removes only its own
// containers, and those without the label (started by a podswitch that
// did not set it) for the apps of its config; it never touches another
// instance's.
const LabelInstance = "podswitch.instance"

// owner says whose a container is, to this instance.
type owner int

const (
	// ownerThis: labelled with this instance.
	ownerThis owner = iota
	// ownerUnknown: no instance label (an older podswitch made it).
	ownerUnknown
	// ownerOther: labelled with another instance.
	ownerOther
)

// ownerOf returns whose info is, to instance.
func ownerOf(instance string, info ContainerInfo) owner {
	v := info.Labels[LabelInstance]
	switch {
	case v == "":
		return ownerUnknown
	case v == instance:
		return ownerThis
	}
	return ownerOther
}

// labels returns the labels of a container of app this instance starts.
func (s *Supervisor) labels(app, release, process string) map[string]string {
	l := map[string]string{LabelApp: app, LabelRelease: release, LabelProcess: process}
	if s.deps.Instance != "" {
		l[LabelInstance] = s.deps.Instance
	}
	return l
}

// ownContainers returns the containers of list this supervisor may take
// over: this instance's, and those without an instance label unless the
// app is an orphan (not in the config: unlabelled ones are never removed
// as orphans). It notes how many of another instance it left.
func (s *Supervisor) ownContainers(list []ContainerInfo) []ContainerInfo {
	own := make([]ContainerInfo, 0, len(list))
	others := 0
	for _, info := range list {
		switch ownerOf(s.deps.Instance, info) {
		case ownerOther:
			others++
			continue
		case ownerUnknown:
			if s.orphan {
				continue
			}
		}
		own = append(own, info)
	}
	s.setOthers(others)
	return own
}

// setOthers notes how many containers of another instance carry the app's
// name; the first time there are some, it says so in the log.
func (s *Supervisor) setOthers(n int) {
	s.lock()
	defer s.unlock()
	if n == s.others {
		return
	}
	if s.others == 0 && !s.othersWarned {
		s.othersWarned = true
		s.log.Warn("containers of another podswitch instance carry this app's name; they are left alone",
			zap.Int("containers", n))
	}
	s.others = n
	s.touch()
}

// removeOrphans removes what this instance left of apps that are in no
// config: an app with containers of this instance (mine; unlabelled ones
// are never taken for orphans) gets a supervisor that drains and stops
// them as a removed app's and moves its record aside; at the first call,
// the records of apps with no container at all (byApp) are moved aside
// too. Adding such an app back starts from the config.
func (m *Manager) removeOrphans(mine map[string]bool, byApp map[string][]ContainerInfo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return
	}
	for app, ok := range mine {
		if !ok || m.sups[app] != nil || m.leaving[app] != nil || !ValidName(app) {
			continue
		}
		m.deps.Logger.Warn("removing the containers of an app that is not in the config",
			zap.String("app", app), zap.Int("containers", len(byApp[app])))
		s := newSupervisor(m.ctx, AppSpec{Name: app}.WithDefaults(), new(PoolRef), m.deps, m.rt, m.probes)
		s.orphan = true
		m.leaveLocked(app, s)
		s.remove()
		go s.run(m.after)
	}
	if m.swept || m.deps.Store == nil {
		return
	}
	m.swept = true
	apps, err := m.deps.Store.Apps()
	if err != nil {
		m.deps.Logger.Error("listing the app records", zap.Error(err))
		return
	}
	for _, app := range apps {
		if m.sups[app] != nil || m.leaving[app] != nil || len(byApp[app]) > 0 {
			continue
		}
		if err := m.deps.Store.Archive(app); err != nil {
			m.deps.Logger.Error("moving aside the record of an app that is not in the config", zap.String("app", app), zap.Error(err))
			continue
		}
		m.deps.Logger.Info("moved aside the record of an app that is not in the config and has no container", zap.String("app", app))
	}
}
