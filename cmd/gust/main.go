// Command gust is Gust, a self-hosted Function-as-a-Service platform: `gust
// server` runs a node, and the other subcommands are its client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/gust-faas/gust/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
