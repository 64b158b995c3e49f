package bench

import (
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
)

// Engine is the container engine a part runs its containers on, through
// the Docker API: the machine's Docker Engine, or a Podman service the
// part starts (rootful, on a socket of its own).
type Engine struct {
	Name   string
	Client *client.Client
	Image  string   // the test service image, built on this engine
	Env    []string // what a berth-exporter process needs to talk to it
}

// DockerEngine is the machine's Docker Engine.
func DockerEngine(t *TB) Engine {
	docker := testenv.Docker(t)
	return Engine{Name: "docker", Client: docker, Image: testenv.EnsureTestServiceImage(t, docker)}
}

// PodmanEngine starts a rootful Podman API service for the section.
func PodmanEngine(t *TB) Engine {
	p := testenv.StartPodman(t)
	return Engine{Name: "podman", Client: p.Client, Image: testenv.EnsurePodmanTestServiceImage(t, p),
		Env: []string{"DOCKER_HOST=" + p.Host}}
}
