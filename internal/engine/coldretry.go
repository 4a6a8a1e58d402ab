package engine

import (
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.uber.org/zap"
)

// coldRetry is the retry of a deployment of release that timed out while
// nothing of the app served (its first deployment, or one after every
// container was lost): a host too loaded for a cold start of many apps, an
// image slow to start once. Such an app is down, and must not stay down
// until someone reloads: the deployment is tried again with backoff, as a
// crash replacement is, at most restart_attempts times, then a give-up is
// notified. Other failures (a crash at boot, a failed hook, a start error)
// are the release's own and are not retried; a missing image is retried by
// the next config load.
type coldRetry struct {
	release  string
	attempts int
	backoff  *backoff.ExponentialBackOff
	timer    *time.Timer
}

// deploymentEndedLocked follows the end of deployment d: a timeout while
// nothing serves schedules a try again, a success ends the retries.
func (s *Supervisor) deploymentEndedLocked(d *Deployment) {
	br := s.coldRetry
	if d.Status == StatusSuccess {
		s.stopColdRetryLocked()
		return
	}
	if d.Kind != KindDeploy || d.Status != StatusTimeoutError || s.serving != nil || d.Release != s.lastTried || s.removed || s.ctx.Err() != nil {
		return
	}
	if br == nil || br.release != d.Release {
		s.stopColdRetryLocked()
		br = &coldRetry{release: d.Release, backoff: newBackoff(retryBase, retryMax)}
		s.coldRetry = br
	}
	if br.attempts >= s.desired.RestartAttempts {
		if br.attempts == 0 {
			return // restart_attempts 0: no try again, so nothing to give up
		}
		msg := fmt.Sprintf("nothing of the app serves: its deployment of release %s timed out %d times (%s); deploy or reload to try again", shortID(d.Release), br.attempts+1, d.Error)
		s.log.Error("gave up deploying", zap.String("release", d.Release), zap.Int("attempts", br.attempts+1))
		s.emit(Event{Name: EventGaveUp, Message: msg})
		return
	}
	br.attempts++
	wait := br.backoff.NextBackOff()
	s.log.Warn("deployment timed out with nothing serving, trying again", zap.String("release", d.Release),
		zap.Int("attempt", br.attempts), zap.Int("attempts", s.desired.RestartAttempts), zap.Duration("delay", wait))
	br.timer = time.AfterFunc(wait, func() {
		s.lock()
		br.timer = nil
		if s.coldRetry == br && s.serving == nil && s.rollout == nil && s.lastTried == br.release && s.ctx.Err() == nil {
			s.lastTried = "" // the loop deploys the desired release again
		}
		s.unlock()
		s.poke()
	})
}

// stopColdRetryLocked ends the retries of a timed-out deployment: one
// succeeded, or something else is wanted now.
func (s *Supervisor) stopColdRetryLocked() {
	if br := s.coldRetry; br != nil && br.timer != nil {
		br.timer.Stop()
	}
	s.coldRetry = nil
}
