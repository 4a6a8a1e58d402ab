package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// A canary at 20%: of 1,000 new clients about 200 get the new release,
// each sticks to the release it got, a request with the chosen header
// always gets it; promote and abort each fail no request under load.
func TestCanaryRollout(t *testing.T) {
	app := uniqueName("cn")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 5s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)
	base := "/podswitch/apps/" + app

	code, body := c.api(http.MethodPost, base+"/rollout?wait=1", `{"image": "`+imageV2+`", "percent": 20, "header": "X-Beta=1"}`)
	if code != http.StatusOK {
		t.Fatalf("rollout: %d %s", code, body)
	}
	var ans struct{ Deployment engine.Deployment }
	if err := json.Unmarshal([]byte(body), &ans); err != nil || ans.Deployment.Status != engine.StatusSuccess || ans.Deployment.Kind != engine.KindCanary {
		t.Fatalf("rollout answer: %s (%v)", body, err)
	}
	st := c.status(app)
	if st.Canary == nil || !st.Canary.InService || st.Canary.Ready != 2 || st.Canary.Percent != 20 || st.Release.Image != imageV1 {
		t.Fatalf("status with a canary: canary %+v, release %+v", st.Canary, st.Release)
	}

	// 1,000 new clients; each keeps its release over 3 more requests.
	client := &http.Client{Timeout: 10 * time.Second}
	one := func(cookie, header string) (version, sticky string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, c.url("/"), nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		if header != "" {
			req.Header.Set("X-Beta", header)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d %s", resp.StatusCode, b)
		}
		for _, ck := range resp.Cookies() {
			if ck.Name == "podswitch_"+app {
				sticky = ck.Name + "=" + ck.Value
			}
		}
		version, _, _ = strings.Cut(string(b), " ")
		return version, sticky
	}
	onV2, unstuck := 0, 0
	for i := range 1000 {
		v, sticky := one("", "")
		if sticky == "" {
			t.Fatalf("client %d got no sticky cookie", i)
		}
		if v == "version=v2" {
			onV2++
		}
		if i%20 == 0 {
			for range 3 {
				if again, set := one(sticky, ""); again != v || set != "" {
					unstuck++
				}
			}
		}
	}
	t.Logf("canary at 20%%: %d of 1000 new clients got v2", onV2)
	if onV2 < 150 || onV2 > 250 {
		t.Errorf("%d of 1000 new clients got the canary at 20%%, want 200 ± 50", onV2)
	}
	if unstuck > 0 {
		t.Errorf("%d of 150 requests with a sticky cookie changed release (or got a new cookie)", unstuck)
	}
	for range 20 {
		if v, _ := one("", "1"); v != "version=v2" {
			t.Fatalf("a request with X-Beta: 1 got %s, want the canary", v)
		}
	}

	// kill -9 and a restart: the canary is adopted with its share and its
	// containers; a client keeps its release.
	canaryWebs := idsOf(st, engine.WebProcess)
	stuckV, stuck := one("", "")
	c.kill()
	c.launch()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st = c.status(app)
		if st.Canary != nil && st.Canary.InService && st.Canary.Ready == 2 && len(st.Containers) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("canary after a restart: %+v, containers %+v", st.Canary, st.Containers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := idsOf(st, engine.WebProcess); !slices.Equal(got, canaryWebs) {
		t.Errorf("web containers after the restart %v, want the same %v (none restarted)", got, canaryWebs)
	}
	for range 5 {
		if v, set := one(stuck, ""); v != stuckV || set != "" {
			t.Errorf("a sticky client got %s after the restart, %s before", v, stuckV)
		}
	}
	if v, _ := one("", "1"); v != "version=v2" {
		t.Errorf("a request with X-Beta: 1 after the restart got %s", v)
	}

	// Promote under load: nothing fails, then everything is v2.
	l := startLoad(t, c.url("/"), loadRate)
	l.waitVersion(t, "v2", 10*time.Second) // the canary has its share of the load
	code, body = c.api(http.MethodPost, base+"/promote?wait=1", "")
	if code != http.StatusOK || !strings.Contains(body, `"status": "success"`) {
		t.Fatalf("promote: %d %s", code, body)
	}
	l.waitAnswers(t, 100, 10*time.Second) // load after the switch
	l.check(t, loadRate/2)
	st = c.waitSettled(app, 2, 30*time.Second)
	if st.Canary != nil || st.Release.Image != imageV2 {
		t.Fatalf("after promote: canary %+v release %+v", st.Canary, st.Release)
	}
	for range 20 {
		if v, _ := one("", ""); v != "version=v2" {
			t.Fatalf("after promote a request got %s", v)
		}
	}

	// A canary of v1 at 50%, aborted under load: nothing fails, then
	// everything is v2 again.
	if code, body := c.api(http.MethodPost, base+"/rollout?wait=1", `{"image": "`+imageV1+`", "percent": 50}`); code != http.StatusOK {
		t.Fatalf("second rollout: %d %s", code, body)
	}
	l = startLoad(t, c.url("/"), loadRate)
	l.waitVersion(t, "v1", 10*time.Second) // the canary has its share of the load
	if code, body := c.api(http.MethodPost, base+"/abort", ""); code != http.StatusOK {
		t.Fatalf("abort: %d %s", code, body)
	}
	l.waitAnswers(t, 100, 10*time.Second) // load after the abort
	l.check(t, loadRate/2)
	for range 20 {
		if v, _ := one("", ""); v != "version=v2" {
			t.Fatalf("after abort a request got %s", v)
		}
	}
	if code, body := c.api(http.MethodPost, base+"/abort", ""); code != http.StatusConflict {
		t.Errorf("abort without a canary: %d %s, want 409", code, body)
	}
}
