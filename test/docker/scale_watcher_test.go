package docker_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	discovery "github.com/xdplb/xdplb/pkg/discovery/docker"
)

// startScaleWatcher runs a watcher on host as container selfID until the
// test ends, reporting the number of serving backends of every state.
func startScaleWatcher(t *testing.T, host, selfID string, serving func(int)) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := discovery.NewWatcher(discovery.WatcherOptions{
		Host: host, SelfID: selfID, ResyncInterval: time.Hour, Log: logrus.NewEntry(log),
		OnState: func(u discovery.Update) {
			n := 0
			for _, s := range u.State.Services {
				for _, b := range s.Backends {
					if b.Weight > 0 {
						n++
					}
				}
			}
			serving(n)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; w.Close() })
}
