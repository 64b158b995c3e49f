package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// consulTimeout bounds one command's reads from Consul, so that a
// monitoring check never hangs on an unreachable agent.
const consulTimeout = 30 * time.Second

// Run is the berth command: args without the program's name. It returns
// the exit status: 0 success, 1 when check finds something the zone would
// leave out (or ls no such service, or resolve nothing to dial), 2 for a
// bad command line or an error talking to Consul.
func Run(args []string, stdout, stderr io.Writer) int {
	name, o, err := parse(args, os.LookupEnv, stdout, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch name {
	case "version":
		fmt.Fprintf(stdout, "berth %s %s\n", Version, runtime.Version())
		return 0
	case "policy":
		return runPolicy(ctx, o, stdout, stderr)
	case "resolve":
		return runResolve(ctx, o, stdout, stderr)
	}
	client, err := newConsulClient()
	if err != nil {
		fmt.Fprintf(stderr, "berth: consul: %v\n", err)
		return 2
	}
	if name == "ui" {
		return runUI(ctx, client, o, stdout, stderr)
	}
	rctx, cancel := context.WithTimeout(ctx, consulTimeout)
	defer cancel()
	ns, _, err := ReadBounded(rctx, client, o.prefix)
	if err == nil && name == "hosts" {
		err = ns.Sessions(rctx, client.Session())
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth %s: %v\n", name, err)
		return 2
	}
	switch name {
	case "ls":
		return runLs(ns, o, stdout, stderr)
	case "hosts":
		return runHosts(ns, o, stdout, stderr)
	default: // check
		if len(o.args) > 0 {
			fmt.Fprintln(stderr, "berth check: no arguments")
			return 2
		}
		return runCheck(ns, o, stdout)
	}
}
