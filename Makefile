# podswitch: build, test and demo. `make test` is what CI runs (see .ci/run).

# Build tags the Podman bindings need to build without gpgme/btrfs/devicemapper C headers.
# Use the same tags for build, vet and test.
TAGS := remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp
# Extra flags for go build/vet/test, e.g. make test GOFLAGS=-v
GOFLAGS ?=

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

# Podman (the CLI, the service started by setup.sh, and the tests) must use runc and the ulimits
# of the project's containers.conf.
export CONTAINERS_CONF := $(ROOT)/scripts/containers.conf

# The demo's own Caddy data and config directories (instance id, release key, history, state,
# autosave), so that it never shares them with another Caddy of root's. `make demo-clean`
# removes them with the demo's containers.
DEMO_DIR := $(ROOT)/.demo

.PHONY: setup setup-test build test demo demo-clean

# What the demo needs: Podman, runc, the Podman API service, the demo's images.
setup:
	bash $(ROOT)/scripts/setup.sh

# The same, plus what the tests use (gcc for -race, chromium, ss, pgrep, systemd-analyze, sshd,
# redis-server), the extra Podman hosts 2 and 3 of the multi-host tests (scripts/psh.sh) and a
# redis-server on 127.0.0.1:6379 for the several-proxies tests.
setup-test:
	bash $(ROOT)/scripts/setup.sh --tests

build:
	go build $(GOFLAGS) -tags "$(TAGS)" -o bin/caddy ./cmd/podswitch

test: setup-test
	@out=$$(gofmt -l $(ROOT)); if [ -n "$$out" ]; then echo "gofmt: these files are not formatted:"; echo "$$out"; exit 1; fi
	go vet $(GOFLAGS) -tags "$(TAGS)" ./...
	go test $(GOFLAGS) -race -p 1 -tags "$(TAGS)" -count=1 -timeout 40m ./...

demo: setup build
	XDG_DATA_HOME=$(DEMO_DIR)/data XDG_CONFIG_HOME=$(DEMO_DIR)/config \
		bin/caddy run --config Caddyfile.example --adapter caddyfile

# Removes the demo's containers (only those of the demo's podswitch instance) and $(DEMO_DIR).
demo-clean:
	bash $(ROOT)/scripts/demo-clean.sh
