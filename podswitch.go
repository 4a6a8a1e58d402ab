// Package podswitch is the module root, so that xcaddy plugs in every
// podswitch Caddy module. The module is not published: build from a
// checkout, with a replacement pointing at it (the @v0.0.0 is needed: with
// no version, go get asks the module proxy for the latest one, which does
// not exist). From the root of the checkout:
//
//	go install github.com/caddyserver/xcaddy/cmd/xcaddy@latest
//	XCADDY_GO_BUILD_FLAGS='-tags=remote,exclude_graphdriver_btrfs,btrfs_noversion,exclude_graphdriver_devicemapper,containers_image_openpgp' \
//	  xcaddy build v2.11.9 --with github.com/podswitch/podswitch@v0.0.0=.
//
// or `--with github.com/podswitch/podswitch@v0.0.0=/path/to/checkout` from
// anywhere. `make build` builds the same Caddy without xcaddy.
package podswitch

import (
	_ "github.com/podswitch/podswitch/caddymodule"
)
