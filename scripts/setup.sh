#!/usr/bin/env bash
# Prepares a machine (Debian 12, as root) for podswitch's demo and, with --tests, its tests:
#   - installs podman, runc and curl when missing; with --tests also what the tests use: gcc
#     (`go test -race`), chromium (the headless browser of the dashboard's tests), iproute2 (ss),
#     procps (pgrep), systemd (systemd-analyze), openssh-server (the extra hosts' sshd) and
#     redis-server (the shared storage of the several-proxies tests); both are installed with a
#     policy-rc.d that keeps Debian from starting their system services, and their start at
#     boot is disabled;
#   - starts the Podman API service on unix:///run/podman/podman.sock with the project's
#     containers.conf, unless something already answers there;
#   - with --tests, starts a redis-server on 127.0.0.1:6379 (no systemd: daemonized, no
#     persistence, log /tmp/podswitch-redis.log), unless something already answers
#     `redis-cli ping` there; the several-proxies tests (integration/proxies_test.go) share
#     Caddy's storage through it, each under a key prefix of its own;
#   - builds the test app and the images localhost/podswitch-testapp:v1 and :v2 (the demo's too);
#   - with --tests, starts the extra Podman hosts 2 and 3 of the multi-host tests
#     (scripts/psh.sh up 2 3: network namespaces reached at 10.250.N.2, state under
#     $PSH_BASE, default /tmp/podswitch-psh) and loads both test images into each.
# Usage: scripts/setup.sh [--tests]   (`make setup` runs it bare, `make setup-test` with --tests)
# Idempotent: safe to run again; a second run reuses the running service, the running extra
# hosts, the images they hold, the running redis-server and cached builds.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)

export CONTAINERS_CONF="$ROOT/scripts/containers.conf"
SOCK_DIR=/run/podman
SOCK="$SOCK_DIR/podman.sock"
SERVICE_LOG=/tmp/podswitch-podman-service.log
IMAGE=localhost/podswitch-testapp
BUILD_DIR="${PODSWITCH_BUILD_DIR:-${TMPDIR:-/tmp}/podswitch-testapp-build}"
REDIS_PORT=6379
REDIS_LOG=/tmp/podswitch-redis.log
REDIS_PIDFILE=/run/podswitch/redis.pid

TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1 ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'setup: error: unknown argument %s (usage: scripts/setup.sh [--tests])\n' "$arg" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (rootful Podman and apt-get are needed)"
command -v go >/dev/null 2>&1 || die "go is not installed (the module needs go $(sed -n 's/^go //p' go.mod))"

# --- packages -----------------------------------------------------------------------------
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "$TESTS" = 1 ]; then
  command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  # The dashboard's tests drive Debian's chromium headless (through chromedp) with
  # --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  # --disable-background-networking --disable-component-update --disable-sync and a fresh
  # --user-data-dir: it needs no display, no GPU and no network.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # The fault tests count Caddy's connections to Podman with ss and find the
  # Podman service with pgrep; the install guide's test runs systemd-analyze.
  command -v ss >/dev/null 2>&1 || missing+=(iproute2)
  command -v pgrep >/dev/null 2>&1 || missing+=(procps)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  # The extra Podman hosts (scripts/psh.sh) run an sshd of their own each, on 10.250.N.2:22.
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  # The several-proxies tests share Caddy's storage through Redis (caddy.storage.redis);
  # Debian's redis-server brings redis-cli (redis-tools) with it.
  { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; } || missing+=(redis-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Installed packages must not start their services: Debian's openssh-server would start a
  # system sshd on 0.0.0.0:22 (invoke-rc.d, or systemd where it runs). A policy-rc.d that
  # answers 101 ("action forbidden") stops that; one already there (container images often
  # ship one) is left as it is.
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    trap 'rm -f "$policy_rc"' EXIT
    printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs packages.\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
  fi
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
  if [ -n "$policy_rc" ]; then
    rm -f "$policy_rc"
    trap - EXIT
  fi
  # The packages also enable their services for the next boot; only their binaries are wanted
  # here (the tests start their own redis-server below).
  for pkg_service in openssh-server:ssh redis-server:redis-server; do
    pkg=${pkg_service%%:*} service=${pkg_service#*:}
    [[ " ${missing[*]} " == *" $pkg "* ]] || continue
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable "$service.service" >/dev/null 2>&1 || say "could not disable $service.service at boot"
    else
      update-rc.d "$service" disable >/dev/null 2>&1 || say "could not disable $service at boot"
    fi
  done
else
  present="podman $(podman --version | awk '{print $3}'), runc, curl"
  [ "$TESTS" = 1 ] && present="$present, gcc, chromium, ss, pgrep, systemd-analyze, sshd, redis-server"
  say "$present present"
fi

# --- kernel ---------------------------------------------------------------------------------
# Caddy binds a new SO_REUSEPORT socket on every config reload (and podswitch deploys by reload),
# then closes the old one; connections still queued on the old socket are reset unless the
# kernel migrates them to the new one. Best effort: older kernels lack the setting.
if [ -e /proc/sys/net/ipv4/tcp_migrate_req ]; then
  sysctl -qw net.ipv4.tcp_migrate_req=1 || say "could not set net.ipv4.tcp_migrate_req=1"
fi

# --- Podman API service ---------------------------------------------------------------------
ping() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }

if ping; then
  say "podman service already answers on $SOCK"
else
  say "starting podman service on unix://$SOCK (log: $SERVICE_LOG)"
  mkdir -p "$SOCK_DIR"
  # A stale socket file left by a dead service would make the new one fail to bind.
  [ -S "$SOCK" ] && rm -f "$SOCK"
  # The service outlives this script and this checkout: give it a copy of the config and a
  # working directory that cannot be deleted under it (its children, conmon and runc, fail
  # with "write child: broken pipe" when the folder it started in is gone).
  mkdir -p /run/podswitch
  cp "$CONTAINERS_CONF" /run/podswitch/containers.conf
  # setsid + all fds redirected: the service holds no caller pipe.
  CONTAINERS_CONF=/run/podswitch/containers.conf setsid nohup env -C / \
    podman system service --time=0 "unix://$SOCK" </dev/null >>"$SERVICE_LOG" 2>&1 &
  for _ in $(seq 1 60); do
    ping && break
    sleep 0.5
  done
  ping || { tail -n 20 "$SERVICE_LOG" >&2 || true; die "podman service did not answer on $SOCK within 30s"; }
  say "podman service is up"
fi

# A service started by someone else may not use runc; containers would then fail to start here.
runtime=$(curl -sf --max-time 5 --unix-socket "$SOCK" http://d/v4.0.0/libpod/info 2>/dev/null \
  | grep -o '"ociRuntime":{"name":"[^"]*"' | sed 's/.*"name":"//; s/"$//' || true)
if [ -n "$runtime" ] && [ "$runtime" != "runc" ]; then
  say "warning: the service on $SOCK uses OCI runtime '$runtime', not runc; restart it with CONTAINERS_CONF=$CONTAINERS_CONF"
fi

# --- Redis (tests only) ----------------------------------------------------------------------
# The shared storage of the several-proxies tests: one redis-server on 127.0.0.1:6379, which
# the tests reach with `storage redis { host 127.0.0.1 port 6379 key_prefix <the test's> }` and
# freeze (SIGSTOP, then SIGCONT) to show a storage outage. There is no systemd to run it: it is
# daemonized, with no persistence (nothing of the tests needs to outlive it), its log in
# $REDIS_LOG. One already answering there (a system redis, or the one an earlier run started)
# is used as it is.
if [ "$TESTS" = 1 ]; then
  # redis-cli has no timeout of its own: a frozen server would hang it.
  redis_ping() { [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
  # A test that died (go test's -timeout) while it had the server frozen leaves it stopped:
  # thaw ours.
  redis_pid=$(cat "$REDIS_PIDFILE" 2>/dev/null || true)
  if [ -n "$redis_pid" ] && [ "$(ps -o stat= -p "$redis_pid" 2>/dev/null | cut -c1)" = T ]; then
    say "redis-server (pid $redis_pid) was left stopped (SIGSTOP): continuing it"
    kill -CONT "$redis_pid"
  fi
  if redis_ping; then
    say "redis already answers on 127.0.0.1:$REDIS_PORT"
  else
    say "starting redis-server on 127.0.0.1:$REDIS_PORT (log: $REDIS_LOG)"
    mkdir -p /run/podswitch
    # --dir: a working directory that outlives this checkout (nothing is written there).
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
      --dir /run/podswitch --logfile "$REDIS_LOG" --pidfile "$REDIS_PIDFILE" \
      </dev/null >/dev/null 2>&1 || { tail -n 20 "$REDIS_LOG" >&2 || true; die "redis-server did not start"; }
    for _ in $(seq 1 50); do
      redis_ping && break
      sleep 0.1
    done
    redis_ping || { tail -n 20 "$REDIS_LOG" >&2 || true; die "redis-server did not answer on 127.0.0.1:$REDIS_PORT within 5s"; }
    say "redis-server is up"
  fi
fi

# --- test app and images ------------------------------------------------------------------
say "building test app -> $BUILD_DIR/app"
mkdir -p "$BUILD_DIR"
CGO_ENABLED=0 go build -trimpath -o "$BUILD_DIR/app.new" ./integration/testapp
mv -f "$BUILD_DIR/app.new" "$BUILD_DIR/app"

# One build context per version, with the version written into the Containerfile: Podman 4.3
# (buildah) keys its layer cache on the unexpanded instruction text and ignores --build-arg, so
# building :v2 after :v1 from the same Containerfile would reuse the v1 layers (APP_VERSION=v1).
for v in v1 v2; do
  dir="$BUILD_DIR/$v"
  mkdir -p "$dir"
  # Copy only when changed, so an unchanged binary keeps hitting the layer cache.
  cmp -s "$BUILD_DIR/app" "$dir/app" || cp -f "$BUILD_DIR/app" "$dir/app"
  sed -e "s/^ARG APP_VERSION=.*/ARG APP_VERSION=$v/" \
      -e "s/^ENV APP_VERSION=.*/ENV APP_VERSION=$v/" \
      integration/testapp/Containerfile >"$dir/Containerfile"
  say "building image $IMAGE:$v"
  podman build -q --layers --build-arg "APP_VERSION=$v" -t "$IMAGE:$v" \
    -f "$dir/Containerfile" "$dir" >/dev/null
  got=$(podman image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE:$v" \
    | sed -n 's/^APP_VERSION=//p')
  [ "$got" = "$v" ] || die "image $IMAGE:$v has APP_VERSION='$got', want '$v'"
done

# --- extra Podman hosts (tests only) ---------------------------------------------------------
# Hosts 2 and 3 of the multi-host tests (integration/hosts_test.go), each with both test images.
# No registry: the images go over with save | load, skipped when the host has the same image ID.
if [ "$TESTS" = 1 ]; then
  started=$EPOCHREALTIME
  export PSH_BASE="${PSH_BASE:-/tmp/podswitch-psh}"
  say "starting extra podman hosts 2 and 3 (scripts/psh.sh, state under $PSH_BASE)"
  bash scripts/psh.sh up 2 3
  declare -A want
  for v in v1 v2; do want[$v]=$(podman image inspect -f '{{.Id}}' "$IMAGE:$v"); done
  host_id() { podman --remote --url "$1" image inspect -f '{{.Id}}' "$2" 2>/dev/null || true; }
  for n in 2 3; do
    url="unix://$PSH_BASE/h$n/podman.sock"
    load=()
    for v in v1 v2; do [ "$(host_id "$url" "$IMAGE:$v")" = "${want[$v]}" ] || load+=("$IMAGE:$v"); done
    [ ${#load[@]} -gt 0 ] || continue
    say "loading ${load[*]} into host $n"
    podman save -q -m "${load[@]}" | podman --remote --url "$url" load -q >/dev/null
    for v in v1 v2; do
      got=$(host_id "$url" "$IMAGE:$v")
      [ "$got" = "${want[$v]}" ] || die "host $n: $IMAGE:$v has image ID '$got' after load, want '${want[$v]}'"
    done
  done
  say "extra podman hosts 2 and 3 ready with both images ($(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $started }")s)"
fi

say "done. Images: $(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$IMAGE" | sort | tr '\n' ' ')"
say "to use podman by hand with the same settings:"
printf '  export CONTAINERS_CONF=%s\n' "$CONTAINERS_CONF"
