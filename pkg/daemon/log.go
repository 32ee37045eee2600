package daemon

import (
	"context"

	"github.com/sirupsen/logrus"
)

type logKey struct{}

// WithLogger puts the daemon's logger in ctx for the discovery goroutines.
func WithLogger(ctx context.Context, l logrus.FieldLogger) context.Context {
	return context.WithValue(ctx, logKey{}, l)
}

func logger(ctx context.Context) logrus.FieldLogger {
	if l, ok := ctx.Value(logKey{}).(logrus.FieldLogger); ok {
		return l
	}
	return logrus.StandardLogger()
}
