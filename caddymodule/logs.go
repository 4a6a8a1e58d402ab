package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// maxLogTail bounds ?tail of the logs route.
const maxLogTail = 10000

// logsReadTimeout bounds a request for past lines (without follow), the
// client's reading included.
const logsReadTimeout = 5 * time.Minute

// maxFollow bounds the containers one ?follow request streams: each is a
// connection to Podman for as long as the request lasts.
const maxFollow = 32

// serveLogs streams the output of an app's containers through Podman's
// API, one line per output line, prefixed with the container's process type
// and short id: `web.1a2b3c4d5e6f | listening on :5000`. ?process= and
// ?container= narrow it, ?tail= is how many of each container's last lines
// come first (default 100, -1 for all), ?follow=1 keeps the stream open
// for new lines until the client leaves.
func serveLogs(w http.ResponseWriter, r *http.Request, rt engine.Runtime, s *engine.Supervisor) error {
	q := r.URL.Query()
	tail := 100
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < -1 || n > maxLogTail {
			return apiErr(http.StatusBadRequest, "tail=%q: want a number of lines from 0 to %d, or -1 for all", v, maxLogTail)
		}
		tail = n
	}
	follow := false
	if q.Has("follow") {
		b, err := strconv.ParseBool(q.Get("follow"))
		if q.Get("follow") != "" && err != nil {
			return apiErr(http.StatusBadRequest, "follow=%q: want follow=1 or follow=0", q.Get("follow"))
		}
		follow = q.Get("follow") == "" || b
	}
	process, container := q.Get("process"), q.Get("container")
	var targets []engine.ContainerStatus
	for _, c := range s.Status().Containers {
		switch {
		case c.State == engine.StateStopped:
		case process != "" && c.Process != process:
		case container != "" && c.ID != container && c.Name != container && !(len(container) >= 12 && strings.HasPrefix(c.ID, container)):
		default:
			targets = append(targets, c)
		}
	}
	if len(targets) == 0 {
		switch {
		case container != "":
			return apiErr(http.StatusNotFound, "app %s has no container %q", s.Name(), container)
		case process != "":
			return apiErr(http.StatusNotFound, "app %s has no container of process type %q", s.Name(), process)
		}
		return apiErr(http.StatusNotFound, "app %s has no container", s.Name())
	}
	if follow && len(targets) > maxFollow {
		return apiErr(http.StatusBadRequest, "follow streams at most %d containers, and app %s has %d: narrow it with process or container", maxFollow, s.Name(), len(targets))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	write := func(prefix string, l engine.LogLine) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s | %s\n", prefix, l.Text)
		if flusher != nil && follow {
			flusher.Flush()
		}
	}
	ctx := r.Context()
	// The lines go to a client that may read slowly: Stream keeps these
	// calls off the slots that deploys, stops and the resync need. A
	// read of past lines has a deadline; a follow lasts as the client
	// does.
	opts := engine.LogOptions{Tail: tail, Follow: follow, Stream: true}
	if !follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, logsReadTimeout)
		defer cancel()
		for _, c := range targets {
			prefix := c.Process + "." + shortID(c.ID)
			if err := rt.Logs(ctx, c.ID, opts, func(l engine.LogLine) { write(prefix, l) }); err != nil && ctx.Err() == nil {
				fmt.Fprintf(w, "%s | podswitch: reading the output failed: %v\n", prefix, err)
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	for _, c := range targets {
		prefix := c.Process + "." + shortID(c.ID)
		wg.Go(func() {
			if err := rt.Logs(ctx, c.ID, opts, func(l engine.LogLine) { write(prefix, l) }); err != nil && ctx.Err() == nil {
				write(prefix, engine.LogLine{Text: "podswitch: reading the output failed: " + err.Error()})
			}
		})
	}
	wg.Wait()
	return nil
}
