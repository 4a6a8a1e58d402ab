package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// imageIDTimeout bounds one image inspect.
var imageIDTimeout = 30 * time.Second

// pinnedLocked returns spec with the image ID its reference was resolved
// to for the same release-defining settings, when the record has one: a
// config reload that changes nothing keeps the release that runs, even if
// its tag now names another image. An explicit deploy resolves again.
func (s *Supervisor) pinnedLocked(spec AppSpec) AppSpec {
	if p := s.rec.Image; p != nil && spec.ImageID == "" && p.Image == spec.Image && p.Release == spec.ReleaseID() {
		spec.ImageID = p.ID
	}
	return spec
}

// pinLocked records that the desired image resolved to id, when the
// desired spec (unresolved, with ID unpinned) is the one it was resolved
// for.
func (s *Supervisor) pinLocked(unpinned, id string) {
	if s.desired.ImageID != "" || s.desired.ReleaseID() != unpinned {
		return
	}
	s.rec.Image = &ImagePin{Release: unpinned, Image: s.desired.Image, ID: id, At: time.Now()}
	s.desired.ImageID = id
}

// MissingImageMessage says what to do about image, which the runtime does
// not have (err, with the runtime's words): the same words for a deploy
// through the API, which is refused, and for a config's deployment, which
// ends start-error.
func MissingImageMessage(image string, err error) string {
	if he := (*HostImageError)(nil); errors.As(err, &he) {
		return he.Msg + ", then reload or deploy"
	}
	return fmt.Sprintf("image %s is not on this host: build it or pull it (podman pull %s), then reload or deploy (%v)", image, image, err)
}

// imageMissing records that r, a deployment of a new release, failed
// because its image is missing: the next config load tries the release
// again, even unchanged.
func (s *Supervisor) imageMissing(r *rollout) {
	s.lock()
	defer s.unlock()
	if s.lastTried == r.release {
		s.missingImage = r.release
	}
}

// pinImage resolves the image reference of r, a deployment of a new
// release whose image ID is not known yet, to the ID that every container
// of the release will run, before the first of them is created. The
// release's id then covers the image ID; the deployment, the record of
// the deployment on its way and the desired spec follow. A missing image
// fails the deployment (start-error) with the runtime's words; a runtime
// that is away is waited for. The inspect is made without the lock.
func (s *Supervisor) pinImage(r *rollout) error {
	if r.kind == KindRestart || r.spec.ImageID != "" {
		return nil
	}
	var id string
	err := s.withRuntime(r.ctx, func() (err error) {
		ctx, cancel := context.WithTimeout(r.ctx, imageIDTimeout)
		defer cancel()
		id, err = s.rt.ImageID(WithHosts(ctx, r.spec.Hosts), r.spec.Image)
		return err
	})
	switch {
	case r.ctx.Err() != nil:
		return errAborted
	case errors.Is(err, ErrImageNotFound):
		s.imageMissing(r)
		return &bootError{StatusStartError, MissingImageMessage(r.spec.Image, err)}
	case err != nil:
		return &bootError{StatusStartError, fmt.Sprintf("inspecting image %s: %v", r.spec.Image, err)}
	case id == "":
		return nil // a runtime that cannot say: the release runs by reference
	}
	s.lock()
	defer s.unlock()
	if r.ctx.Err() != nil {
		return errAborted
	}
	unpinned := r.release
	r.spec.ImageID = id
	rel := r.spec.ReleaseID()
	r.release, r.e.d.Release, r.e.d.ImageID = rel, rel, id
	if s.lastTried == unpinned {
		s.lastTried = rel
	}
	if d := s.rec.Deploying; d != nil && d.Deployment == r.id {
		dep := *d
		dep.Release = rel
		s.rec.Deploying = &dep
	}
	if r.kind != KindCanary {
		// A canary's release is not the desired one: its pin is its own.
		s.pinLocked(unpinned, id)
		s.saveRecordLocked()
	}
	s.saveHistoryLocked()
	s.touch()
	s.log.Info("image resolved", zap.Int64("deployment", r.id), zap.String("image", r.spec.Image),
		zap.String("image_id", ShortImageID(id)), zap.String("release", rel))
	return nil
}
