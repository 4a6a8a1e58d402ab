package podman

import (
	"errors"
	"strings"
	"testing"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/specgen"

	"github.com/podswitch/podswitch/internal/engine"
)

func TestApplySettings(t *testing.T) {
	s := specgen.NewSpecGenerator("img", false)
	applySettings(s, engine.Settings{
		Memory: 64 << 20, CPUs: 0.5, Networks: []string{"appnet", "other"}, User: "1000:1000",
		Volumes: []engine.Volume{{Source: "data", Target: "/data"}, {Source: "/srv/x", Target: "/x", ReadOnly: true}},
	}, []string{"blog", "blog-web"})
	r := s.ResourceLimits
	if r == nil || *r.Memory.Limit != 64<<20 || *r.Memory.Swap != 64<<20 {
		t.Errorf("memory %+v: want limit and swap of 64 MiB", r)
	}
	if *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 {
		t.Errorf("cpu quota %d period %d, want 50000/100000", *r.CPU.Quota, *r.CPU.Period)
	}
	if s.NetNS.NSMode != specgen.Bridge || len(s.Networks) != 2 || strings.Join(s.Networks["appnet"].Aliases, ",") != "blog,blog-web" {
		t.Errorf("netns %v networks %+v", s.NetNS, s.Networks)
	}
	if len(s.Volumes) != 1 || s.Volumes[0].Name != "data" || s.Volumes[0].Dest != "/data" || len(s.Volumes[0].Options) != 0 {
		t.Errorf("named volumes %+v", s.Volumes)
	}
	if len(s.Mounts) != 1 || s.Mounts[0].Source != "/srv/x" || s.Mounts[0].Type != "bind" || !strings.Contains(strings.Join(s.Mounts[0].Options, ","), "ro") {
		t.Errorf("mounts %+v", s.Mounts)
	}
	if s.User != "1000:1000" {
		t.Errorf("user %q", s.User)
	}

	none := specgen.NewSpecGenerator("img", false)
	applySettings(none, engine.Settings{}, []string{"blog"})
	if none.ResourceLimits != nil || none.Networks != nil || none.NetNS.NSMode != "" || none.Volumes != nil || none.Mounts != nil || none.User != "" {
		t.Errorf("no settings changed the spec: %+v", none)
	}
}

func TestMemoryKill(t *testing.T) {
	limited := &define.InspectContainerHostConfig{Memory: 64 << 20}
	for _, tc := range []struct {
		running bool
		code    int32
		hc      *define.InspectContainerHostConfig
		want    bool
	}{
		{false, 137, limited, true},
		{true, 137, limited, false},
		{false, 143, limited, false},
		{false, 137, &define.InspectContainerHostConfig{}, false},
		{false, 137, nil, false},
	} {
		if got := memoryKill(tc.running, tc.code, tc.hc); got != tc.want {
			t.Errorf("memoryKill(%v, %d, %+v) = %v, want %v", tc.running, tc.code, tc.hc, got, tc.want)
		}
	}
}

func TestNetworkMissing(t *testing.T) {
	err := errors.New("unable to find network with name or ID nonet: network not found")
	got := networkMissing(err, []string{"appnet", "nonet"})
	if !strings.Contains(got.Error(), `network "nonet" does not exist`) || !errors.Is(got, err) {
		t.Errorf("networkMissing = %v", got)
	}
	other := errors.New("image not known")
	if networkMissing(other, []string{"x"}) != other {
		t.Error("another error was reworded")
	}
}
