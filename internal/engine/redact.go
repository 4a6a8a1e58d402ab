package engine

import (
	"cmp"
	"maps"
	"slices"
	"strings"
)

// redactMinLen is the length a value must pass to be redacted: shorter
// ones (a port, "true", "prod") are too common in output to hide.
const redactMinLen = 5

// redact returns lines with every value of envs longer than redactMinLen
// replaced by "[redacted NAME]", longest values first, so that a value that
// contains another is redacted whole. A value set under two names is
// redacted under the first name in order. lines itself is not changed.
func redact(lines []string, envs ...map[string]string) []string {
	type secret struct{ name, value string }
	var secrets []secret
	seen := map[string]bool{}
	for _, env := range envs {
		for _, name := range slices.Sorted(maps.Keys(env)) {
			v := env[name]
			if len(v) <= redactMinLen || seen[v] {
				continue
			}
			seen[v] = true
			secrets = append(secrets, secret{name, v})
		}
	}
	if len(secrets) == 0 || len(lines) == 0 {
		return lines
	}
	slices.SortStableFunc(secrets, func(a, b secret) int { return cmp.Compare(len(b.value), len(a.value)) })
	out := make([]string, len(lines))
	for i, l := range lines {
		// Each occurrence, longest values first, claims the bytes not
		// claimed yet; a run of bytes claimed by one occurrence becomes
		// its mark. Two values that overlap in the text are both hidden
		// whole.
		var owner []int // 1 + index in occs
		var occs []int  // the secret of each occurrence
		for k, sec := range secrets {
			for from := 0; ; {
				j := strings.Index(l[from:], sec.value)
				if j < 0 {
					break
				}
				if owner == nil {
					owner = make([]int, len(l))
				}
				at := from + j
				occs = append(occs, k)
				for b := at; b < at+len(sec.value); b++ {
					if owner[b] == 0 {
						owner[b] = len(occs)
					}
				}
				from = at + 1
			}
		}
		if owner == nil {
			out[i] = l
			continue
		}
		var sb strings.Builder
		for b := 0; b < len(l); b++ {
			if owner[b] == 0 {
				sb.WriteByte(l[b])
				continue
			}
			if b == 0 || owner[b-1] != owner[b] {
				sb.WriteString("[redacted " + secrets[occs[owner[b]-1]].name + "]")
			}
		}
		out[i] = sb.String()
	}
	return out
}

// secretsLocked returns the env values that container c's output may
// hold: those of its release (the serving one, or a deployment's) and the
// app's desired ones.
func (s *Supervisor) secretsLocked(c *Container) []map[string]string {
	envs := []map[string]string{s.desired.Env, s.config.Env}
	if sv := s.serving; sv != nil && sv.spec != nil && sv.ID == c.Release {
		envs = append(envs, sv.spec.Env)
	}
	for _, r := range []*rollout{s.rollout, c.abandoned} {
		if r != nil && r.release == c.Release {
			envs = append(envs, r.spec.Env)
		}
	}
	return envs
}
