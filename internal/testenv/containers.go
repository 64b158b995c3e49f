package testenv

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// ContainerLogs is the tail of a container's stdout and stderr, or the error
// reading it.
func ContainerLogs(cli *client.Client, id string, lines int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true,
		Tail: strconv.Itoa(lines)})
	if err != nil {
		return "(logs: " + err.Error() + ")"
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, _ = stdcopy.StdCopy(&buf, &buf, rc)
	return buf.String()
}

// WaitNotRunning waits until container id has stopped, for at most timeout.
func WaitNotRunning(cli *client.Client, id string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := cli.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-res.Result:
	case <-res.Error:
	case <-ctx.Done():
	}
}
