package docker

import (
	"context"
	"strings"

	"github.com/docker/docker/api/types/container"
)

// ContainerNames is the name of every container the engine knows, running
// or not (without Docker's leading slash): a stopped container may start
// again, a removed one never will.
func (w *Watcher) ContainerNames(ctx context.Context) (map[string]bool, error) {
	list, err := w.cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, w.wrapErr("listing containers", err)
	}
	names := map[string]bool{}
	for _, c := range list {
		for _, n := range c.Names {
			names[strings.TrimPrefix(n, "/")] = true
		}
	}
	return names, nil
}
