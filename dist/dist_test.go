package dist

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The files of the install guide, relative to this directory.
const (
	caddyUnit      = "systemd/caddy.service"
	caddyDropIn    = "systemd/caddy.service.d/podswitch.conf"
	socketDropIn   = "systemd/podman.socket.d/10-podswitch.conf"
	serviceDropIn  = "systemd/podman.service.d/10-podswitch.conf"
	sysctlFile     = "sysctl.d/90-podswitch.conf"
	containersConf = "containers.conf"
	guide          = "../docs/install.md"
	// demoContainersConf is the containers.conf that the demo and the
	// integration tests run Podman with: containers.conf must say the same.
	demoContainersConf = "../scripts/containers.conf"
)

// sectionsOf lists the sections a unit file (or a drop-in) of each type may
// have.
var sectionsOf = map[string][]string{
	"service": {"Unit", "Service", "Install"},
	"socket":  {"Unit", "Socket", "Install"},
}

// entry is one Key=Value line of a unit file.
type entry struct {
	section, key, value string
	line                int
}

// unit is a parsed unit file or drop-in.
type unit []entry

// values returns the values of section.key, in order.
func (u unit) values(section, key string) []string {
	var out []string
	for _, e := range u {
		if e.section == section && e.key == key {
			out = append(out, e.value)
		}
	}
	return out
}

// words returns the space-separated words of every section.key line.
func (u unit) words(section, key string) []string {
	var out []string
	for _, v := range u.values(section, key) {
		for _, w := range strings.Fields(v) {
			out = append(out, strings.Trim(w, `"'`))
		}
	}
	return out
}

// last returns the value of the last section.key line, as systemd uses it
// for a single-valued setting.
func (u unit) last(section, key string) string {
	v := u.values(section, key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

var keyRE = regexp.MustCompile(`^(X-[A-Za-z0-9-]+|[A-Z][A-Za-z0-9]*)$`)

// parseUnit reads a unit file with systemd's syntax (systemd.syntax(7)):
// comments (# or ;), [Section] headers, Key=Value lines, lines continued
// with a trailing backslash. Only the sections of the unit type are allowed.
func parseUnit(text, unitType string) (unit, error) {
	known := sectionsOf[unitType]
	if known == nil {
		return nil, fmt.Errorf("unknown unit type %q", unitType)
	}
	var (
		u       unit
		errs    []error
		section string
		pending string // a Key=Value line continued on the next line
		start   int
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if pending != "" && line != "" && (line[0] == '#' || line[0] == ';') {
			continue // comments inside a continued line are skipped
		}
		if pending == "" {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				errs = append(errs, fmt.Errorf("line %d: bad section header %q", start, line))
				continue
			}
			section = line[1 : len(line)-1]
			if !slices.Contains(known, section) {
				errs = append(errs, fmt.Errorf("line %d: section [%s] is not one of a %s unit's %v", start, section, unitType, known))
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("line %d: want Key=Value, got %q", start, line))
		case section == "":
			errs = append(errs, fmt.Errorf("line %d: %s= before any [Section]", start, key))
		case !keyRE.MatchString(key):
			errs = append(errs, fmt.Errorf("line %d: %q is not a unit file key", start, key))
		default:
			u = append(u, entry{section: section, key: key, value: value, line: start})
		}
	}
	if pending != "" {
		errs = append(errs, fmt.Errorf("line %d: continued past the end of the file", start))
	}
	if len(u) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no settings"))
	}
	return u, errors.Join(errs...)
}

// unitType returns the type of a unit file (caddy.service: service) or of a
// drop-in (podman.socket.d/x.conf: socket).
func unitType(path string) string {
	name := filepath.Base(path)
	if strings.HasSuffix(name, ".conf") {
		name = strings.TrimSuffix(filepath.Base(filepath.Dir(path)), ".d")
	}
	return strings.TrimPrefix(filepath.Ext(name), ".")
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(string(data), unitType(path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u
}

func TestParseUnitCatchesMistakes(t *testing.T) {
	for name, text := range map[string]string{
		"unknown section":    "[Servce]\nUser=caddy\n",
		"no equals":          "[Service]\nUser caddy\n",
		"key before section": "User=caddy\n[Service]\n",
		"bad key":            "[Service]\nuser=caddy\n",
		"open header":        "[Service\nUser=caddy\n",
		"dangling backslash": "[Service]\nExecStart=/bin/true \\\n",
		"empty":              "# nothing\n",
	} {
		if _, err := parseUnit(text, "service"); err == nil {
			t.Errorf("%s: no error for %q", name, text)
		}
	}
	u, err := parseUnit("[Service]\n# c\nExecStart=/bin/true \\\n  # skipped\n  --flag\n", "service")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.last("Service", "ExecStart"); got != "/bin/true  --flag" {
		t.Errorf("continued line: got %q", got)
	}
	if _, err := parseUnit("[Socket]\nSocketMode=0660\n", "service"); err == nil {
		t.Error("[Socket] accepted in a service")
	}
}

// TestUnitFilesParse checks every unit file and drop-in for syntax, and
// that each has the settings the install guide relies on.
func TestUnitFilesParse(t *testing.T) {
	var found []string
	err := filepath.WalkDir("systemd", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		found = append(found, path)
		if sectionsOf[unitType(path)] == nil {
			t.Errorf("%s: neither a unit file nor a drop-in (<unit>.d/<name>.conf) of a known unit type", path)
			return nil
		}
		readUnit(t, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{caddyUnit, caddyDropIn, socketDropIn, serviceDropIn} {
		if !slices.Contains(found, want) {
			t.Errorf("%s is missing", want)
		}
	}

	caddy := readUnit(t, caddyUnit)
	for _, c := range []struct{ key, want string }{
		{"User", "caddy"},
		{"Group", "caddy"},
		{"Type", "notify"},
		{"ExecStart", "/usr/bin/caddy run --config /etc/caddy/Caddyfile"},
		{"ExecReload", "/usr/bin/caddy reload --config /etc/caddy/Caddyfile --force"},
		// Stopping Caddy must kill Caddy's cgroup only, where nothing of
		// Podman's lives.
		{"KillMode", "control-group"},
		// A Caddy that crashes comes back by itself.
		{"Restart", "on-failure"},
	} {
		if got := caddy.last("Service", c.key); got != c.want {
			t.Errorf("%s: [Service] %s=%q, want %q", caddyUnit, c.key, got, c.want)
		}
	}
	if env := caddy.words("Service", "Environment"); !slices.Contains(env, "CONTAINER_HOST=unix:///run/podman/podman.sock") {
		t.Errorf("%s: Environment= %v lacks CONTAINER_HOST=unix:///run/podman/podman.sock", caddyUnit, env)
	}
	for _, key := range []string{"Wants", "After"} {
		if !slices.Contains(caddy.words("Unit", key), "podman.socket") {
			t.Errorf("%s: %s= lacks podman.socket", caddyUnit, key)
		}
	}
	// A stop or restart of Podman must not stop or restart Caddy.
	for _, key := range []string{"Requires", "Requisite", "BindsTo", "PartOf"} {
		for _, w := range caddy.words("Unit", key) {
			if strings.HasPrefix(w, "podman.") {
				t.Errorf("%s: %s=%s: Caddy would go down with Podman", caddyUnit, key, w)
			}
		}
	}

	// The secrets of the Caddyfile's {env.NAME} placeholders.
	if got := readUnit(t, caddyDropIn).values("Service", "EnvironmentFile"); !slices.Equal(got, []string{"/etc/caddy/podswitch.env"}) {
		t.Errorf("%s: EnvironmentFile= %q, want /etc/caddy/podswitch.env", caddyDropIn, got)
	}

	sock := readUnit(t, socketDropIn)
	if got := sock.last("Socket", "SocketGroup"); got != "caddy" {
		t.Errorf("%s: SocketGroup=%q, want caddy", socketDropIn, got)
	}
	if got := sock.last("Socket", "SocketMode"); got != "0660" {
		t.Errorf("%s: SocketMode=%q, want 0660", socketDropIn, got)
	}

	svc := readUnit(t, serviceDropIn)
	if env := svc.words("Service", "Environment"); !slices.Contains(env, "CONTAINERS_CONF=/etc/podswitch/containers.conf") {
		t.Errorf("%s: Environment= %v lacks CONTAINERS_CONF=/etc/podswitch/containers.conf", serviceDropIn, env)
	}
}

// Stand-ins for the units of Debian 12's podman package (4.3.1), which the
// drop-ins extend, with ExecStart pointed at a program that exists.
const (
	podmanSocket = `[Unit]
Description=Podman API Socket
Documentation=man:podman-system-service(1)

[Socket]
ListenStream=%t/podman/podman.sock
SocketMode=0660

[Install]
WantedBy=sockets.target
`
	podmanService = `[Unit]
Description=Podman API Service
Requires=podman.socket
After=podman.socket
Documentation=man:podman-system-service(1)
StartLimitIntervalSec=0

[Service]
Delegate=true
Type=exec
KillMode=process
Environment=LOGGING="--log-level=info"
ExecStart=@TRUE@ $LOGGING system service

[Install]
WantedBy=default.target
`
)

// verifyTree lays out caddy.service, the stand-in podman units and the
// drop-ins in a temporary directory, the way /etc/systemd/system holds them,
// with caddy's and podman's binaries replaced by true(1): systemd-analyze
// verify refuses a unit whose ExecStart= does not exist, and the test
// machine has no /usr/bin/caddy. It returns the paths of the three units.
func verifyTree(t *testing.T, caddyService, socketConf, serviceConf string, caddyConf ...string) []string {
	t.Helper()
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var lines []string
	for _, l := range strings.Split(caddyService, "\n") {
		if strings.HasPrefix(l, "Exec") && strings.Contains(l, "=/usr/bin/caddy ") {
			l = strings.Replace(l, "=/usr/bin/caddy ", "="+truePath+" ", 1)
			n++
		}
		lines = append(lines, l)
	}
	if n == 0 {
		t.Fatalf("%s: no Exec*=/usr/bin/caddy line to point at %s", caddyUnit, truePath)
	}
	dir := t.TempDir()
	files := map[string]string{
		"caddy.service":                      strings.Join(lines, "\n"),
		"podman.socket":                      podmanSocket,
		"podman.service":                     strings.ReplaceAll(podmanService, "@TRUE@", truePath),
		"podman.socket.d/10-podswitch.conf":  socketConf,
		"podman.service.d/10-podswitch.conf": serviceConf,
	}
	for _, c := range caddyConf {
		files["caddy.service.d/podswitch.conf"] = c
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return []string{filepath.Join(dir, "caddy.service"), filepath.Join(dir, "podman.socket"), filepath.Join(dir, "podman.service")}
}

// systemdVerify runs systemd-analyze verify on units (and, through their
// directory, the drop-ins next to them). It returns what it printed and
// whether the files passed. --recursive-errors=no makes any warning about
// the named units (an unknown key, a value that does not parse, in the unit
// or in one of its drop-ins) fail, while warnings about the host's own units
// (the targets the units are ordered after) do not; --man=no skips checking
// that the man pages in Documentation= are installed.
func systemdVerify(t *testing.T, units []string) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed, so the unit files cannot be verified: " +
			"install the systemd package (apt-get install -y systemd); it runs without systemd as PID 1")
	}
	args := append([]string{"verify", "--man=no", "--recursive-errors=no"}, units...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("systemd-analyze: %v", err)
	}
	// Belt and braces: any line about the files under test is a failure,
	// even if systemd-analyze exited 0.
	dir := filepath.Dir(units[0])
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, dir) {
			return string(out), false
		}
	}
	return string(out), err == nil
}

// TestSystemdVerify runs systemd-analyze verify on caddy.service and on the
// drop-ins merged into podman.socket and podman.service.
func TestSystemdVerify(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	units := verifyTree(t, read(caddyUnit), read(socketDropIn), read(serviceDropIn), read(caddyDropIn))
	if out, ok := systemdVerify(t, units); !ok {
		t.Errorf("systemd-analyze verify %s:\n%s", strings.Join(units, " "), out)
	} else if out != "" {
		t.Logf("systemd-analyze verify, warnings about other units:\n%s", out)
	}
}

// TestSystemdVerifyCatchesMistakes makes sure that the verification above
// reads the drop-ins and fails on the mistakes systemd only warns about.
func TestSystemdVerifyCatchesMistakes(t *testing.T) {
	good, err := os.ReadFile(caddyUnit)
	if err != nil {
		t.Fatal(err)
	}
	okSocket := "[Socket]\nSocketGroup=caddy\nSocketMode=0660\n"
	okService := "[Service]\nEnvironment=CONTAINERS_CONF=/etc/podswitch/containers.conf\n"
	for name, c := range map[string]struct{ caddy, socket, service, want string }{
		"unknown key in the unit": {strings.Replace(string(good), "TimeoutStopSec=", "TimeoutStpSec=", 1), okSocket, okService, "TimeoutStpSec"},
		"bad value in the unit":   {strings.Replace(string(good), "TimeoutStopSec=5s", "TimeoutStopSec=5x", 1), okSocket, okService, "5x"},
		"bad socket drop-in":      {string(good), "[Socket]\nSocketMode=rw\n", okService, "podman.socket.d"},
		"bad service drop-in":     {string(good), okSocket, "[Service]\nEnviron=X=1\n", "podman.service.d"},
	} {
		units := verifyTree(t, c.caddy, c.socket, c.service)
		out, ok := systemdVerify(t, units)
		if ok || !strings.Contains(out, c.want) {
			t.Errorf("%s: verify passed=%v, want a failure that names %q; output:\n%s", name, ok, c.want, out)
		}
	}
	units := verifyTree(t, string(good), okSocket, okService, "[Service]\nEnvironmentFil=/etc/caddy/podswitch.env\n")
	if out, ok := systemdVerify(t, units); ok || !strings.Contains(out, "caddy.service.d") {
		t.Errorf("bad caddy drop-in: verify passed=%v, want a failure that names caddy.service.d; output:\n%s", ok, out)
	}
}

// TestSysctl checks that every setting of the sysctl file exists on this
// kernel.
func TestSysctl(t *testing.T) {
	f, err := os.Open(sysctlFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		key = strings.TrimPrefix(key, "-") // "-key": errors are ignored, the key still must exist
		if !ok || key == "" || value == "" {
			t.Errorf("%s:%d: want key = value, got %q", sysctlFile, n, line)
			continue
		}
		if strings.ContainsAny(key, "*?[") {
			t.Errorf("%s:%d: %s: globs are not checked by this test", sysctlFile, n, key)
			continue
		}
		// sysctl.d(5): the first separator decides: with a dot first,
		// dots separate and slashes are literal; with a slash first, the
		// other way round.
		path := key
		if i := strings.IndexAny(key, "./"); i >= 0 && key[i] == '.' {
			path = strings.Map(func(r rune) rune {
				switch r {
				case '.':
					return '/'
				case '/':
					return '.'
				}
				return r
			}, key)
		}
		if _, err := os.Stat(filepath.Join("/proc/sys", path)); err != nil {
			t.Errorf("%s:%d: %s does not exist on this kernel: %v", sysctlFile, n, key, err)
		}
		settings++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if settings == 0 {
		t.Errorf("%s: no settings", sysctlFile)
	}
}

// TestContainersConf checks that containers.conf is TOML and says what the
// containers.conf of the demo and the integration tests says.
func TestContainersConf(t *testing.T) {
	var dist, demo map[string]any
	if _, err := toml.DecodeFile(containersConf, &dist); err != nil {
		t.Fatalf("%s: %v", containersConf, err)
	}
	if _, err := toml.DecodeFile(demoContainersConf, &demo); err != nil {
		t.Fatalf("%s: %v", demoContainersConf, err)
	}
	if !reflect.DeepEqual(dist, demo) {
		t.Errorf("%s and %s differ:\n%v\n%v", containersConf, demoContainersConf, dist, demo)
	}
	engine, _ := dist["engine"].(map[string]any)
	if engine["runtime"] != "runc" {
		t.Errorf("%s: [engine] runtime = %v, want runc", containersConf, engine["runtime"])
	}
}

// TestGuideNamesTheFiles checks that docs/install.md installs every file of
// this directory and names no file that does not exist.
func TestGuideNamesTheFiles(t *testing.T) {
	data, err := os.ReadFile(guide)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bdist/[A-Za-z0-9_./-]*[A-Za-z0-9_]`).FindAllString(text, -1) {
		named[strings.TrimPrefix(m, "dist/")] = true
	}
	for p := range named {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s names dist/%s, which does not exist", guide, p)
		}
	}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		if !named[filepath.ToSlash(path)] {
			t.Errorf("%s does not name dist/%s", guide, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The paths the files point at must be the ones the guide installs to.
	for _, p := range []string{"/etc/podswitch/containers.conf", "/etc/systemd/system/caddy.service.d/podswitch.conf", "/etc/caddy/podswitch.env", "/etc/systemd/system/podman.socket.d/", "/etc/systemd/system/podman.service.d/", "/etc/sysctl.d/", "/var/lib/caddy/.local/share/caddy"} {
		if !strings.Contains(text, p) {
			t.Errorf("%s does not mention %s", guide, p)
		}
	}
}
