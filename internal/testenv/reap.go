package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// OwnerLabel marks every container and network a test creates with the
// process that created it ("<pid>:<start time>"), so that what a killed test
// binary left behind can be told from what a test running beside it (go
// test runs packages in parallel) still uses.
const OwnerLabel = "berth.test.owner"

// owner is this process's OwnerLabel value.
var owner = sync.OnceValue(func() string { return ownerOf(os.Getpid()) })

// ownerOf is pid's OwnerLabel value, or "" when no such process runs. The
// start time tells a reused pid from the process that had it.
func ownerOf(pid int) string {
	f, ok := procStat(pid)
	if !ok {
		return ""
	}
	return strconv.Itoa(pid) + ":" + f[19]
}

// Labels is the label set of a test's container or network: berth.test=kind,
// its owner, and extra.
func Labels(kind string, extra map[string]string) map[string]string {
	l := withOwner(extra)
	l["berth.test"] = kind
	return l
}

// withOwner is labels with this process's OwnerLabel added.
func withOwner(labels map[string]string) map[string]string {
	l := map[string]string{OwnerLabel: owner()}
	for k, v := range labels {
		l[k] = v
	}
	return l
}

// orphaned reports whether a labelled object's owner has gone.
func orphaned(labels map[string]string) bool {
	o, ok := labels[OwnerLabel]
	if !ok {
		return false
	}
	pid, _, _ := strings.Cut(o, ":")
	n, err := strconv.Atoi(pid)
	return err != nil || ownerOf(n) != o
}

var reapOnce sync.Once

// reapOrphans removes, once per test binary, the containers and networks
// whose owning test process has gone: a test killed by its timeout or a
// panic runs no cleanup, and its Consul agents would run on.
func reapOrphans(cli *client.Client) {
	reapOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		filter := client.Filters{}.Add("label", OwnerLabel)
		ctrs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
		if err != nil {
			fmt.Fprintf(os.Stderr, "testenv: listing leftover containers: %v\n", err)
			return
		}
		for _, c := range ctrs.Items {
			if orphaned(c.Labels) {
				fmt.Fprintf(os.Stderr, "testenv: removing container %s left by %s\n", c.ID[:12], c.Labels[OwnerLabel])
				_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
		nets, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: filter})
		if err != nil {
			fmt.Fprintf(os.Stderr, "testenv: listing leftover networks: %v\n", err)
			return
		}
		for _, n := range nets.Items {
			if orphaned(n.Labels) {
				fmt.Fprintf(os.Stderr, "testenv: removing network %s left by %s\n", n.Name, n.Labels[OwnerLabel])
				_, _ = cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
			}
		}
	})
}
