package exporter

import (
	"context"
	"errors"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/client"
)

func (e *Exporter) pingDocker(ctx context.Context) error {
	_, err := e.docker.Ping(ctx, client.PingOptions{})
	return err
}

func (e *Exporter) pingConsul(ctx context.Context) error {
	leader, err := e.consul.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err == nil && leader == "" {
		err = errors.New("no leader")
	}
	return err
}
