// Command etcd is etcd's own entry point (go.etcd.io/etcd/server/v3/etcdmain), built
// from the pinned module in go.mod: the etcd repository's root module (the `etcd`
// command) carries replace directives, so `go install` cannot build it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
