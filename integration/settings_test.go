package integration

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// The settings tests run images of the test app built from this checkout
// (it has ALLOC_MB and the fetch, write and read control routes), under
// tags of their own so that the shared images stay as they are.
const (
	settingsV1 = "localhost/podswitch-testapp-settings:v1"
	settingsV2 = "localhost/podswitch-testapp-settings:v2"
)

var (
	settingsImagesOnce sync.Once
	settingsImagesErr  string
)

// settingsImages builds the test app and the images settingsV1 and
// settingsV2, once per test process.
func settingsImages(t *testing.T) {
	t.Helper()
	settingsImagesOnce.Do(func() {
		dir := t.TempDir()
		build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "app"), "./testapp")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			settingsImagesErr = "building the test app: " + err.Error() + " " + string(out)
			return
		}
		app, _ := os.ReadFile(filepath.Join(dir, "app"))
		for _, v := range []string{"v1", "v2"} {
			ctxDir := filepath.Join(dir, v)
			_ = os.Mkdir(ctxDir, 0o755)
			_ = os.WriteFile(filepath.Join(ctxDir, "app"), app, 0o755)
			cf := "FROM scratch\nENV APP_VERSION=" + v + "\nCOPY app /app\nCMD [\"/app\"]\n"
			_ = os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte(cf), 0o644)
			img := "localhost/podswitch-testapp-settings:" + v
			out, err := exec.Command("podman", "--remote", "--url", rt.URI(), "build", "-q", "-t", img, ctxDir).CombinedOutput()
			if err != nil {
				settingsImagesErr = "building " + img + ": " + err.Error() + " " + string(out)
				return
			}
		}
	})
	if settingsImagesErr != "" {
		t.Fatal(settingsImagesErr)
	}
}

// podmanCmd runs podman against the test service and fails the test on an
// error.
func podmanCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("podman", append([]string{"--remote", "--url", rt.URI()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %v: %v %s", args, err, out)
	}
}

// getBody GETs url and returns status and body.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A release whose web process allocates 200 MiB under `memory 64m` is
// killed by the kernel: the deployment ends crashed-error and says out of
// memory (OOMKilled), and the old release serves throughout, under load.
func TestSettingsMemoryOOMKeepsOldRelease(t *testing.T) {
	settingsImages(t)
	app := uniqueName("oom")
	cfg := appCfg{Name: app, Image: settingsV1, Web: 2, Lines: []string{"boot_timeout 30s", "drain_timeout 5s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, settingsV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 2, 30*time.Second))

	l := startLoad(t, c.url("/"), loadRate)
	l.allowDrops = 2 // it reloads under load: see reloadDrop
	time.Sleep(300 * time.Millisecond)
	bad := cfg
	bad.Image = settingsV2
	bad.Lines = append(append([]string(nil), cfg.Lines...), "memory 64m", "env ALLOC_MB 200")
	t0 := time.Now()
	c.reload(bad)
	d := c.waitDeployment(app, settingsV2, 60*time.Second)
	t.Logf("deploy to %s: %s after %s: %s", d.Status, settingsV2, time.Since(t0).Round(time.Millisecond), d.Error)
	time.Sleep(500 * time.Millisecond)
	l.check(t, loadRate/2)

	if d.Status != engine.StatusCrashedError {
		t.Fatalf("deployment %s (%s), want crashed-error", d.Status, d.Error)
	}
	if !strings.Contains(d.Error, "out of memory") || !strings.Contains(d.Error, "OOMKilled") {
		t.Errorf("deployment error %q does not say out of memory (OOMKilled)", d.Error)
	}
	after := webIDs(c.waitSettled(app, 2, 30*time.Second))
	if strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("web containers %v, want the old release's %v", after, before)
	}
	if _, body := getBody(t, c.url("/")); !strings.Contains(body, "version=v1") {
		t.Errorf("GET / answered %q, want v1", body)
	}
}

// Two apps on a user-defined network: app A reaches app B's web
// containers by the names <b> and <b>-web; a named volume keeps a file
// written by v1 of app A for its v2.
func TestSettingsNetworkAndVolume(t *testing.T) {
	settingsImages(t)
	network := uniqueName("psnet")
	volume := uniqueName("psvol")
	podmanCmd(t, "network", "create", network)
	t.Cleanup(func() {
		_ = exec.Command("podman", "--remote", "--url", rt.URI(), "volume", "rm", "-f", volume).Run()
		_ = exec.Command("podman", "--remote", "--url", rt.URI(), "network", "rm", "-f", network).Run()
	})
	a := appCfg{Name: uniqueName("na"), Image: settingsV1, Web: 1, Lines: []string{"network " + network, "volume " + volume + ":/data", "stop_timeout 5s"}}
	b := appCfg{Name: uniqueName("nb"), Image: settingsV2, Web: 2, Lines: []string{"network " + network, "memory 128m", "cpus 0.5", "stop_timeout 5s"}}
	c := startCaddy(t, a, b)
	c.mustDeploy(a.Name, settingsV1, 60*time.Second)
	c.mustDeploy(b.Name, settingsV2, 60*time.Second)
	c.waitSettled(b.Name, 2, 30*time.Second)

	for _, name := range []string{b.Name, b.Name + "-web"} {
		code, body := getBody(t, c.url("/control/fetch?url=http://"+name+":5000/"))
		if code != http.StatusOK || !strings.Contains(body, "version=v2") {
			t.Errorf("app A fetching http://%s:5000/: %d %q, want app B's answer (v2)", name, code, body)
		}
	}

	value := uniqueName("kept")
	if code, body := getBody(t, c.url("/control/write?path=/data/x&v="+value)); code != http.StatusOK {
		t.Fatalf("write: %d %s", code, body)
	}
	a.Image = settingsV2
	c.reload(a, b)
	c.mustDeploy(a.Name, settingsV2, 60*time.Second)
	if _, body := getBody(t, c.url("/")); !strings.Contains(body, "version=v2") {
		t.Fatalf("GET / after the deploy answered %q, want v2", body)
	}
	if code, body := getBody(t, c.url("/control/read?path=/data/x")); code != http.StatusOK || body != value {
		t.Errorf("v2 read /data/x: %d %q, want %q written by v1", code, body, value)
	}
}

// A network that does not exist fails the deploy with start-error naming
// it; the old release serves on.
func TestSettingsUnknownNetwork(t *testing.T) {
	settingsImages(t)
	app := uniqueName("nonet")
	cfg := appCfg{Name: app, Image: settingsV1, Web: 1, Lines: []string{"stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, settingsV1, 60*time.Second)
	missing := uniqueName("missingnet")
	bad := cfg
	bad.Image = settingsV2
	bad.Lines = append(append([]string(nil), cfg.Lines...), "network "+missing)
	c.reload(bad)
	d := c.waitDeployment(app, settingsV2, 60*time.Second)
	if d.Status != engine.StatusStartError || !strings.Contains(d.Error, `network "`+missing+`" does not exist`) {
		t.Errorf("deployment %s %q, want start-error naming network %s", d.Status, d.Error, missing)
	}
	if _, body := getBody(t, c.url("/")); !strings.Contains(body, "version=v1") {
		t.Errorf("GET / answered %q, want v1", body)
	}
}
