package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/podswitch/podswitch/internal/engine"
)

// Exit codes of `caddy podswitch`.
const (
	// exitOK: the request was carried out; with --wait, the deployment
	// ended with status success.
	exitOK = 0
	// exitError: the request could not be made or was refused (bad
	// arguments, admin endpoint unreachable, unknown app, bad value...).
	exitError = 1
	// exitFailed: with --wait, the deployment ended with a status other
	// than success (timeout-error, crashed-error, start-error, hook-error,
	// aborted).
	exitFailed = 2
	// exitTimeout: --timeout passed before the deployment ended; it goes
	// on.
	exitTimeout = 3
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "podswitch",
		Usage: "status|hosts|cluster|deploy|rollout|promote|abort|restart|scale|rollback|pause|resume|maintenance|history|logs [<args>] [--address <interface>] [--config <path> [--adapter <name>]] [--json]",
		Short: "Shows and changes the apps that podswitch runs",
		Long: `
Talks to the podswitch API on the admin endpoint of a running Caddy:

  caddy podswitch status [<app>]
  caddy podswitch hosts
  caddy podswitch cluster
  caddy podswitch deploy <app> <image> [--wait [--timeout <duration>]]
  caddy podswitch rollout <app> <image> --percent <n> [--header <name>[=<value>]] [--cookie <name>=<value>] [--wait [--timeout <duration>]]
  caddy podswitch promote <app> [--wait [--timeout <duration>]]
  caddy podswitch abort <app>
  caddy podswitch restart <app> [--process <type> | --container <id>] [--wait [--timeout <duration>]]
  caddy podswitch scale <app> <type>=<count>... [--wait [--timeout <duration>]]
  caddy podswitch rollback <app> [--wait [--timeout <duration>]]
  caddy podswitch pause <app> [--timeout <duration>]
  caddy podswitch maintenance <app> [--message <text>]
  caddy podswitch resume <app>
  caddy podswitch history <app>
  caddy podswitch logs <app> [--process <type> | --container <id>] [--tail <n>] [--follow]

Operations act on podswitch directly: Caddy's config is not reloaded, so no
other app or site sees anything. deploy, rollback and scale override the
config's image and counts for as long as the config keeps the value it had
(a "caddy reload" of an unchanged Caddyfile keeps them; one that changes
the image or a count wins). They survive restarts of Caddy.

rollout boots the web containers of an image beside the serving ones and
sends them a share of the traffic (a canary): --percent of new clients, each
kept on the release it got by a cookie, and every request that carries
--header (with its value, when given) or --cookie. promote deploys the
canary's image to all traffic, new-first, like deploy; abort sends every
request back to the serving release and stops the canary's containers. A
canary also ends when one of its containers crashes, at a deploy or
rollback of another release, and when the app is removed; it survives a
restart of Caddy.

The admin endpoint is the one given with --address, else the one in the
config given with --config (and --adapter), else localhost:2019. --json prints
the API's JSON answer instead of text.

Exit status: 0 when the request was carried out (with --wait: the
deployment ended with status success); 1 when the request could not be made
or was refused; 2 when, with --wait, the deployment ended with any other
status (timeout-error, crashed-error, start-error, hook-error, aborted); 3
when --timeout passed first (the deployment goes on).
`,
		CobraFunc: func(cmd *cobra.Command) {
			pf := cmd.PersistentFlags()
			pf.String("address", "", "Address of the administration endpoint, if different from the config")
			pf.StringP("config", "c", "", "Configuration file, to find the administration endpoint")
			pf.StringP("adapter", "a", "", "Name of the adapter of the configuration file")
			pf.Bool("json", false, "Print the API's JSON answer")
			cmd.AddCommand(statusCommand(), hostsCommand(), clusterCommand(), deployCommand(), rolloutCommand(), promoteCommand(), abortCommand(),
				restartCommand(), scaleCommand(), rollbackCommand(),
				pauseCommand(), maintenanceCommand(), resumeCommand(), historyCommand(), logsCommand())
			// Without this, cobra shows the help and exits 0 for a
			// mistyped subcommand.
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				cmd.SilenceErrors, cmd.SilenceUsage = true, true
				fmt.Fprintf(cmd.ErrOrStderr(), "Error: unknown command %q for \"caddy podswitch\"; want status, hosts, cluster, deploy, rollout, promote, abort, restart, scale, rollback, pause, resume, maintenance, history or logs\n", args[0])
				return errExit
			}
		},
	})
}

func statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status [<app>]",
		Short: "Shows every app, or one app with its containers",
		Example: `  caddy podswitch status
  caddy podswitch status blog --json`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) > 1 {
				return c.usage("status [<app>]")
			}
			if len(args) == 0 {
				return show(c, "/podswitch/apps", printApps)
			}
			return show(c, "/podswitch/apps/"+url.PathEscape(args[0]), printClusterApp)
		}),
	}
}

// show GETs path and prints the answer with print, or raw with --json.
func show[T any](c *cliClient, path string, print func(io.Writer, T)) int {
	body, ok := c.call(http.MethodGet, path, nil)
	if !ok {
		return exitError
	}
	if c.json {
		return c.raw(body)
	}
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return c.fail("reading the answer: %v", err)
	}
	print(c.out, v)
	return exitOK
}

func deployCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "deploy <app> <image>",
		Short: "Deploys an image, new containers first; the old ones serve until all new ones are ready",
		Example: `  caddy podswitch deploy blog localhost/blog:v2 --wait
  caddy podswitch deploy blog registry.example.com/blog@sha256:... --wait --timeout 5m`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 2 {
				return c.usage("deploy <app> <image> [--wait [--timeout <duration>]]")
			}
			return c.deployment("/podswitch/apps/"+url.PathEscape(args[0])+"/deploy", map[string]string{"image": args[1]}, args[0])
		}),
	}
	waitFlags(cmd)
	return cmd
}

func rolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout <app> <image> --percent <n>",
		Short: "Puts an image beside the serving release for a share of the traffic (a canary); promote or abort it",
		Example: `  caddy podswitch rollout blog localhost/blog:v2 --percent 20 --wait
  caddy podswitch rollout blog localhost/blog:v2 --percent 0 --header X-Beta=1
  caddy podswitch rollout blog localhost/blog:v2 --percent 50   # the same image again: a new share`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			const usage = "rollout <app> <image> --percent <n> [--header <name>[=<value>]] [--cookie <name>=<value>] [--wait [--timeout <duration>]]"
			if len(args) != 2 || !c.cmd.Flags().Changed("percent") {
				return c.usage(usage)
			}
			percent, _ := c.cmd.Flags().GetInt("percent")
			body := map[string]any{"image": args[1], "percent": percent}
			if h := c.flag("header"); h != "" {
				body["header"] = h
			}
			if ck := c.flag("cookie"); ck != "" {
				body["cookie"] = ck
			}
			return c.deployment("/podswitch/apps/"+url.PathEscape(args[0])+"/rollout", body, args[0])
		}),
	}
	cmd.Flags().IntP("percent", "p", 0, "Share of new clients that get the canary, 0 to 100")
	cmd.Flags().String("header", "", "Requests with this header (name, or name=value) always get the canary")
	cmd.Flags().String("cookie", "", "Requests with this cookie (name=value) always get the canary")
	waitFlags(cmd)
	return cmd
}

func promoteCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "promote <app>",
		Short:   "Deploys the canary's image to all traffic, new containers first, like deploy",
		Example: `  caddy podswitch promote blog --wait`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("promote <app> [--wait [--timeout <duration>]]")
			}
			return c.deployment("/podswitch/apps/"+url.PathEscape(args[0])+"/promote", nil, args[0])
		}),
	}
	waitFlags(cmd)
	return cmd
}

func abortCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "abort <app>",
		Short:   "Ends the canary: every request goes to the serving release, the canary's containers stop",
		Example: `  caddy podswitch abort blog`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("abort <app>")
			}
			c.timeout = 0
			return c.simple("/podswitch/apps/"+url.PathEscape(args[0])+"/abort", nil, "canary aborted: every request goes to the serving release")
		}),
	}
}

func restartCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restart <app>",
		Short: "Restarts an app, one process type or one container, new containers first",
		Example: `  caddy podswitch restart blog --wait
  caddy podswitch restart blog --process worker
  caddy podswitch restart blog --container 1a2b3c4d5e6f`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("restart <app> [--process <type> | --container <id>] [--wait [--timeout <duration>]]")
			}
			body := map[string]string{}
			if p := c.flag("process"); p != "" {
				body["process"] = p
			}
			if id := c.flag("container"); id != "" {
				body["container"] = id
			}
			return c.deployment("/podswitch/apps/"+url.PathEscape(args[0])+"/restart", body, args[0])
		}),
	}
	cmd.Flags().String("process", "", "Restart only the containers of this process type")
	cmd.Flags().String("container", "", "Restart only this container (id or name)")
	waitFlags(cmd)
	return cmd
}

func waitFlags(cmd *cobra.Command) {
	cmd.Flags().BoolP("wait", "w", false, "Wait until the deployment has ended; exit non-zero unless it ended with success")
	cmd.Flags().Duration("timeout", 0, "With --wait, give up waiting after this long (exit status 3); 0 waits as long as it takes")
}

func scaleCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scale <app> <type>=<count>...",
		Short: "Sets how many containers of each process type run",
		Example: `  caddy podswitch scale blog web=3 worker=1 --wait
  caddy podswitch scale blog worker=0`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			const use = "scale <app> <type>=<count>... (for example: scale blog web=3 worker=1)"
			if len(args) < 2 {
				return c.usage(use)
			}
			counts := map[string]int{}
			for _, a := range args[1:] {
				name, v, ok := strings.Cut(a, "=")
				n, err := strconv.Atoi(v)
				if !ok || name == "" || err != nil || n < 0 {
					return c.fail("%q: want <type>=<count> with a count of 0 or more; usage: caddy podswitch %s", a, use)
				}
				counts[name] = n
			}
			uri := "/podswitch/apps/" + url.PathEscape(args[0]) + "/scale"
			wait, _ := c.cmd.Flags().GetBool("wait")
			if wait && !c.json {
				return c.watchScale(uri, counts, args[0])
			}
			if wait {
				uri += "?wait=1"
			} else {
				c.timeout = 0
			}
			body, err := c.request(http.MethodPost, uri, counts)
			if errors.Is(err, errWaitTimeout) {
				fmt.Fprintf(c.errOut, "Error: gave up waiting after %s; the scale goes on (see: caddy podswitch status %s)\n", c.timeout, args[0])
				return exitTimeout
			}
			if err != nil {
				return c.reportErr(err)
			}
			if c.json {
				return c.raw(body)
			}
			var st engine.AppStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return c.fail("reading the answer: %v", err)
			}
			fmt.Fprintf(c.out, "app %s: %s\n", st.Name, formatCounts(st.Processes))
			if wait && len(st.GaveUp) > 0 {
				fmt.Fprintf(c.errOut, "Error: app %s gave up starting %s containers (see: caddy podswitch history %s)\n", st.Name, strings.Join(st.GaveUp, ", "), st.Name)
				return exitFailed
			}
			return exitOK
		}),
	}
	waitFlags(cmd)
	return cmd
}

func rollbackCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rollback <app>",
		Short:   "Deploys again the release that served before the serving one (image, env and commands), new containers first",
		Example: `  caddy podswitch rollback blog --wait`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("rollback <app> [--wait [--timeout <duration>]]")
			}
			return c.deployment("/podswitch/apps/"+url.PathEscape(args[0])+"/rollback", nil, args[0])
		}),
	}
	waitFlags(cmd)
	return cmd
}

func pauseCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pause <app>",
		Short: "Holds new requests to the app until resume (each at most --timeout, then 503); requests in flight finish",
		Example: `  caddy podswitch pause blog --timeout 1m
  caddy podswitch resume blog`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("pause <app> [--timeout <duration>]")
			}
			body := map[string]string{}
			if d, _ := c.cmd.Flags().GetDuration("timeout"); d > 0 {
				body["timeout"] = d.String()
			}
			c.timeout = 0
			return c.simple("/podswitch/apps/"+url.PathEscape(args[0])+"/pause", body, "paused")
		}),
	}
	cmd.Flags().Duration("timeout", 0, "How long a request waits before it gets 503: from 1s to 1h (default 30s)")
	return cmd
}

func maintenanceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "maintenance <app>",
		Short:   "Answers every request to the app with 503 and a message, until resume; the containers keep running",
		Example: `  caddy podswitch maintenance blog --message "Back at 14:00 UTC."`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("maintenance <app> [--message <text>]")
			}
			body := map[string]string{}
			if m := c.flag("message"); m != "" {
				body["message"] = m
			}
			return c.simple("/podswitch/apps/"+url.PathEscape(args[0])+"/maintenance", body, "in maintenance")
		}),
	}
	cmd.Flags().String("message", "", "What requests get (default: a short notice)")
	return cmd
}

func resumeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "resume <app>",
		Short:   "Ends a pause (held requests go on) or maintenance",
		Example: `  caddy podswitch resume blog`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("resume <app>")
			}
			return c.simple("/podswitch/apps/"+url.PathEscape(args[0])+"/resume", nil, "resumed")
		}),
	}
}

// simple posts an operation that answers the app's status, and says what
// it did.
func (c *cliClient) simple(uri string, body any, did string) int {
	b, ok := c.call(http.MethodPost, uri, body)
	if !ok {
		return exitError
	}
	if c.json {
		return c.raw(b)
	}
	var st engine.AppStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return c.fail("reading the answer: %v", err)
	}
	fmt.Fprintf(c.out, "app %s: %s\n", st.Name, did)
	return exitOK
}

func logsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logs <app>",
		Short: "Shows the output of the app's containers (through Podman), each line prefixed with its container",
		Example: `  caddy podswitch logs blog --tail 50
  caddy podswitch logs blog --process worker --follow
  caddy podswitch logs blog --container 1a2b3c4d5e6f`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) != 1 {
				return c.usage("logs <app> [--process <type> | --container <id>] [--tail <n>] [--follow]")
			}
			q := url.Values{}
			if p := c.flag("process"); p != "" {
				q.Set("process", p)
			}
			if id := c.flag("container"); id != "" {
				q.Set("container", id)
			}
			n, _ := c.cmd.Flags().GetInt("tail")
			q.Set("tail", strconv.Itoa(n))
			if f, _ := c.cmd.Flags().GetBool("follow"); f {
				q.Set("follow", "1")
			}
			return c.stream("/podswitch/apps/" + url.PathEscape(args[0]) + "/logs?" + q.Encode())
		}),
	}
	cmd.Flags().String("process", "", "Only the containers of this process type")
	cmd.Flags().String("container", "", "Only this container (id or name)")
	cmd.Flags().Int("tail", 100, "How many of each container's last lines to show first (-1: all)")
	cmd.Flags().BoolP("follow", "f", false, "Keep showing new lines until interrupted")
	return cmd
}

// stream copies the answer of a GET to the output as it comes.
func (c *cliClient) stream(uri string) int {
	resp, err := caddycmd.AdminAPIRequest(c.addr, http.MethodGet, uri, nil, nil)
	if err != nil {
		return c.reportErr(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(c.out, resp.Body); err != nil {
		return c.fail("reading the output: %v", err)
	}
	return exitOK
}

func clusterCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cluster",
		Short: "Shows the proxies that share this one's storage, the apps each leads, and whose config differs",
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) > 0 {
				return c.usage("cluster")
			}
			return show(c, "/podswitch/cluster", printCluster)
		}),
	}
}

func printCluster(w io.Writer, st ClusterStatus) {
	fmt.Fprintf(w, "cluster:    %s (this proxy: %s)\n", st.Cluster, st.This)
	if st.Storage != "" {
		fmt.Fprintf(w, "storage:    does not answer: %s\n", st.Storage)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tCONFIG\tLEADS\tHEARTBEAT\tVERSION")
	for _, p := range st.Proxies {
		cfg := p.Config
		if p.Differs {
			cfg += " (differs)"
		}
		leads := strings.Join(p.LeaderOf, ",")
		if leads == "" {
			leads = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Proxy, cfg, leads, p.Seen, p.Version)
	}
	tw.Flush()
	if len(st.Drift) > 0 {
		fmt.Fprintf(w, "warning:    the podswitch config of %s differs from this proxy's: give every proxy the same config\n", strings.Join(st.Drift, ", "))
	}
}

// printClusterApp prints an app's status, with its leader when several
// proxies share the storage.
func printClusterApp(w io.Writer, st clusterAppStatus) {
	printApp(w, st.AppStatus)
	c := st.Cluster
	if c == nil {
		return
	}
	who := "another proxy leads it"
	if c.Leading {
		who = "this proxy leads it"
	}
	leader := c.Leader
	if leader == "" {
		leader = "none yet"
	}
	fmt.Fprintf(w, "\nleader:     %s (epoch %d; %s)\n", leader, c.Epoch, who)
	if c.Storage != "" {
		fmt.Fprintf(w, "storage:    does not answer: %s\n", c.Storage)
	}
	if len(c.Drift) > 0 {
		fmt.Fprintf(w, "warning:    the podswitch config of %s differs from this proxy's\n", strings.Join(c.Drift, ", "))
	}
}

func hostsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "Shows the state of every Podman host (of a config with host blocks)",
		RunE: runCLI(func(c *cliClient, args []string) int {
			if len(args) > 0 {
				return c.usage("hosts")
			}
			return show(c, "/podswitch/hosts", printHosts)
		}),
	}
}

func printHosts(w io.Writer, hosts []engine.HostStatus) {
	if len(hosts) == 0 {
		fmt.Fprintln(w, "podswitch runs on one Podman service (no host blocks)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tSTATE\tSINCE\tCONTAINERS\tAPI")
	for _, h := range hosts {
		api := "answers"
		if h.APIError != "" {
			api = h.APIError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", h.Name, h.Address, h.State, formatTime(h.Since), h.Containers, api)
	}
	tw.Flush()
}

func historyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "history <app> [<deployment id>]",
		Short: "Shows the deployments of an app, newest first, or one deployment step by step with the output of what failed",
		Example: `  caddy podswitch history blog
  caddy podswitch history blog 12`,
		RunE: runCLI(func(c *cliClient, args []string) int {
			switch len(args) {
			case 1:
				return show(c, "/podswitch/apps/"+url.PathEscape(args[0])+"/deployments", printHistory)
			case 2:
				return show(c, "/podswitch/apps/"+url.PathEscape(args[0])+"/deployments/"+url.PathEscape(args[1]), func(w io.Writer, d engine.Deployment) {
					printDeployment(w, args[0], d)
				})
			}
			return c.usage("history <app> [<deployment id>]")
		}),
	}
}

// printDeployment prints one deployment: what it was, each step with its
// time, and the last output of what failed.
func printDeployment(w io.Writer, app string, d engine.Deployment) {
	fmt.Fprintln(w, describeDeployment(app, d))
	if d.Trigger != "" {
		fmt.Fprintf(w, "asked by:   %s\n", d.Trigger)
	}
	fmt.Fprintf(w, "started:    %s\n", formatTime(d.StartedAt))
	if d.Error != "" {
		fmt.Fprintf(w, "error:      %s\n", d.Error)
	}
	fmt.Fprintln(w)
	for _, l := range newProgress(d.StartedAt).lines(d) {
		fmt.Fprintln(w, l)
	}
	for _, ct := range d.Containers {
		if len(ct.Output) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nlast output of %s container %s (%s):\n", ct.Process, shortID(ct.ID), ct.State)
		for _, l := range ct.Output {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	if h := d.Hook; h != nil && len(h.Output) > 0 {
		fmt.Fprintln(w, "\noutput of the postdeploy hook:")
		for _, l := range h.Output {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}

// cliClient runs one `caddy podswitch` subcommand.
type cliClient struct {
	cmd     *cobra.Command
	addr    string
	json    bool
	timeout time.Duration
	out     io.Writer
	errOut  io.Writer
}

// errExit makes cobra exit with status 1 without printing anything more.
var errExit = errors.New("podswitch: failed")

// runCLI turns f into a cobra RunE that exits with the status f returns.
func runCLI(f func(c *cliClient, args []string) int) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		c := &cliClient{cmd: cmd, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
		code := c.setup()
		if code == exitOK {
			code = f(c, args)
		}
		switch code {
		case exitOK:
			return nil
		case exitError:
			return errExit
		}
		// Only Caddy's wrapper can make Main exit with another status.
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, nil })(cmd, args)
	}
}

func (c *cliClient) setup() int {
	c.json, _ = c.cmd.Flags().GetBool("json")
	if c.cmd.Flags().Lookup("timeout") != nil {
		c.timeout, _ = c.cmd.Flags().GetDuration("timeout")
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(c.flag("address"), nil, c.flag("config"), c.flag("adapter"))
	if err != nil {
		return c.fail("finding the admin endpoint: %v", err)
	}
	c.addr = addr
	return exitOK
}

func (c *cliClient) flag(name string) string {
	v, _ := c.cmd.Flags().GetString(name)
	return v
}

func (c *cliClient) fail(format string, args ...any) int {
	fmt.Fprintf(c.errOut, "Error: "+format+"\n", args...)
	return exitError
}

func (c *cliClient) usage(use string) int {
	return c.fail("usage: caddy podswitch %s", use)
}

func (c *cliClient) raw(body []byte) int {
	c.out.Write(body)
	if !bytes.HasSuffix(body, []byte("\n")) {
		fmt.Fprintln(c.out)
	}
	return exitOK
}

var errWaitTimeout = errors.New("timeout")

// adminErrorRE matches the error of caddycmd.AdminAPIRequest for an answer
// with an error status.
var adminErrorRE = regexp.MustCompile(`(?s)HTTP (\d{3}): (.*)$`)

// call makes one API request and returns the answer's body; on failure it
// prints why and returns false.
func (c *cliClient) call(method, uri string, body any) ([]byte, bool) {
	b, err := c.request(method, uri, body)
	if err != nil {
		c.reportErr(err)
		return nil, false
	}
	return b, true
}

// reportErr prints why a request failed: the API's message when it
// answered with an error.
func (c *cliClient) reportErr(err error) int {
	if m := adminErrorRE.FindStringSubmatch(err.Error()); m != nil {
		if c.json {
			c.raw([]byte(m[2]))
		}
		return c.fail("%s (HTTP %s)", errorMessage([]byte(m[2])), m[1])
	}
	return c.fail("%v", err)
}

func (c *cliClient) request(method, uri string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	type result struct {
		body []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := caddycmd.AdminAPIRequest(c.addr, method, uri, nil, rd)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- result{b, err}
	}()
	var timeout <-chan time.Time
	if c.timeout > 0 {
		t := time.NewTimer(c.timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-ch:
		return r.body, r.err
	case <-timeout:
		return nil, errWaitTimeout
	}
}

// deployment posts a deploy or restart and reports on the deployment it
// started.
func (c *cliClient) deployment(uri string, body any, app string) int {
	wait, _ := c.cmd.Flags().GetBool("wait")
	if wait && !c.json {
		return c.watchDeployment(uri, body, app)
	}
	if wait {
		uri += "?wait=1"
	} else {
		c.timeout = 0
	}
	b, err := c.request(http.MethodPost, uri, body)
	if errors.Is(err, errWaitTimeout) {
		fmt.Fprintf(c.errOut, "Error: gave up waiting after %s; the deployment goes on (see: caddy podswitch history %s)\n", c.timeout, app)
		return exitTimeout
	}
	if err != nil {
		return c.reportErr(err)
	}
	var ans deploymentAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return c.fail("reading the answer: %v", err)
	}
	if c.json {
		c.raw(b)
	} else {
		if ans.Message != "" {
			fmt.Fprintln(c.out, ans.Message)
		}
		if d := ans.Deployment; d != nil {
			fmt.Fprintln(c.out, describeDeployment(app, *d))
			if d.Error != "" {
				fmt.Fprintf(c.out, "error: %s\n", d.Error)
			}
		}
	}
	d := ans.Deployment
	switch {
	case !wait || d == nil || d.Status == engine.StatusSuccess:
		return exitOK
	case !d.Status.Ended():
		// The request ended before the deployment (the server went away).
		fmt.Fprintf(c.errOut, "Error: deployment %d of %s has not ended yet\n", d.ID, app)
		return exitTimeout
	}
	if c.json {
		fmt.Fprintf(c.errOut, "Error: deployment %d of %s ended %s: %s\n", d.ID, app, d.Status, d.Error)
	}
	return exitFailed
}

// describeDeployment says what a deployment is and where it stands, in
// one line.
func describeDeployment(app string, d engine.Deployment) string {
	what := d.Kind + " " + imageText(d.Image, d.ImageID)
	if d.Process != "" {
		what += ", process " + d.Process
	}
	if d.Container != "" {
		what += ", container " + shortID(d.Container)
	}
	if d.Kind == engine.KindCanary && d.Percent != nil {
		what += fmt.Sprintf(", %d%% of new clients", *d.Percent)
	}
	if d.Trigger == "promote" {
		what += ", promoting the canary"
	}
	s := fmt.Sprintf("deployment %d of %s (%s, release %s): %s", d.ID, app, what, d.Release, d.Status)
	if d.Status.Ended() && !d.EndedAt.IsZero() {
		s += " after " + d.EndedAt.Sub(d.StartedAt).Round(time.Millisecond).String()
	}
	if d.CanaryEnded != "" {
		s += "; the canary ended: " + d.CanaryEnded
	}
	return s
}

// imageText shows an image reference with the short ID it was resolved
// to, as "localhost/blog:v2 (3f2a9c1d0b7e)"; the reference alone when the
// release runs by reference.
func imageText(image, id string) string {
	if id == "" {
		return image
	}
	return image + " (" + engine.ShortImageID(id) + ")"
}

// shortID returns the first 12 characters of a container ID, after its
// host (of several) if it has one: b/3f9c12ab34cd.
func shortID(id string) string {
	host, local, ok := strings.Cut(id, engine.HostSep)
	if !ok {
		host, local = "", id
	}
	if len(local) > 12 {
		local = local[:12]
	}
	return engine.QualifyID(host, local)
}

func formatCounts(m map[string]int) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, m[n])
	}
	return strings.Join(parts, " ")
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printApps(w io.Writer, apps []engine.AppStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tRELEASE\tIMAGE\tREADY\tPROCESSES\tLAST DEPLOYMENT")
	for _, st := range apps {
		rel, img := "-", imageText(st.Image, st.ImageID)
		if st.Release != nil {
			rel, img = st.Release.ID, imageText(st.Release.Image, st.Release.ImageID)
		}
		last := "-"
		if len(st.Deployments) > 0 {
			d := st.Deployments[0]
			last = fmt.Sprintf("%d %s %s", d.ID, d.Kind, d.Status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", st.Name, rel, img, readyWeb(st), st.Processes[engine.WebProcess], formatCounts(st.Processes), last)
	}
	tw.Flush()
}

func readyWeb(st engine.AppStatus) int {
	n := 0
	for _, c := range st.Containers {
		if c.Process == engine.WebProcess && c.State == engine.StateReady {
			n++
		}
	}
	return n
}

func printApp(w io.Writer, st engine.AppStatus) {
	fmt.Fprintf(w, "app:        %s\n", st.Name)
	if r := st.Release; r != nil {
		dep := "adopted"
		if r.Deployment != 0 {
			dep = fmt.Sprintf("deployment %d", r.Deployment)
		}
		fmt.Fprintf(w, "release:    %s %s (%s, %s, %s)\n", r.ID, imageText(r.Image, r.ImageID), r.Status, dep, formatTime(r.DeployedAt))
	} else {
		fmt.Fprintln(w, "release:    none serves yet")
	}
	if st.Release == nil || st.Release.ID != st.Desired {
		fmt.Fprintf(w, "desired:    %s %s\n", st.Desired, imageText(st.Image, st.ImageID))
	}
	fmt.Fprintf(w, "processes:  %s\n", formatCounts(st.Processes))
	if len(st.GaveUp) > 0 {
		fmt.Fprintf(w, "gave up:    %s (retried on the next deploy, restart or scale)\n", strings.Join(st.GaveUp, ", "))
	}
	if p := st.Paused; p != nil {
		fmt.Fprintf(w, "paused:     since %s; requests wait up to %s\n", formatTime(p.Since), p.Timeout)
	}
	if m := st.Maintenance; m != nil {
		fmt.Fprintf(w, "maintenance: since %s: %q\n", formatTime(m.Since), m.Message)
	}
	if i := st.Idle; i != nil {
		what := "asleep (idle_timeout): web containers stopped; the next request wakes it"
		if i.Waking {
			what = "waking up: a web container boots"
		}
		fmt.Fprintf(w, "idle:       %s since %s; %d requests held\n", what, formatTime(i.Since), i.Held)
	}
	if cn := st.Canary; cn != nil {
		rules := fmt.Sprintf("%d%% of new clients", cn.Percent)
		if cn.Header != "" {
			rules += ", header " + cn.Header
			if cn.HeaderValue != "" {
				rules += "=" + cn.HeaderValue
			}
		}
		if cn.Cookie != "" {
			rules += ", cookie " + cn.Cookie + "=" + cn.CookieValue
		}
		if cn.InService {
			fmt.Fprintf(w, "canary:     %s %s gets %s since %s (%d ready; deployment %d)\n", cn.Release, imageText(cn.Image, cn.ImageID), rules, formatTime(cn.Since), cn.Ready, cn.Deployment)
		} else {
			fmt.Fprintf(w, "canary:     %s %s boots (deployment %d), then gets %s\n", cn.Release, imageText(cn.Image, cn.ImageID), cn.Deployment, rules)
		}
	}
	if lw := st.LastWake; lw != nil {
		fmt.Fprintf(w, "last wake:  %s by %s, cold start %s\n", formatTime(lw.At), lw.Trigger, lw.ColdStart)
	}
	for _, o := range st.Overrides {
		fmt.Fprintf(w, "override:   %s = %s by %s at %s (the config says %s)\n", o.Setting, o.Value, o.Operation, formatTime(o.At), o.ConfigValue)
	}
	if st.RuntimeError != "" {
		fmt.Fprintf(w, "runtime:    %s\n", st.RuntimeError)
	}
	for _, h := range st.Hosts {
		fmt.Fprintf(w, "host:       %s %s %s since %s", h.Name, h.Address, h.State, formatTime(h.Since))
		if h.APIError != "" {
			fmt.Fprintf(w, " (api: %s)", h.APIError)
		}
		fmt.Fprintln(w)
	}
	if len(st.Deployments) > 0 {
		d := st.Deployments[0]
		fmt.Fprintf(w, "last:       deployment %d %s %s: %s", d.ID, d.Kind, imageText(d.Image, d.ImageID), d.Status)
		if d.Error != "" {
			fmt.Fprintf(w, ": %s", d.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tNAME\tPROCESS\tRELEASE\tSTATE\tDIAL\tSTARTED")
	for _, c := range st.Containers {
		state := string(c.State)
		if c.Note != "" {
			state += " (" + c.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(c.ID), c.Name, c.Process, c.Release, state, orDash(c.Addr), formatTime(c.StartedAt))
	}
	tw.Flush()
}

func printHistory(w io.Writer, deps []engine.Deployment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tIMAGE\tRELEASE\tSTARTED\tDURATION\tERROR")
	for _, d := range deps {
		kind := d.Kind
		if d.Process != "" {
			kind += " " + d.Process
		}
		if d.Container != "" {
			kind += " " + shortID(d.Container)
		}
		dur := "-"
		if !d.EndedAt.IsZero() {
			dur = d.EndedAt.Sub(d.StartedAt).Round(time.Millisecond).String()
		}
		msg := strings.ReplaceAll(d.Error, "\n", " ")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, kind, d.Status, imageText(d.Image, d.ImageID), d.Release, formatTime(d.StartedAt), dur, orDash(msg))
	}
	tw.Flush()
}
