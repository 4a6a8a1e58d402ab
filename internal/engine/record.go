package engine

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// AppRecord is what the engine keeps of an app across restarts of the
// process, in its Store: which release serves, which deployment was on its
// way, which containers were being retired, the releases that served (for
// rollback), and what operations changed. Env values are kept as the
// config wrote them (placeholders unresolved), never resolved.
type AppRecord struct {
	// Serving is the release that serves; adoption trusts it.
	Serving *ReleaseRecord `json:"serving,omitempty"`
	// Deploying is the deployment of a new release that was on its way:
	// its containers are discarded at the next start, and it starts over.
	Deploying *DeployingRecord `json:"deploying,omitempty"`
	// Retiring are containers switched out and not yet removed.
	Retiring []string `json:"retiring,omitempty"`
	// Releases are the releases that served, oldest first (at most
	// releasesKept), for rollback.
	Releases []ReleaseRecord `json:"releases,omitempty"`
	// Overrides are the settings operations changed over the config.
	Overrides Overrides `json:"overrides"`
	// Image is the image ID the desired release's reference was last
	// resolved to: it stands while the release-defining settings stay the
	// same, so that a reload that changes nothing touches nothing even if
	// the tag names another image now.
	Image *ImagePin `json:"image,omitempty"`
	// Pause and Maintenance are in effect when set.
	Pause       *PauseRecord       `json:"pause,omitempty"`
	Maintenance *MaintenanceRecord `json:"maintenance,omitempty"`
	// Idle is set while the app sleeps: idle for its idle_timeout, its
	// web containers were stopped and the next request wakes it.
	Idle *IdleRecord `json:"idle,omitempty"`
	// Canary is the canary in service (see canary.go).
	Canary *CanaryRecord `json:"canary,omitempty"`
	// Hosted are the ready containers of the serving release on hosts of
	// several, with where they are dialed: a restart while a host's API
	// does not answer keeps those of its containers that answer, as
	// though it had listed them. Nil when none was recorded (one host,
	// or a record of an older podswitch).
	Hosted []HostedRecord `json:"hosted"`
}

// HostedRecord is a ready container of the serving release on a host of
// several.
type HostedRecord struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Process string `json:"process"`
	Addr    string `json:"dial,omitempty"`
	// Port is a web container's PORT (its label).
	Port string `json:"port,omitempty"`
	// Canary marks a web container of the canary in service (several
	// proxies: followers route to it by the canary's rules).
	Canary bool `json:"canary,omitempty"`
}

// releasesKept is how many past releases an app record keeps.
const releasesKept = 10

// ReleaseRecord is a release that served.
type ReleaseRecord struct {
	ID         string     `json:"id"`
	Spec       SpecRecord `json:"spec"`
	DeployedAt time.Time  `json:"deployed_at"`
	Deployment int64      `json:"deployment,omitempty"`
}

// DeployingRecord is a deployment of a new release on its way.
type DeployingRecord struct {
	Release    string    `json:"release"`
	Deployment int64     `json:"deployment"`
	StartedAt  time.Time `json:"started_at"`
}

// ImagePin is an image reference resolved to its ID for the release
// Release (its ID before resolution).
type ImagePin struct {
	Release string    `json:"release"`
	Image   string    `json:"image"`
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
}

// PauseRecord is a pause: new requests wait up to Timeout.
type PauseRecord struct {
	Since   time.Time     `json:"since"`
	Timeout time.Duration `json:"timeout"`
}

// IdleRecord is an app asleep since Since.
type IdleRecord struct {
	Since time.Time `json:"since"`
}

// MaintenanceRecord is maintenance mode: requests get 503 and Message.
type MaintenanceRecord struct {
	Since   time.Time `json:"since"`
	Message string    `json:"message"`
}

// SpecRecord is the part of an AppSpec that defines a release, in a form
// that can be kept: env values as written in the config.
type SpecRecord struct {
	Image string `json:"image"`
	// ImageID is the image ID its containers run; empty in a record of an
	// older podswitch, whose release runs by reference.
	ImageID    string            `json:"image_id,omitempty"`
	EnvSource  map[string]string `json:"env,omitempty"`
	EnvFiles   []string          `json:"env_files,omitempty"`
	Port       int               `json:"port"`
	Processes  []ProcessSpec     `json:"processes"`
	Postdeploy []string          `json:"postdeploy,omitempty"`
	// Settings are the app's container settings; absent in a record of
	// an older podswitch, or when none is set.
	Settings *Settings `json:"settings,omitempty"`
}

// ErrRecordDamaged is wrapped by a Store's Load of a record that cannot
// be decoded: the engine then starts from an empty one. Any other error of
// a shared Store (see Leadership) is the storage not answering, and the
// leader waits for it rather than overwrite the record.
var ErrRecordDamaged = errors.New("the record is damaged")

// Store keeps app records. Save must be durable when it returns (the
// engine relies on the order of its writes to survive a crash) and an
// error leaves the record as it was; Load of a missing record returns a
// zero record and no error; a damaged record is an error, and the engine
// then starts from an empty one. Archive moves a removed app's record
// aside (a missing one is fine), so that the app added back starts from
// its config; Apps lists the apps that have a record.
type Store interface {
	Load(app string) (AppRecord, error)
	Save(app string, rec AppRecord) error
	Archive(app string) error
	Apps() ([]string, error)
}

// record returns the kept form of s.
func (s AppSpec) record() SpecRecord {
	r := SpecRecord{
		Image: s.Image, ImageID: s.ImageID, EnvSource: maps.Clone(s.EnvSource), EnvFiles: slices.Clone(s.EnvFiles),
		Port: s.Port, Processes: slices.Clone(s.Processes), Postdeploy: slices.Clone(s.Postdeploy),
	}
	if !s.Settings.IsZero() {
		c := s.Settings
		r.Settings = &c
	}
	return r
}

// withRelease returns base with the release-defining settings of r (image,
// env, port, commands, hook, container settings), keeping base's counts, timeouts, readiness
// and retries. Env is resolved with resolve. It fails when the env cannot
// be resolved any more.
func (base AppSpec) withRelease(r SpecRecord, resolve EnvResolver) (AppSpec, error) {
	s := base
	s.Image, s.ImageID, s.Port, s.Postdeploy = r.Image, r.ImageID, r.Port, slices.Clone(r.Postdeploy)
	s.EnvSource, s.EnvFiles = maps.Clone(r.EnvSource), slices.Clone(r.EnvFiles)
	s.Settings = Settings{}
	if r.Settings != nil {
		s.Settings = *r.Settings
	}
	env, err := resolve(s.EnvSource, s.EnvFiles)
	if err != nil {
		return AppSpec{}, fmt.Errorf("env of release: %w", err)
	}
	s.Env = env
	counts := base.Counts()
	s.Processes = make([]ProcessSpec, len(r.Processes))
	for i, p := range r.Processes {
		p.Command = slices.Clone(p.Command)
		if n, ok := counts[p.Name]; ok {
			p.Count = n
		}
		s.Processes[i] = p
	}
	return s, nil
}

// EnvResolver turns env values as the config wrote them, and env files,
// into the values containers get.
type EnvResolver func(source map[string]string, files []string) (map[string]string, error)

// identityEnv is the resolver of an engine without one: values are taken
// as written.
func identityEnv(source map[string]string, _ []string) (map[string]string, error) {
	return maps.Clone(source), nil
}
