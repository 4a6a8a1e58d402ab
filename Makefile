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

.PHONY: setup build test demo

setup:
	bash $(ROOT)/scripts/setup.sh

build:
	go build $(GOFLAGS) -tags "$(TAGS)" -o bin/caddy ./cmd/podswitch

test: setup
	@out=$$(gofmt -l $(ROOT)); if [ -n "$$out" ]; then echo "gofmt: these files are not formatted:"; echo "$$out"; exit 1; fi
	go vet $(GOFLAGS) -tags "$(TAGS)" ./...
	go test $(GOFLAGS) -race -p 1 -tags "$(TAGS)" -count=1 -timeout 40m ./...

demo: setup build
	bin/caddy run --config Caddyfile.example --adapter caddyfile
