package engine

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		envs  []map[string]string
		want  []string
	}{
		{"no env", []string{"hello"}, nil, []string{"hello"}},
		{"one value", []string{"connecting to postgres://u:hunter2@db/x failed"},
			[]map[string]string{{"DATABASE_URL": "postgres://u:hunter2@db/x"}},
			[]string{"connecting to [redacted DATABASE_URL] failed"}},
		{"every occurrence", []string{"s3cr3t! and s3cr3t!", "s3cr3t!"},
			[]map[string]string{{"TOKEN": "s3cr3t!"}},
			[]string{"[redacted TOKEN] and [redacted TOKEN]", "[redacted TOKEN]"}},
		{"short values stay", []string{"mode prod on port 5000, debug=false"},
			[]map[string]string{{"MODE": "prod", "PORT2": "5000", "DEBUG": "false", "SIX": "sixsix"}},
			[]string{"mode prod on port 5000, debug=false"}},
		{"six characters are redacted", []string{"key=sixsix"},
			[]map[string]string{{"SIX": "sixsix"}},
			[]string{"key=[redacted SIX]"}},
		{"longest first: a value inside another is redacted whole", []string{"url postgres://u:hunter2secret@db/x pw hunter2secret"},
			[]map[string]string{{"PASSWORD": "hunter2secret", "DATABASE_URL": "postgres://u:hunter2secret@db/x"}},
			[]string{"url [redacted DATABASE_URL] pw [redacted PASSWORD]"}},
		{"overlapping values both hidden", []string{"xaaaaaabbbbbbccccccx"},
			[]map[string]string{{"A": "aaaaaabbbbbb", "B": "bbbbbbcccccc"}},
			[]string{"x[redacted A][redacted B]x"}},
		{"one value under two names: the first name", []string{"tok=abcdefgh"},
			[]map[string]string{{"ZED": "abcdefgh", "ALPHA": "abcdefgh"}},
			[]string{"tok=[redacted ALPHA]"}},
		{"several maps", []string{"old oldsecret new newsecret"},
			[]map[string]string{{"KEY": "newsecret"}, {"KEY": "oldsecret"}},
			[]string{"old [redacted KEY] new [redacted KEY]"}},
		{"a value that reads like the mark", []string{"secret=redacted"},
			[]map[string]string{{"A": "secret=redacted", "B": "redacted"}},
			[]string{"[redacted A]"}},
		{"nil lines", nil, []map[string]string{{"A": "abcdefgh"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.lines)
			got := redact(tc.lines, tc.envs...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("redact(%q) = %q, want %q", tc.lines, got, tc.want)
			}
			if !slices.Equal(in, tc.lines) {
				t.Errorf("redact changed its input: %q", tc.lines)
			}
		})
	}
}

// The output kept of a container that failed is redacted before it is
// stored, shown or notified: a new container that crashes while booting
// (the deployment's record in the status and the history, its event) and
// a serving container that crashes (its event).
func TestCrashOutputRedacted(t *testing.T) {
	const secret = "postgres://u:hunter2secret@db/x"
	synctest.Test(t, func(t *testing.T) {
		hist := newMemHistory()
		h := newHarnessWith(t, nil, func(d *Deps) { d.History = hist })
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1)
		spec.Env["DATABASE_URL"] = secret
		printed := []string{"starting", "panic: cannot connect to " + secret, "exit"}
		h.rt.OnImage(spec.Image, behavior{Output: printed})
		s, _ := h.deployFirst(spec)

		// A serving container crashes.
		web := h.containers("", WebProcess)
		h.rt.Exit(web[0], 2)
		waitFor(t, "crash event", 5*time.Second, func() bool { return len(h.eventsNamed(EventCrashed)) == 1 })
		checkRedacted(t, "crash event", h.eventsNamed(EventCrashed)[0].Output)

		// A new release whose container crashes while booting.
		h.rt.OnImage("localhost/blog:v2", behavior{Crash: true, Output: printed})
		res, err := s.Deploy("localhost/blog:v2", "")
		if err != nil {
			t.Fatal(err)
		}
		d := h.waitDone(s, res.Deployment.ID)
		if d.Status != StatusCrashedError {
			t.Fatalf("status %s, want crashed-error", d.Status)
		}
		synctest.Wait()
		var st Deployment
		for _, x := range s.Status().Deployments {
			if x.ID == d.ID {
				st = x
			}
		}
		checkRedacted(t, "status", outputs(st))
		saved, _ := hist.snapshot(appName)
		checkRedacted(t, "history", outputs(saved[len(saved)-1]))
		var evs []Deployment
		for _, ev := range h.deploymentEvents() {
			if ev.ID == d.ID {
				evs = append(evs, ev)
			}
		}
		if len(evs) != 1 {
			t.Fatalf("%d events of deployment %d", len(evs), d.ID)
		}
		checkRedacted(t, "deployment event", outputs(evs[0]))
	})
}

// outputs returns the output lines of every container of d.
func outputs(d Deployment) []string {
	var out []string
	for _, c := range d.Containers {
		out = append(out, c.Output...)
	}
	return out
}

func checkRedacted(t *testing.T, where string, lines []string) {
	t.Helper()
	joined := strings.Join(lines, "\n")
	if strings.Contains(joined, "hunter2") || !strings.Contains(joined, "panic: cannot connect to [redacted DATABASE_URL]") {
		t.Errorf("%s output %q: want the secret redacted as [redacted DATABASE_URL]", where, lines)
	}
}

// A failed hook's output is redacted in its deployment's record.
func TestHookOutputRedacted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1)
		spec.Env["DATABASE_URL"] = "postgres://u:hunter2secret@db/x"
		spec.Postdeploy = []string{"/app/migrate"}
		h.rt.OnImage(spec.Image, behavior{HookExit: 1, Output: []string{"panic: cannot connect to postgres://u:hunter2secret@db/x"}})
		h.m.Apply([]AppSpec{spec})
		synctest.Wait()
		s := h.sup()
		d := h.waitDone(s, h.newest(s).ID)
		if d.Status != StatusHookError || d.Hook == nil {
			t.Fatalf("deployment %s, hook %+v; want hook-error", d.Status, d.Hook)
		}
		checkRedacted(t, "hook", d.Hook.Output)
	})
}
