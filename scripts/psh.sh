#!/usr/bin/env bash
# Extra "Podman hosts" in network namespaces. psh.sh up N... | down N... | exec N CMD... | purge
# Host N (2..254): netns pshN; veth pshN-veth 10.250.N.1/30 (root) <-> eth0 10.250.N.2/30 (inside);
# own storage/config under $BASE/hN; API on unix://$BASE/hN/podman.sock and tcp://10.250.N.2:8080;
# sshd on 10.250.N.2:22 (PSH_SSH=0 to skip). `up` reuses a healthy host, else rebuilds it.
# Verified on Debian 12 with Podman 4.3.1 + runc + netavark, 2026-11-26.
#
# podswitch's copy, derived from the shared tool psh.sh of the development machines
# (/work/shared/tools/psh.sh there), so that CI, which has only this repository, has it too.
# What differs from the shared tool:
#   - PSH_BASE defaults to /tmp/podswitch-psh (the integration tests look there);
#   - fault subcommands for tests:
#       svc-stop N / svc-start N   stop / start host N's two API services (unix and tcp); its
#                                  containers (run by conmon) keep running and answering;
#       link-down N / link-up N    `ip link set pshN-veth down/up`: cuts / restores the host's
#                                  network as seen from the root namespace;
#   - `up` repairs a host whose anchor (namespaces, mounts) is alive: it brings the link up and
#     restarts only the services (and sshd) that are gone or do not answer, so containers survive;
#     it rebuilds the host (removing its containers) only when that is not enough;
#   - a dead end for host N's traffic while its link is down: a veth pshN-void (no ARP, its peer
#     pshN-voidp down, so it drops what it is given) with a route to 10.250.N.0/30 of metric 4096,
#     under the link's own route. With the link down a dial to the host times out (its SYNs are
#     dropped) instead of the traffic following the default route off the machine;
#   - packages are installed with a policy-rc.d that keeps their services (sshd) from starting.
set -euo pipefail
BASE=${PSH_BASE:-/tmp/podswitch-psh} API_PORT=${PSH_API_PORT:-8080} PSH_SSH=${PSH_SSH:-1}
die() { echo "psh: error: $*" >&2; exit 1; }
vars() {
  [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 2 && $1 <= 254)) || die "bad host number '$1'"
  NS=psh$1 D=$BASE/h$1 IP_ROOT=10.250.$1.1 IP=10.250.$1.2 SUBNET=10.251.$1.0/24 VETH=psh$1-veth
  NET=10.250.$1.0/30 VOID=psh$1-void
}
# A process that exited stays a zombie until PID 1 reaps it, which can take a while: not alive.
running() { local st; st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [ "${st:0:1}" != Z ]; }
alive() { [ -f "$1" ] && running "$(cat "$1")"; }
ping_unix() { curl -sf --max-time 2 --unix-socket "$D/podman.sock" http://d/_ping >/dev/null 2>&1; }
ping_tcp() { curl -sf --max-time 2 "http://$IP:$API_PORT/_ping" >/dev/null 2>&1; }
# The tcp service seen from inside the host: answers while the link is down too.
ping_tcp_in() { nsenter --net="/run/netns/$NS" -- curl -sf --max-time 2 "http://$IP:$API_PORT/_ping" >/dev/null 2>&1; }
wait_for() { local end=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < end)) || return 1; sleep 0.2; done; }
in_host() {
  exec nsenter -t "$(cat "$D/anchor.pid")" -m -n -- env -C / CONTAINERS_CONF="$D/containers.conf" \
    CONTAINERS_STORAGE_CONF="$D/storage.conf" "$@"
}
healthy() {
  alive "$D/anchor.pid" && alive "$D/svc-unix.pid" && alive "$D/svc-tcp.pid" && ping_unix && ping_tcp &&
    { [ "$PSH_SSH" = 0 ] || alive "$D/sshd.pid"; }
}
gone() { local p; for p in "$@"; do ! running "$p" || return 1; done; }
# stop_pids FILE...: ends the processes the files name, together (TERM, with CONT for a stopped
# one; KILL after 10 s). A Podman service takes 1 to 2 s to exit on TERM (and removes its socket).
stop_pids() {
  local f ps=()
  for f in "$@"; do alive "$f" && ps+=("$(cat "$f")"); done
  if ((${#ps[@]})); then
    kill -TERM "${ps[@]}" 2>/dev/null || true; kill -CONT "${ps[@]}" 2>/dev/null || true
    wait_for 10 gone "${ps[@]}" || { kill -KILL "${ps[@]}" 2>/dev/null || true; wait_for 5 gone "${ps[@]}" || true; }
  fi
  rm -f "$@"
}
# The API services run in the host's namespaces; its containers are conmon's, not theirs.
start_svc() {
  rm -f "$D/podman.sock"
  in_host setsid podman system service --time=0 "unix://$D/podman.sock" </dev/null >>"$D/svc-unix.log" 2>&1 &
  echo $! >"$D/svc-unix.pid"
  in_host setsid podman system service --time=0 "tcp://$IP:$API_PORT" </dev/null >>"$D/svc-tcp.log" 2>&1 &
  echo $! >"$D/svc-tcp.pid"
}
stop_svc() { stop_pids "$D/svc-unix.pid" "$D/svc-tcp.pid"; rm -f "$D/podman.sock"; }
wait_svc() {
  wait_for 30 ping_unix || die "unix service: $(tail -3 "$D/svc-unix.log")"
  wait_for 30 ping_tcp_in || die "tcp service: $(tail -3 "$D/svc-tcp.log")"
}
start_sshd() {
  mkdir -p /run/sshd
  in_host setsid /usr/sbin/sshd -D -e -f "$D/sshd_config" </dev/null >>"$D/sshd.log" 2>&1 &
  echo $! >"$D/sshd.pid"
}
# add_void: the dead end for host N's traffic while its link is down (see the header).
add_void() {
  ip link show "$VOID" >/dev/null 2>&1 ||
    { ip link add "$VOID" type veth peer name "${VOID}p" && ip link set "$VOID" arp off && ip link set "$VOID" up; }
  ip route replace "$NET" dev "$VOID" metric 4096
}
# repair: the anchor (namespaces, mounts) is alive: bring the link up and restart what is gone or
# does not answer; the containers survive. Fails when the host must be rebuilt. Sets REPAIRED to
# what it did.
repair() {
  REPAIRED=""
  alive "$D/anchor.pid" && [ -e "/run/netns/$NS" ] && [ -f "$D/containers.conf" ] &&
    ip link show "$VETH" >/dev/null 2>&1 || return 1
  add_void
  ip link show "$VETH" | grep -q '[<,]UP[,>]' || { ip link set "$VETH" up; REPAIRED+=" link up;"; }
  if ! { alive "$D/svc-unix.pid" && alive "$D/svc-tcp.pid" && ping_unix && ping_tcp_in; }; then
    stop_svc && start_svc && REPAIRED+=" services restarted;"
  fi
  if [ "$PSH_SSH" != 0 ] && ! alive "$D/sshd.pid"; then
    [ -f "$D/sshd_config" ] || return 1
    start_sshd && REPAIRED+=" sshd restarted;"
  fi
  wait_for 30 healthy
}
up() {
  vars "$1"
  if healthy; then add_void; echo "psh: $NS already up" >&2; return; fi
  if repair; then echo "psh: $NS repaired:$REPAIRED containers kept" >&2; return; fi
  down "$1" >/dev/null 2>&1 || true
  mkdir -p "$D"/{root,run,tmp,networks,netrun,netns,runc}
  cat >"$D/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
tmp_dir = "$D/tmp"
events_logger = "file"
[network]
network_backend = "netavark"
network_config_dir = "$D/networks"
default_subnet = "$SUBNET"
EOF
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$D/root" "$D/run" >"$D/storage.conf"
  ip netns add "$NS"
  ip link add "$VETH" type veth peer name eth0 netns "$NS"
  ip addr add "$IP_ROOT/30" dev "$VETH" && ip link set "$VETH" up
  add_void
  ip -n "$NS" addr add "$IP/30" dev eth0 && ip -n "$NS" link set eth0 up && ip -n "$NS" link set lo up
  ip -n "$NS" route add default via "$IP_ROOT"
  mkdir -p /run/containers/networks /run/runc
  setsid nsenter --net="/run/netns/$NS" -- unshare --mount --propagation slave -- sh -c '
    [ "$(readlink /proc/self/ns/mnt)" != "$2" ] || exit 1
    awk '\''$5 ~ "^(/var/lib/containers/storage/|/run/containers/storage/|/run/netns/)" {print $5}'\'' \
      /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm && mount --bind "$1/netrun" /run/containers/networks &&
    mount --bind "$1/runc" /run/runc && mount --bind "$1/netns" /run/netns &&
    echo $$ >"$1/anchor.pid" && exec sleep infinity' sh "$D" "$(readlink /proc/self/ns/mnt)" \
    </dev/null >"$D/anchor.log" 2>&1 &
  wait_for 10 alive "$D/anchor.pid" || die "anchor: $(cat "$D/anchor.log")"
  start_svc
  if [ "$PSH_SSH" != 0 ]; then
    mkdir -p "$BASE/ssh" "$BASE/home/.ssh" && chmod 700 "$BASE/ssh" "$BASE/home/.ssh"
    [ -f "$BASE/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$BASE/ssh/id_ed25519"
    [ -f "$BASE/ssh/hostkey_$1" ] || ssh-keygen -q -t ed25519 -N '' -f "$BASE/ssh/hostkey_$1"
    touch "$BASE/home/.ssh/known_hosts" && sed -i "/^$IP /d" "$BASE/home/.ssh/known_hosts"
    echo "$IP $(cut -d' ' -f1,2 "$BASE/ssh/hostkey_$1.pub")" >>"$BASE/home/.ssh/known_hosts"
    cat >"$D/sshd_config" <<EOF
ListenAddress $IP:22
HostKey $BASE/ssh/hostkey_$1
PidFile none
AuthorizedKeysFile $BASE/ssh/id_ed25519.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding local
AllowStreamLocalForwarding yes
EOF
    start_sshd
  fi
  wait_svc
  wait_for 30 ping_tcp || die "tcp service not reachable from the root namespace at $IP:$API_PORT"
  [ "$PSH_SSH" = 0 ] || wait_for 10 bash -c "exec 3<>/dev/tcp/$IP/22" 2>/dev/null || die "sshd: $(tail -3 "$D/sshd.log")"
  echo "psh: $NS up: unix://$D/podman.sock tcp://$IP:$API_PORT ssh://root@$IP:22$D/podman.sock" >&2
}
down() {
  vars "$1"
  local mntns="" p f
  if ping_unix; then
    timeout 60 podman --url "unix://$D/podman.sock" pod rm -af -t 0 >/dev/null 2>&1 || true
    timeout 60 podman --url "unix://$D/podman.sock" rm -af -t 0 >/dev/null 2>&1 || true
  fi
  if [ -d "$D/runc" ]; then
    for c in $(runc --root "$D/runc" list -q 2>/dev/null); do runc --root "$D/runc" delete -f "$c" >/dev/null 2>&1 || true; done
  fi
  alive "$D/anchor.pid" && mntns=$(readlink "/proc/$(cat "$D/anchor.pid")/ns/mnt")
  for f in sshd svc-tcp svc-unix; do alive "$D/$f.pid" && kill "$(cat "$D/$f.pid")" || true; done
  if [ -n "$mntns" ]; then
    for sig in TERM KILL; do
      for p in /proc/[0-9]*; do [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$mntns" ] && kill -$sig "${p#/proc/}" 2>/dev/null || true; done
      wait_for 10 gone "$(cat "$D/anchor.pid")" || true
    done
  fi
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$VETH" 2>/dev/null || true
  ip link del "$VOID" 2>/dev/null || true
  ! grep -q " $D/" /proc/self/mountinfo || die "still mounted under $D"
  rm -rf "$D"
  echo "psh: $NS down" >&2
}
svc_stop() {
  vars "$1"; alive "$D/anchor.pid" || die "$NS is not up"
  stop_svc
  echo "psh: $NS services stopped (containers keep running)" >&2
}
svc_start() {
  vars "$1"; alive "$D/anchor.pid" || die "$NS is not up"
  if alive "$D/svc-unix.pid" && alive "$D/svc-tcp.pid" && ping_unix && ping_tcp_in; then
    echo "psh: $NS services already running" >&2; return
  fi
  stop_svc && start_svc && wait_svc
  echo "psh: $NS services started" >&2
}
link() {
  vars "$1"; ip link show "$VETH" >/dev/null 2>&1 || die "$NS is not up (no $VETH)"
  add_void
  ip link set "$VETH" "$2"
  echo "psh: $NS link $2" >&2
}
[ "$(id -u)" = 0 ] || die "run as root"
# Packages' services are kept from starting (Debian's openssh-server would start a system sshd on
# 0.0.0.0:22): a policy-rc.d that refuses, unless one is there already.
need() {
  command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] && return
  local policy=""
  [ -e /usr/sbin/policy-rc.d ] || { policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >$policy; chmod 755 $policy; }
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 || true
  [ -z "$policy" ] || rm -f "$policy"
}
cmd=${1:-}; shift || true
case "$cmd" in
  up|down|exec|purge) need ip iproute2; need podman podman; need runc runc; [ "$PSH_SSH" = 0 ] || need sshd openssh-server ;;
esac
case "$cmd" in
  up) for n in "$@"; do up "$n"; done ;;
  down) for n in "$@"; do down "$n"; done ;;
  svc-stop) for n in "$@"; do svc_stop "$n"; done ;;
  svc-start) for n in "$@"; do svc_start "$n"; done ;;
  link-down) for n in "$@"; do link "$n" down; done ;;
  link-up) for n in "$@"; do link "$n" up; done ;;
  exec) vars "$1"; shift; alive "$D/anchor.pid" || die "$NS is not up"; in_host "$@" ;;
  purge) for d in "$BASE"/h[0-9]*; do [[ -d $d && ${d##*/h} =~ ^[0-9]+$ ]] && down "${d##*/h}"; done
         rm -rf "$BASE/ssh" "$BASE/home" ;;
  *) die "usage: $0 up|down|svc-stop|svc-start|link-down|link-up N... | exec N CMD... | purge" ;;
esac
