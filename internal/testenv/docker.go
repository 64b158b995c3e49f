package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/moby/moby/client"
)

// Docker connects to the local Docker Engine (DOCKER_HOST and friends
// honoured), or skips/fails the test through Unavailable. The first call in
// a test binary removes what killed test processes left behind (reap.go).
func Docker(t T) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		Unavailable(t, "docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		Unavailable(t, "docker engine: %v", err)
	}
	reapOrphans(cli)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestServiceImage is the tag of an image FROM scratch holding testsvc,
// built once per test binary. Containers of it serve HTTP on port 80 and can
// use HEALTHCHECK CMD ["/testsvc", "-check", "http://127.0.0.1/healthz"].
const TestServiceImage = "berth-testsvc:test"

var testsvcImage built

// EnsureTestServiceImage builds TestServiceImage if this test binary has not
// yet.
func EnsureTestServiceImage(t T, cli *client.Client) string {
	t.Helper()
	if _, err := testsvcImage.get(func() (string, error) {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("berth-testsvc-%d", os.Getpid()))
		defer os.Remove(bin)
		if err := BuildStatic(RepoRoot(t), "./internal/testenv/testsvc", bin); err != nil {
			return "", err
		}
		return TestServiceImage, BuildImage(cli, TestServiceImage, map[string]string{"testsvc": bin},
			"FROM scratch\nCOPY testsvc /testsvc\nEXPOSE 80\nENTRYPOINT [\"/testsvc\"]\n")
	}); err != nil {
		t.Fatalf("test service image: %v", err)
	}
	return TestServiceImage
}

// BuildStatic builds the Go package pkg (relative to dir) as a static binary.
func BuildStatic(dir, pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// BuildImage builds tag from dockerfile through the Docker API; files maps a
// name in the build context to a local file.
func BuildImage(cli *client.Client, tag string, files map[string]string, dockerfile string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("Dockerfile", 0o644, []byte(dockerfile)); err != nil {
		return err
	}
	for name, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := add(name, 0o755, data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	defer res.Body.Close()
	return buildStreamError(res.Body)
}

// buildStreamError reads the engine's JSON progress stream to its end and
// returns the build error it reports, if any.
func buildStreamError(r io.Reader) error {
	dec := json.NewDecoder(r)
	var log bytes.Buffer
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		log.WriteString(msg.Stream)
		if msg.Error != "" {
			return fmt.Errorf("%s\n%s", msg.Error, log.String())
		}
	}
}

// RemoveContainerOnCleanup force-removes id when the test ends, whatever
// state it is in.
func RemoveContainerOnCleanup(t T, cli *client.Client, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	})
}
