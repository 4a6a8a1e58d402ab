package caddymodule

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// progressPoll is how often `--wait` reads the deployment it watches.
const progressPoll = 200 * time.Millisecond

// watchDeployment starts a deployment and prints each of its steps as it
// happens, one line each: containers created, each ready with its time,
// the hook, the switch, the old containers draining and stopped. It
// returns once the deployment ended and, after a success, once the
// containers it replaced are gone (or --timeout passed); the exit status
// is that of the deployment.
func (c *cliClient) watchDeployment(uri string, body any, app string) int {
	deadline := time.Time{}
	if c.timeout > 0 {
		deadline = time.Now().Add(c.timeout)
	}
	c.timeout = 0
	b, err := c.request(http.MethodPost, uri, body)
	if err != nil {
		return c.reportErr(err)
	}
	var ans deploymentAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return c.fail("reading the answer: %v", err)
	}
	if ans.Message != "" {
		fmt.Fprintln(c.out, ans.Message)
	}
	d := ans.Deployment
	if d == nil {
		return exitOK
	}
	fmt.Fprintln(c.out, describeDeployment(app, *d))
	p := newProgress(d.StartedAt)
	path := "/podswitch/apps/" + url.PathEscape(app) + "/deployments/" + fmt.Sprint(d.ID)
	for {
		for _, l := range p.lines(*d) {
			fmt.Fprintln(c.out, l)
		}
		done := d.Status.Ended() && (d.Status != engine.StatusSuccess || !d.RetiredAt.IsZero() || !hasOld(*d))
		if done {
			break
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			if d.Status.Ended() {
				break // the deployment ended; only the old containers' stops are not seen
			}
			fmt.Fprintf(c.errOut, "Error: gave up waiting after %s; the deployment goes on (see: caddy podswitch history %s)\n", c.flagDuration("timeout"), app)
			return exitTimeout
		}
		time.Sleep(progressPoll)
		b, err := c.request(http.MethodGet, path, nil)
		if err != nil {
			return c.reportErr(err)
		}
		var next engine.Deployment
		if err := json.Unmarshal(b, &next); err != nil {
			return c.fail("reading the deployment: %v", err)
		}
		d = &next
	}
	fmt.Fprintln(c.out, describeDeployment(app, *d))
	if d.Status == engine.StatusSuccess {
		return exitOK
	}
	if d.Error != "" {
		fmt.Fprintf(c.out, "error: %s\n", d.Error)
	}
	for _, ct := range d.Containers {
		if len(ct.Output) > 0 {
			fmt.Fprintf(c.out, "last output of %s container %s:\n", ct.Process, shortID(ct.ID))
			for _, l := range ct.Output {
				fmt.Fprintf(c.out, "    %s\n", l)
			}
			break
		}
	}
	if h := d.Hook; h != nil && d.Status == engine.StatusHookError && len(h.Output) > 0 {
		fmt.Fprintln(c.out, "last output of the postdeploy hook:")
		for _, l := range h.Output {
			fmt.Fprintf(c.out, "    %s\n", l)
		}
	}
	return exitFailed
}

func (c *cliClient) flagDuration(name string) time.Duration {
	d, _ := c.cmd.Flags().GetDuration(name)
	return d
}

func hasOld(d engine.Deployment) bool {
	return slices.ContainsFunc(d.Containers, func(c engine.ContainerRecord) bool { return c.Role == "old" })
}

// progress turns the successive states of a deployment into the lines not
// printed yet, in the order things happened.
type progress struct {
	start   time.Time
	printed map[string]bool
}

func newProgress(start time.Time) *progress {
	return &progress{start: start, printed: map[string]bool{}}
}

type step struct {
	at   time.Time
	key  string
	text string
}

func (p *progress) lines(d engine.Deployment) []string {
	var steps []step
	add := func(at time.Time, key, text string) {
		if !at.IsZero() && !p.printed[key] {
			steps = append(steps, step{at, key, text})
		}
	}
	for _, c := range d.Containers {
		id := shortID(c.ID)
		created := c.CreatedAt
		for i, tr := range c.Timeline {
			key := fmt.Sprintf("%s/%d", c.ID, i)
			switch {
			case c.Role == "new" && tr.State == engine.StateStarting:
				if created.IsZero() {
					created = tr.At
				}
				add(created, key, fmt.Sprintf("%s container %s created, started after %s", c.Process, id, tr.At.Sub(created).Round(time.Millisecond)))
			case c.Role == "new" && tr.State == engine.StateBooted:
				what := "ready"
				if c.Process != engine.WebProcess {
					what = "running"
				}
				add(tr.At, key, fmt.Sprintf("%s container %s %s, %s after its creation", c.Process, id, what, tr.At.Sub(created).Round(time.Millisecond)))
			case tr.State == engine.StateCrashed:
				add(tr.At, key, fmt.Sprintf("%s container %s crashed: %s", c.Process, id, tr.Note))
			case c.Role == "new" && tr.State == engine.StateStopping:
				add(tr.At, key, fmt.Sprintf("%s container %s discarded", c.Process, id))
			case c.Role == "old" && tr.State == engine.StateDraining:
				add(tr.At, key, fmt.Sprintf("old %s container %s draining", c.Process, id))
			case c.Role == "old" && tr.State == engine.StateStopped:
				add(tr.At, key, fmt.Sprintf("old %s container %s stopped", c.Process, id))
			}
		}
	}
	if d.Note != "" {
		add(d.NoteAt, "note/"+d.Note, d.Note)
	}
	if h := d.Hook; h != nil {
		add(h.StartedAt, "hook/start", "postdeploy hook started")
		if !h.EndedAt.IsZero() {
			text := "postdeploy hook ended"
			if h.ExitCode != nil {
				text += fmt.Sprintf(" with exit code %d", *h.ExitCode)
			}
			add(h.EndedAt, "hook/end", fmt.Sprintf("%s after %s", text, h.EndedAt.Sub(h.StartedAt).Round(time.Millisecond)))
		}
	}
	add(d.SwitchedAt, "switch", fmt.Sprintf("switched: release %s serves, %s after the start", d.Release, d.SwitchedAt.Sub(d.StartedAt).Round(time.Millisecond)))
	slices.SortStableFunc(steps, func(a, b step) int { return cmp.Compare(a.at.UnixNano(), b.at.UnixNano()) })
	out := make([]string, len(steps))
	for i, s := range steps {
		p.printed[s.key] = true
		out[i] = fmt.Sprintf("%8s  %s", "+"+s.at.Sub(p.start).Round(time.Millisecond).String(), s.text)
	}
	return out
}

// watchScale sets counts and prints each container that starts, becomes
// ready or goes, until the app runs its counts (or a process type gave up,
// or --timeout passed).
func (c *cliClient) watchScale(uri string, counts map[string]int, app string) int {
	deadline := time.Time{}
	if c.timeout > 0 {
		deadline = time.Now().Add(c.timeout)
	}
	c.timeout = 0
	b, err := c.request(http.MethodPost, uri, counts)
	if err != nil {
		return c.reportErr(err)
	}
	start := time.Now()
	var seen map[string]engine.State // nil until the first answer: what ran before is not news
	for {
		var st engine.AppStatus
		if err := json.Unmarshal(b, &st); err != nil {
			return c.fail("reading the answer: %v", err)
		}
		now := map[string]engine.State{}
		for _, ct := range st.Containers {
			now[ct.ID] = ct.State
			if prev, ok := seen[ct.ID]; seen == nil || (ok && prev == ct.State) {
				continue
			}
			fmt.Fprintf(c.out, "%8s  %s container %s %s\n", "+"+time.Since(start).Round(time.Millisecond).String(), ct.Process, shortID(ct.ID), ct.State)
		}
		for id := range seen {
			if _, ok := now[id]; !ok {
				fmt.Fprintf(c.out, "%8s  container %s stopped\n", "+"+time.Since(start).Round(time.Millisecond).String(), shortID(id))
			}
		}
		seen = now
		if scaled(st) {
			fmt.Fprintf(c.out, "app %s: %s\n", st.Name, formatCounts(st.Processes))
			if len(st.GaveUp) > 0 {
				fmt.Fprintf(c.errOut, "Error: app %s gave up starting %s containers (see: caddy podswitch history %s)\n", st.Name, strings.Join(st.GaveUp, ", "), st.Name)
				return exitFailed
			}
			return exitOK
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			fmt.Fprintf(c.errOut, "Error: gave up waiting after %s; the scale goes on (see: caddy podswitch status %s)\n", c.flagDuration("timeout"), app)
			return exitTimeout
		}
		time.Sleep(progressPoll)
		if b, err = c.request(http.MethodGet, "/podswitch/apps/"+url.PathEscape(app), nil); err != nil {
			return c.reportErr(err)
		}
	}
}
