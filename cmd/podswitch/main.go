// Command podswitch is Caddy with its standard modules plus podswitch.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/podswitch/podswitch/caddymodule"
)

func main() {
	caddycmd.Main()
}
