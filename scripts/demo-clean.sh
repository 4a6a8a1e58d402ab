#!/usr/bin/env bash
# Removes what `make demo` left behind: the demo's containers and its data directory (.demo/).
#
# `make demo` runs Caddy with its own data directory, .demo/data/caddy (XDG_DATA_HOME), where
# podswitch keeps the id of this podswitch instance (podswitch/instance). Every container that
# instance starts carries the label podswitch.instance=<that id>: those, and only those, are
# removed. Containers of any other podswitch (a server's, the tests') have another id or none and
# are never touched. The images (localhost/podswitch-testapp:v1, :v2) stay: the tests use them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
DEMO_DIR="$ROOT/.demo"
DATA="$DEMO_DIR/data/caddy/podswitch"

say() { printf 'demo-clean: %s\n' "$*"; }
die() { printf 'demo-clean: error: %s\n' "$*" >&2; exit 1; }

if [ ! -e "$DEMO_DIR" ]; then
  say "nothing to clean: $DEMO_DIR does not exist (no demo was run from this checkout)"
  exit 0
fi
# A running demo holds the lock on its data directory, and would start new containers at once.
if [ -e "$DATA/lock" ] && ! flock -n "$DATA/lock" true; then
  die "the demo is running (it holds $DATA/lock): stop it first (Ctrl-C where \`make demo\` runs)"
fi

if [ -f "$DATA/instance" ]; then
  id=$(tr -d '[:space:]' <"$DATA/instance")
  [[ "$id" =~ ^[0-9a-f]{32}$ ]] || die "$DATA/instance does not hold an instance id ('$id'): remove the demo's containers by hand"
  command -v podman >/dev/null 2>&1 || die "podman is not installed, so the demo's containers cannot be listed"
  mapfile -t ids < <(podman ps -aq --filter "label=podswitch.instance=$id")
  if [ ${#ids[@]} -gt 0 ]; then
    say "removing the demo's ${#ids[@]} containers (label podswitch.instance=$id)"
    podman rm -f -t 5 "${ids[@]}" >/dev/null
  else
    say "no container of the demo (label podswitch.instance=$id) is left"
  fi
else
  say "no instance id in $DATA: the demo never started a container"
fi

say "removing $DEMO_DIR"
rm -rf -- "$DEMO_DIR"
say "done"
