package engine

import (
	"maps"
	"slices"
	"strconv"
	"time"
)

// Overrides are the settings that operations (deploy, rollback, scale)
// changed over the config. The last change wins, per setting: an override
// stands as long as the config still has the value it had when the
// operation was made; a config that brings another value for that setting
// wins and drops the override.
type Overrides struct {
	// Image is set by a deploy of an image.
	Image *ImageOverride `json:"image,omitempty"`
	// Release is set by a rollback: every release-defining setting of an
	// earlier release. A deploy made while it stands changes its image.
	Release *ReleaseOverride `json:"release,omitempty"`
	// Counts are set by scale, per process type.
	Counts map[string]CountOverride `json:"counts,omitempty"`
}

// ImageOverride is the image of a deploy.
type ImageOverride struct {
	Image       string    `json:"image"`
	ConfigImage string    `json:"config_image"`
	Op          string    `json:"op"`
	At          time.Time `json:"at"`
}

// ReleaseOverride is the release of a rollback.
type ReleaseOverride struct {
	Release string     `json:"release"`
	Spec    SpecRecord `json:"spec"`
	// ConfigRelease is the release id of the config when it was made.
	ConfigRelease string    `json:"config_release"`
	Op            string    `json:"op"`
	At            time.Time `json:"at"`
}

// CountOverride is the count of a scale.
type CountOverride struct {
	Count       int       `json:"count"`
	ConfigCount int       `json:"config_count"`
	Op          string    `json:"op"`
	At          time.Time `json:"at"`
}

// Operations, as overrides and deployments name them.
const (
	OpDeploy   = "deploy"
	OpRollback = "rollback"
	OpScale    = "scale"
)

// apply returns config with the overrides that still stand, and drops from
// o those that do not. It reports whether it dropped any. A release
// override whose env cannot be resolved any more is dropped too.
func (o *Overrides) apply(config AppSpec, resolve EnvResolver) (AppSpec, bool) {
	spec := config
	dropped := false
	if r := o.Release; r != nil {
		s, err := config.withRelease(r.Spec, resolve)
		if r.ConfigRelease != config.ReleaseID() || err != nil {
			o.Release, dropped = nil, true
		} else {
			spec = s
		}
	}
	if im := o.Image; im != nil {
		if im.ConfigImage != config.Image {
			o.Image, dropped = nil, true
		} else {
			spec.Image = im.Image
		}
	}
	counts := config.Counts()
	for name, c := range o.Counts {
		if have, ok := counts[name]; !ok || have != c.ConfigCount {
			delete(o.Counts, name)
			dropped = true
		}
	}
	if len(o.Counts) > 0 {
		spec.Processes = slices.Clone(spec.Processes)
		for i, p := range spec.Processes {
			if c, ok := o.Counts[p.Name]; ok {
				spec.Processes[i].Count = c.Count
			}
		}
	}
	return spec, dropped
}

// list returns the overrides as users see them, image and release first,
// then counts by process type.
func (o *Overrides) list(config AppSpec) []OverrideStatus {
	var out []OverrideStatus
	if r := o.Release; r != nil {
		out = append(out, OverrideStatus{Setting: "release", Value: r.Release + " (" + r.Spec.Image + ")",
			ConfigValue: r.ConfigRelease + " (" + config.Image + ")", Operation: r.Op, At: r.At})
	}
	if im := o.Image; im != nil {
		out = append(out, OverrideStatus{Setting: "image", Value: im.Image, ConfigValue: im.ConfigImage, Operation: im.Op, At: im.At})
	}
	for _, name := range slices.Sorted(maps.Keys(o.Counts)) {
		c := o.Counts[name]
		out = append(out, OverrideStatus{Setting: "count:" + name, Value: strconv.Itoa(c.Count),
			ConfigValue: strconv.Itoa(c.ConfigCount), Operation: c.Op, At: c.At})
	}
	return out
}
