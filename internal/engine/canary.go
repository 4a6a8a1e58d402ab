package engine

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Canary rollouts. A canary deployment (KindCanary) boots the web
// containers of a new release beside the serving ones, by the usual rules
// (each must accept a TCP connection on PORT, and answer ready_path), and
// then, instead of a switch, puts them in service for a share of the
// traffic: Pool.Canary. The release that serves keeps serving everything
// else, and keeps its workers; the canary runs no postdeploy hook and no
// worker. It ends one of three ways, each with the lock held and in one
// place (endCanaryLocked):
//
//   - promote: a deployment of the canary's release, new-first like any
//     deploy (it runs the hook, boots web and workers); its switch retires
//     the canary's containers with the old release's;
//   - abort: its containers are drained and stopped, its clients go back
//     to the serving release at once;
//   - a crash of one of its containers, a deployment of another release,
//     the removal of the app, or a restart of podswitch (its containers
//     are not adopted: a canary is a watched, temporary state) end it like
//     an abort, and the deployment that started it says why.

// KindCanary is a deployment that puts a release beside the serving one
// for a share of traffic.
const KindCanary = "canary"

// ErrNoCanary: nothing to promote or abort.
var ErrNoCanary = errors.New("the app has no canary: start one with rollout")

// ConflictError is an operation refused for the state the app is in (a
// canary already runs, a deployment is on its way): it can be sent again
// once that state has ended.
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string { return e.Msg }

// CanaryRules decide which requests a canary gets: Percent of new clients
// (each client sticks to the release it got, by a cookie the podswitch
// directive sets), and every request that carries Header (with
// HeaderValue, when set) or the cookie Cookie with CookieValue.
type CanaryRules struct {
	Percent     int    `json:"percent"`
	Header      string `json:"header,omitempty"`
	HeaderValue string `json:"header_value,omitempty"`
	Cookie      string `json:"cookie,omitempty"`
	CookieValue string `json:"cookie_value,omitempty"`
}

// Validate reports what is wrong with r, in words a user can act on.
func (r CanaryRules) Validate() error {
	if r.Percent < 0 || r.Percent > 100 {
		return fmt.Errorf("percent %d: want a whole number from 0 to 100", r.Percent)
	}
	if r.Header != "" && !validToken(r.Header) {
		return fmt.Errorf("header %q is not a valid header name", r.Header)
	}
	if r.HeaderValue != "" && r.Header == "" {
		return errors.New("a header value needs a header name")
	}
	if (r.Cookie == "") != (r.CookieValue == "") {
		return errors.New("cookie: want a name and a value (name=value)")
	}
	if r.Cookie != "" && !validToken(r.Cookie) {
		return fmt.Errorf("cookie name %q is not valid", r.Cookie)
	}
	if strings.ContainsAny(r.CookieValue+r.HeaderValue, "\r\n;,\" ") {
		return errors.New("header and cookie values must not contain spaces, quotes, commas, semicolons or line breaks")
	}
	return nil
}

// validToken reports whether s is an HTTP token (a header or cookie name).
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// Canary is the canary of an app as the request path reads it, in its Pool:
// immutable but for the counter of new clients.
type Canary struct {
	// Release is the canary's release; Addrs the dial addresses of its
	// ready web containers (empty: every request goes to the pool's).
	Release string
	Addrs   []string
	CanaryRules
	// clients counts the new clients the share was taken from.
	clients *atomic.Uint64
}

// NewClient decides for a client that has no sticky choice yet whether it
// gets the canary: exactly Percent of every hundred new clients do, spread
// evenly (client n gets it when floor(n·p/100) moves), without a lock.
func (c *Canary) NewClient() bool {
	if c.Percent <= 0 {
		return false
	}
	if c.Percent >= 100 {
		return true
	}
	n := c.clients.Add(1)
	p := uint64(c.Percent)
	return n*p/100 != (n-1)*p/100
}

// CanaryRecord is a canary in service, as the app record keeps it: a
// restart of podswitch finds it and ends it (its containers are leftovers).
type CanaryRecord struct {
	Release    string      `json:"release"`
	Image      string      `json:"image,omitempty"`
	ImageID    string      `json:"image_id,omitempty"`
	Deployment int64       `json:"deployment"`
	Since      time.Time   `json:"since"`
	Rules      CanaryRules `json:"rules"`
}

// CanaryStatus is the canary of an app: booting (its deployment runs) or
// in service.
type CanaryStatus struct {
	Release string `json:"release"`
	Image   string `json:"image"`
	ImageID string `json:"image_id,omitempty"`
	CanaryRules
	// Deployment is the canary deployment; InService is set once its
	// containers get traffic, Since then.
	Deployment int64     `json:"deployment"`
	InService  bool      `json:"in_service"`
	Since      time.Time `json:"since,omitzero"`
	// Ready counts its web containers in service.
	Ready int `json:"ready"`
}

// Canary starts a canary of image (imageID resolved by the caller, as for
// Deploy): its web containers boot beside the serving ones and then get
// the share of traffic rules give. A canary of the release that is the
// canary already only changes its rules. It refuses while a deployment
// runs, before a release serves, and while another canary runs.
func (s *Supervisor) Canary(image, imageID string, rules CanaryRules) (DeployResult, error) {
	if err := rules.Validate(); err != nil {
		return DeployResult{}, inputErr("%v", err)
	}
	s.lock()
	defer s.poke()
	defer s.unlock()
	if err := s.opErrLocked(); err != nil {
		return DeployResult{}, err
	}
	if s.serving == nil || s.serving.spec == nil {
		return DeployResult{}, inputErr("app %s has no serving release to put a canary beside: deploy it first", s.name)
	}
	spec := s.desired
	spec.Image, spec.ImageID = image, imageID
	rel := spec.ReleaseID()
	if rel == s.serving.ID {
		return DeployResult{}, inputErr("image %s%s already serves app %s: a canary needs another release", image, idNote(imageID), s.name)
	}
	if c := s.rec.Canary; c != nil {
		if c.Release != rel {
			return DeployResult{}, &ConflictError{fmt.Sprintf("a canary of image %s (release %s) is in service: promote or abort it first", c.Image, c.Release)}
		}
		prev := s.rec.clone()
		next := *c
		next.Rules = rules
		s.rec.Canary = &next
		if err := s.keepLocked(prev); err != nil {
			return DeployResult{}, err
		}
		s.fleet.setCanary(c.Release, &rules)
		if e := s.log_.find(c.Deployment); e != nil {
			e.d.Percent = &rules.Percent
			s.saveHistoryLocked()
		}
		s.log.Info("canary share changed", zap.String("release", rel), zap.Int("percent", rules.Percent))
		return DeployResult{Message: fmt.Sprintf("the canary of image %s now gets %d%% of new clients", image, rules.Percent)}, nil
	}
	if r := s.rollout; r != nil {
		if r.kind == KindCanary {
			return DeployResult{}, &ConflictError{fmt.Sprintf("a canary of image %s is booting: wait for it, or abort it", r.spec.Image)}
		}
		return DeployResult{}, &ConflictError{"a deployment is in progress; start the canary once it has ended"}
	}
	s.wakeLocked(KindCanary)
	e, err := s.startRolloutLocked(KindCanary, spec, WebProcess, "", "api")
	if err != nil {
		return DeployResult{}, err
	}
	s.rollout.rules = rules
	e.d.Percent = &rules.Percent
	d := e.snapshot()
	return DeployResult{Deployment: &d}, nil
}

// canaryLiveLocked puts the booted containers of canary rollout r in
// service for its share: the canary is recorded first, and nothing
// changes when that cannot be written.
func (s *Supervisor) canaryLiveLocked(r *rollout) error {
	if r.ctx.Err() != nil {
		return errAborted
	}
	for _, c := range r.booted {
		if c.state != StateBooted {
			return &bootError{StatusCrashedError, fmt.Sprintf("%s container %s exited after it booted, before it got traffic", c.Process, c.Name)}
		}
	}
	now := time.Now()
	prev := s.rec.clone()
	s.rec.Canary = &CanaryRecord{Release: r.release, Image: r.spec.Image, ImageID: r.spec.ImageID, Deployment: r.id, Since: now, Rules: r.rules}
	if err := s.saveRecordLocked(); err != nil {
		s.rec = prev
		return fmt.Errorf("the canary was not put in service: %w", err)
	}
	for _, c := range r.booted {
		c.owner, c.canary = 0, true
		s.fleet.setState(c, StateReady, fmt.Sprintf("canary: in service for %d%% of new clients", r.rules.Percent))
	}
	s.fleet.setCanary(r.release, &r.rules)
	e := r.e
	for _, c := range r.booted {
		e.d.LastReadyAt = later(e.d.LastReadyAt, c.entered(StateBooted))
	}
	e.d.SwitchedAt = now
	if s.rollout == r {
		s.rollout = nil
	}
	s.endLocked(e, StatusSuccess, "")
	s.log.Info("canary in service", zap.Int64("deployment", r.id), zap.String("release", r.release),
		zap.Int("percent", r.rules.Percent), zap.Int("containers", len(r.booted)))
	return nil
}

// Promote deploys the canary's release, new-first like a deploy (an
// override of the config's image); its switch retires the canary's
// containers with the old release's, and ends the canary.
func (s *Supervisor) Promote() (DeployResult, error) {
	s.lock()
	defer s.poke()
	defer s.unlock()
	c := s.rec.Canary
	if c == nil {
		return DeployResult{}, ErrNoCanary
	}
	prev := s.rec.Overrides
	prev.Counts = maps.Clone(prev.Counts)
	res, err := s.deployLocked(c.Image, c.ImageID, "promote")
	if r := s.rollout; err == nil && res.Deployment != nil && r != nil && r.id == res.Deployment.ID && r.release == c.Release {
		r.promotes, r.undo = c.Release, &prev
	}
	return res, err
}

// stopPromoteLocked aborts a promotion of the canary on its way, when the
// canary ends before the promotion switched (an abort, a crash): the
// release the user just turned down must not take all the traffic. The
// override the promotion made is taken back.
func (s *Supervisor) stopPromoteLocked(why string) {
	r := s.rollout
	if r == nil || s.rec.Canary == nil || r.promotes != s.rec.Canary.Release {
		return
	}
	r.abort("the canary was ended before its promotion switched: " + why)
	s.rec.Overrides = *r.undo
	s.refreshDesiredLocked()
	s.lastTried = r.release
}

// Abort ends the canary: its clients go back to the serving release at
// once, and its containers are drained and stopped. A canary still
// booting is aborted like any deployment.
func (s *Supervisor) Abort() error {
	s.lock()
	defer s.poke()
	defer s.unlock()
	if err := s.opErrLocked(); err != nil {
		return err // before adoption, the canary recorded is not taken over yet
	}
	if r := s.rollout; r != nil && r.kind == KindCanary {
		r.abort("aborted by the api before it got traffic")
		return nil
	}
	if s.rec.Canary == nil {
		return ErrNoCanary
	}
	s.stopPromoteLocked("aborted by the api")
	s.endCanaryLocked(s.rec.Canary, "aborted by the api")
	// Not written, the abort stands all the same: a restart ends any
	// canary it finds.
	_ = s.saveRecordLocked()
	return nil
}

// endCanaryLocked ends canary c, the one in service (or, at a switch, the
// one that was), for why: it leaves the pool at the unlock, its containers
// that still serve are drained and stopped, and the deployment that
// started it says how it ended. The caller saves the record (or has saved
// it).
func (s *Supervisor) endCanaryLocked(c *CanaryRecord, why string) {
	if c == nil {
		return
	}
	s.rec.Canary = nil
	s.fleet.setCanary("", nil)
	var going []*Container
	for ct := range s.fleet.all() {
		if ct.canary && ct.state == StateReady {
			going = append(going, ct)
		}
	}
	s.recordRetiringLocked(going)
	for _, ct := range going {
		s.retireLocked(ct, nil, "canary ended: "+why)
	}
	if e := s.log_.find(c.Deployment); e != nil {
		e.d.CanaryEnded = why
		s.saveHistoryLocked()
	}
	s.touch()
	s.log.Info("canary ended", zap.String("release", c.Release), zap.String("why", why))
}

// canaryCrashedLocked ends the canary when one of its containers crashed:
// a canary is watched, and one that crashes is not what a user promotes.
// The crash's notification (reportCrash) says the canary ended.
func (s *Supervisor) canaryCrashedLocked(msg string) {
	if s.rec.Canary == nil {
		return
	}
	s.stopPromoteLocked("a canary container crashed")
	s.endCanaryLocked(s.rec.Canary, "a canary container crashed: "+msg)
	s.saveRecordLocked()
}

// canaryStatusLocked returns the app's canary, booting or in service, or
// nil.
func (s *Supervisor) canaryStatusLocked() *CanaryStatus {
	if c := s.rec.Canary; c != nil && s.adopted {
		st := &CanaryStatus{Release: c.Release, Image: c.Image, ImageID: c.ImageID, CanaryRules: c.Rules,
			Deployment: c.Deployment, InService: true, Since: c.Since}
		for ct := range s.fleet.all() {
			if ct.canary && ct.state == StateReady && !ct.unhealthy {
				st.Ready++
			}
		}
		return st
	}
	if r := s.rollout; r != nil && r.kind == KindCanary {
		return &CanaryStatus{Release: r.release, Image: r.spec.Image, ImageID: r.spec.ImageID, CanaryRules: r.rules, Deployment: r.id}
	}
	return nil
}

// takeCanary takes out of the adoption scan the ready web containers of
// the canary rec records (nil: none), and makes the others of its release
// leftovers: the canary's release never serves by adoption.
func (a *adoptScan) takeCanary(rec *CanaryRecord) []ContainerInfo {
	if rec == nil {
		return nil
	}
	var ready []ContainerInfo
	for _, info := range a.byRelease[rec.Release] {
		if info.Labels[LabelProcess] == WebProcess && a.probes[info.ID].ready {
			ready = append(ready, info)
		} else {
			a.leftovers = append(a.leftovers, info)
		}
	}
	delete(a.byRelease, rec.Release)
	delete(a.webs, rec.Release)
	return ready
}

// adoptCanaryLocked takes over, at start, the canary a previous run left
// in service: its ready containers serve its share again, as recorded,
// when the release recorded as serving was kept. Otherwise (none of its
// containers answers, another release serves, or its promotion was on its
// way) it ends: its containers are stopped with the leftovers, every
// request goes to the serving release, and its deployment says why.
func (s *Supervisor) adoptCanaryLocked(a *adoptScan, infos []ContainerInfo, keep string, rec AppRecord) {
	c := rec.Canary
	if c == nil {
		return
	}
	why := ""
	switch {
	case len(infos) == 0:
		why = "podswitch restarted and none of its containers answered"
	case rec.Serving == nil || keep != rec.Serving.ID:
		why = "podswitch restarted and the release it was beside no longer serves"
	case rec.Deploying != nil && rec.Deploying.Release == c.Release:
		why = "podswitch restarted during its promotion, which starts over"
	}
	if why != "" {
		a.leftovers = append(a.leftovers, infos...)
		s.rec.Canary = nil
		if e := s.log_.find(c.Deployment); e != nil && e.d.CanaryEnded == "" {
			e.d.CanaryEnded = why
			s.saveHistoryLocked()
		}
		s.log.Warn("the canary in service when podswitch stopped has ended: its containers are stopped, every request goes to the serving release",
			zap.String("release", c.Release), zap.Int64("deployment", c.Deployment), zap.String("why", why))
		return
	}
	for _, info := range infos {
		ct := &Container{ID: info.ID, Name: info.Name, Process: WebProcess, Release: c.Release, Addr: a.probes[info.ID].addr, grace: true, canary: true}
		s.fleet.add(ct, StateReady, fmt.Sprintf("adopted: canary for %d%% of new clients", c.Rules.Percent))
	}
	s.fleet.setCanary(c.Release, &c.Rules)
	s.log.Info("adopted the canary in service", zap.String("release", c.Release), zap.Int("containers", len(infos)), zap.Int("percent", c.Rules.Percent))
}
