package server

import (
	"fmt"
	"io"
	"log/slog"
)

// NewLogger makes the logger for --log-format: "text" (the default, for
// people) or "json" (for log collectors). The server writes one line per
// request, with its id, status and timings.
func NewLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q: use text or json", format)
}
