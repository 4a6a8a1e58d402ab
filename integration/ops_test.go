package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Caddy killed with SIGKILL while an app serves, then started again: the same
// containers serve (none restarted) and no duplicate is made. A normal stop
// leaves the containers running too.
func TestCaddyRestartAdoptsContainers(t *testing.T) {
	app := uniqueName("adopt")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"process worker 1 /app worker", "worker_ready_time 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)
	before := allIDs(podmanContainers(t, app))

	c.kill()
	if code, _ := tryGet(c.url("/")); code != 0 {
		t.Fatalf("caddy still answers after kill: %d", code)
	}
	if got := allIDs(podmanContainers(t, app)); !slices.Equal(got, before) {
		t.Fatalf("containers changed while caddy was down: %v, want %v", got, before)
	}
	c.launch()
	st := c.waitSettled(app, 2, 30*time.Second)
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after restart: %d %q", code, body)
	}
	time.Sleep(time.Second)
	if got := allIDs(podmanContainers(t, app)); !slices.Equal(got, before) {
		t.Errorf("after kill -9 and start: podman has %v, want the same %v", got, before)
	}
	ids := []string{}
	for _, ct := range c.status(app).Containers {
		ids = append(ids, ct.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, before) {
		t.Errorf("podswitch tracks %v, want %v", ids, before)
	}
	for _, d := range st.Deployments {
		if d.Status == engine.StatusStarting {
			t.Errorf("a deployment started after adoption: %+v", d)
		}
	}

	// A normal stop leaves the app running.
	c.stop()
	if got := allIDs(podmanContainers(t, app)); !slices.Equal(got, before) {
		t.Errorf("after caddy stop: podman has %v, want %v still running", got, before)
	}
	for _, ci := range podmanContainers(t, app) {
		if !ci.Running {
			t.Errorf("container %s stopped with caddy", ci.Name)
		}
	}
}

func allIDs(list []engine.ContainerInfo) []string {
	ids := make([]string, 0, len(list))
	for _, ci := range list {
		ids = append(ids, ci.ID)
	}
	slices.Sort(ids)
	return ids
}

func tryGet(url string) (int, string) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /metrics on the admin endpoint shows the podswitch series with the values
// of what just happened.
func TestMetrics(t *testing.T) {
	app := uniqueName("met")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"boot_timeout 2s"}}
	c := startCaddy(t, cfg)
	c.waitDeployment(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)
	bad := cfg
	bad.Image = imageV2
	bad.Lines = append(slices.Clone(cfg.Lines), "env MODE never-listen")
	c.reload(bad)
	if d := c.waitDeployment(app, imageV2, 60*time.Second); d.Status != engine.StatusTimeoutError {
		t.Fatalf("status %s, want timeout-error", d.Status)
	}
	_, body := get(t, "http://"+c.admin+"/metrics")
	for _, want := range []string{
		`podswitch_deployments_total{app="` + app + `",kind="deploy",status="success"} 1`,
		`podswitch_deployments_total{app="` + app + `",kind="deploy",status="timeout-error"} 1`,
		`podswitch_containers{app="` + app + `",process="web",state="ready"} 2`,
		`podswitch_boot_duration_seconds_count{app="` + app + `",process="web",result="ready"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The first failed boot cancels its siblings, which are not counted.
	failed := regexp.MustCompile(`podswitch_boot_duration_seconds_count\{app="` + app + `",process="web",result="failed"\} [12]\n`)
	if !failed.MatchString(body) {
		t.Errorf("/metrics lacks the failed boots of the timed-out release")
	}
	if t.Failed() {
		re := regexp.MustCompile(`(?m)^podswitch_.*$`)
		t.Logf("podswitch series:\n%s", strings.Join(re.FindAllString(body, -1), "\n"))
	}
}

// The Podman service stopped while apps run: Caddy keeps proxying to the
// running containers, the status says the runtime is unreachable, and
// operations resume once the service is back.
func TestPodmanServiceDown(t *testing.T) {
	app := uniqueName("down")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2}
	c := startCaddy(t, cfg)
	c.waitDeployment(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)

	stopPodmanService(t)
	t.Cleanup(func() { startPodmanService(t) })
	l := startLoad(t, c.url("/"), 100)
	l.allowDrops = 2 // it reloads under load: see reloadDrop
	deadline := time.Now().Add(40 * time.Second)
	for c.status(app).RuntimeError == "" {
		if time.Now().After(deadline) {
			t.Fatal("status never said the runtime is unreachable")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("runtime_error: %s", c.status(app).RuntimeError)
	// A deploy asked for meanwhile waits for the service.
	next := cfg
	next.Image = imageV2
	c.reload(next)
	time.Sleep(time.Second)
	l.check(t, 75)

	startPodmanService(t)
	d := c.waitDeployment(app, imageV2, 120*time.Second)
	if d.Status != engine.StatusSuccess {
		t.Fatalf("deploy after the service came back: %s %s", d.Status, d.Error)
	}
	deadline = time.Now().Add(40 * time.Second)
	for c.status(app).RuntimeError != "" {
		if time.Now().After(deadline) {
			t.Fatal("status still says the runtime is unreachable")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the service came back: %d %q", code, body)
	}
}

func stopPodmanService(t *testing.T) {
	t.Helper()
	// Only the service of the tests' Podman: the extra hosts (psh.sh) have
	// services of their own.
	out, _ := exec.Command("pkill", "-TERM", "-f", servicePattern()).CombinedOutput()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for rt.Ping(ctx) == nil {
		if ctx.Err() != nil {
			t.Fatalf("podman service still answers after pkill: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startPodmanService(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if rt.Ping(ctx) == nil {
		return
	}
	var out bytes.Buffer
	cmd := exec.Command("bash", "../scripts/setup.sh")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("restarting the podman service: %v\n%s", err, out.String())
	}
}

// Env values are secrets: they reach the container but never the logs nor
// the podswitch API; containers run with no-new-privileges.
func TestSecretsAndPrivileges(t *testing.T) {
	t.Setenv("PODSWITCH_IT_SECRET", "s3cr3t-from-env")
	app := uniqueName("sec")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{
		"env API_TOKEN v3ry-s3cr3t-t0ken", "env FROM_ENV {env.PODSWITCH_IT_SECRET}",
	}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	if _, body := get(t, c.url("/env?k=API_TOKEN")); body != "v3ry-s3cr3t-t0ken" {
		t.Errorf("the app got API_TOKEN=%q", body)
	}
	if _, body := get(t, c.url("/env?k=FROM_ENV")); body != "s3cr3t-from-env" {
		t.Errorf("the app got FROM_ENV=%q, want the placeholder expanded", body)
	}
	_, apps := get(t, "http://"+c.admin+"/podswitch/apps")
	_, one := get(t, "http://"+c.admin+"/podswitch/apps/"+app)
	_, hist := get(t, "http://"+c.admin+"/podswitch/apps/"+app+"/deployments")
	for _, secret := range []string{"v3ry-s3cr3t-t0ken", "s3cr3t-from-env"} {
		for name, text := range map[string]string{"log": c.rawLogs(), "apps": apps, "app": one, "deployments": hist} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret env value appears in the %s", name)
			}
		}
	}
	for _, ct := range c.status(app).Containers {
		opts := podmanCLI(t, "inspect", "--format", "{{.HostConfig.SecurityOpt}} {{.HostConfig.CapAdd}} {{.HostConfig.Privileged}}", ct.ID)
		if !strings.Contains(opts, "no-new-privileges") || strings.Contains(opts, "true") {
			t.Errorf("container %s runs with %q, want no-new-privileges, no added capabilities, not privileged", ct.Name, opts)
		}
	}
}
