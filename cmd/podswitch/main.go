// Command podswitch is Caddy with its standard modules plus podswitch, and
// the Redis storage module (github.com/pberkel/caddy-storage-redis
// v1.8.1, `storage redis`), so that several Caddy instances can share
// their certificates through Redis.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/pberkel/caddy-storage-redis"

	_ "github.com/podswitch/podswitch/caddymodule"
)

func main() {
	caddycmd.Main()
}
