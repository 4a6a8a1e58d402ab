package caddymodule

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podswitch/podswitch/internal/engine"
)

// metrics are podswitch's Prometheus series. They live as long as the
// process (like the engine) and are registered in the registry of every
// config Caddy loads, so they show on the admin endpoint's /metrics.
type metrics struct {
	deployments    *prometheus.CounterVec
	deployDuration *prometheus.HistogramVec
	bootDuration   *prometheus.HistogramVec
	crashes        *prometheus.CounterVec
	gaveUp         *prometheus.CounterVec
	containers     *prometheus.Desc
	// routed counts requests by the release they went to while a canary
	// is in service; share is each release's share of new clients.
	routed *prometheus.CounterVec
	share  *prometheus.Desc
	// coldStart is the time of each wake of an app asleep.
	coldStart *prometheus.HistogramVec
	// hostState is 1 for each host's current state, 0 for the others.
	hostState *prometheus.GaugeVec
	// hostContainers counts the containers of each app on each host of
	// several.
	hostContainers *prometheus.Desc
	// storageOps counts the calls to a shared storage, by call and
	// result; leading is 1 for each app this proxy leads.
	storageOps *prometheus.CounterVec
	leading    *prometheus.GaugeVec
}

var promMetrics = newMetrics()

func newMetrics() *metrics {
	const ns = "podswitch"
	buckets := []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	return &metrics{
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "deployments_total",
			Help: "Deployments (and restarts) that ended, by app, kind and status.",
		}, []string{"app", "kind", "status"}),
		deployDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "deployment_duration_seconds", Buckets: buckets,
			Help: "Time from the start of a deployment to its end, by app, kind and status.",
		}, []string{"app", "kind", "status"}),
		bootDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "boot_duration_seconds", Buckets: buckets,
			Help: "Time from a container's creation to ready (result=ready) or to its failed boot (result=failed).",
		}, []string{"app", "process", "result"}),
		crashes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "crashes_total",
			Help: "Ready containers that exited outside podswitch, by app and process type.",
		}, []string{"app", "process"}),
		gaveUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "gave_up_total",
			Help: "Restarts, scale-ups and crash replacements that gave up after restart_attempts.",
		}, []string{"app", "process"}),
		containers: prometheus.NewDesc("podswitch_containers",
			"Containers podswitch manages, by app, process type and state.",
			[]string{"app", "process", "state"}, nil),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "cold_start_seconds", Buckets: buckets,
			Help: "Time from what woke an app asleep (idle_timeout) to its first ready web container, by app and trigger.",
		}, []string{"app", "trigger"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "canary_requests_total",
			Help: "Requests proxied while the app had a canary in service, by the release they went to (role: serving or canary).",
		}, []string{"app", "role"}),
		hostState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "host_state",
			Help: "State of each Podman host of several: 1 for its current state (up, unmanaged, unreachable, lost), 0 for the others.",
		}, []string{"host", "state"}),
		hostContainers: prometheus.NewDesc("podswitch_host_containers",
			"Containers podswitch manages on each Podman host of several, by host, app, process type and state.",
			[]string{"host", "app", "process", "state"}, nil),
		storageOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "storage_operations_total",
			Help: "Calls of several proxies to the storage they share, by call (lock, unlock, store, load, delete, exists, list) and result (ok, error).",
		}, []string{"op", "result"}),
		leading: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "leader",
			Help: "1 for each app this proxy leads (several proxies), 0 for an app it follows.",
		}, []string{"app"}),
		share: prometheus.NewDesc("podswitch_release_share_percent",
			"Share of new clients each serving release of an app gets: 100 for the serving release without a canary; with one, the canary's percent and the rest.",
			[]string{"app", "release", "role"}, nil),
	}
}

// register adds the series to reg; a registry that has them already is
// fine.
func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.deployments, m.deployDuration, m.bootDuration, m.crashes, m.gaveUp, m.routed, m.coldStart, m.hostState, m.storageOps, m.leading, m} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// observe records an engine event.
func (m *metrics) observe(ev engine.Event) {
	switch ev.Name {
	case engine.EventDeployment:
		d := ev.Deployment
		m.deployments.WithLabelValues(ev.App, d.Kind, string(d.Status)).Inc()
		m.deployDuration.WithLabelValues(ev.App, d.Kind, string(d.Status)).Observe(d.EndedAt.Sub(d.StartedAt).Seconds())
	case engine.EventCrashed:
		m.crashes.WithLabelValues(ev.App, ev.Process).Inc()
	case engine.EventGaveUp:
		m.gaveUp.WithLabelValues(ev.App, ev.Process).Inc()
	}
}

// observeHost records a host's state.
func (m *metrics) observeHost(st engine.HostStatus) {
	for _, s := range []engine.HostState{engine.HostUp, engine.HostUnmanaged, engine.HostUnreachable, engine.HostLost} {
		v := 0.0
		if s == st.State {
			v = 1
		}
		m.hostState.WithLabelValues(st.Name, string(s)).Set(v)
	}
}

// forgetHost drops the series of a host no longer in the config.
func (m *metrics) forgetHost(name string) {
	m.hostState.DeletePartialMatch(prometheus.Labels{"host": name})
}

// observeBoot records one container boot.
func (m *metrics) observeBoot(app, process string, took time.Duration, ok bool) {
	result := "ready"
	if !ok {
		result = "failed"
	}
	m.bootDuration.WithLabelValues(app, process, result).Observe(took.Seconds())
}

// observeWake records one wake of an app asleep.
func (m *metrics) observeWake(app, trigger string, took time.Duration) {
	m.coldStart.WithLabelValues(app, trigger).Observe(took.Seconds())
}

// Describe implements prometheus.Collector for the containers gauge.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.containers
	ch <- m.hostContainers
	ch <- m.share
}

// Collect implements prometheus.Collector: the containers gauge is read
// from the engine at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	mgr := currentManager()
	if mgr == nil {
		return
	}
	several := len(mgr.Hosts()) > 0
	for _, name := range mgr.Apps() {
		s := mgr.App(name)
		if s == nil {
			continue
		}
		for k, v := range s.ContainerCounts() {
			ch <- prometheus.MustNewConstMetric(m.containers, prometheus.GaugeValue, float64(v), name, k[0], k[1])
		}
		if several {
			byHost := map[[3]string]int{}
			for _, c := range s.Status().Containers {
				byHost[[3]string{c.Host, c.Process, string(c.State)}]++
			}
			for k, v := range byHost {
				ch <- prometheus.MustNewConstMetric(m.hostContainers, prometheus.GaugeValue, float64(v), k[0], name, k[1], k[2])
			}
		}
		p := mgr.Pool(name).Load()
		if p == nil || p.Release == "" {
			continue
		}
		serving := 100.0
		if c := p.Canary; c != nil {
			serving -= float64(c.Percent)
			ch <- prometheus.MustNewConstMetric(m.share, prometheus.GaugeValue, float64(c.Percent), name, c.Release, "canary")
		}
		ch <- prometheus.MustNewConstMetric(m.share, prometheus.GaugeValue, serving, name, p.Release, "serving")
	}
}
