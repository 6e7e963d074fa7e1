// Package sdk is what the author of a mailgate filter plugin imports. A
// plugin is a stages.Factory served by one call in main:
//
//	func main() { sdk.Serve(exeblock.New) }
//
// The handshake with the gateway, gRPC, the data path that carries each
// call (plugins/README.md), and how the message body reaches
// the plugin stay hidden: the filter sees the same stages.Transaction and
// stages.Config as a built-in kind. Test a plugin with plugins/sdk/sdktest.
package sdk

import (
	"io"
	"log/slog"
	"os"

	"github.com/mailgate/mailgate/plugins/internal/server"
	"github.com/mailgate/mailgate/stages"
)

// ConfigError is a config value a factory refuses, with the key it is
// about; the gateway shows the admin the key. Errors from Config.Decode are
// already ConfigErrors; return one for checks of your own:
//
//	return nil, &sdk.ConfigError{Key: "reply", Err: errors.New("must not be empty")}
type ConfigError = stages.ConfigError

// Serve runs the filter factory builds as a plugin of the gateway that
// started this process, and returns when the gateway stops it. Call it once
// from main, and write nothing to stdout before: the handshake uses it.
//
// The factory is called once per process, with the stage's [stage.config]
// block; its Decode refuses unknown keys. The filter's Run is called
// concurrently. If the filter implements stages.Closer, Close is called
// when the gateway stops the plugin.
//
// Serve makes slog's default logger (and so the log package) write JSON
// lines to stderr that the gateway logs at their level, tagged with the
// stage name.
func Serve(factory stages.Factory) {
	log := newLogger(os.Stderr)
	slog.SetDefault(log)
	server.Serve(factory, log, nil, nil)
}

// ServeGroup serves several kinds in one process, a process group: each
// stage the gateway configures names its kind, a key of kinds. The
// gateway starts its built-in kinds so when `process` in their [[stage]]
// blocks puts them together (`mailgate plugin KIND...`); a plugin of
// kind = "plugin" always runs alone, and calls Serve.
func ServeGroup(kinds map[string]stages.Factory) {
	log := newLogger(os.Stderr)
	slog.SetDefault(log)
	server.ServeGroup(kinds, log, nil, nil)
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       slog.LevelDebug - 4, // the gateway's logger decides what it keeps
		ReplaceAttr: hclogKeys,
	}))
}

// hclogKeys renames slog's keys to the ones of hclog's JSON format, which
// go-plugin parses on the gateway's side.
func hclogKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	case slog.MessageKey:
		a.Key = "@message"
	case slog.LevelKey:
		return slog.String("@level", hclogLevel(a.Value.Any().(slog.Level)))
	}
	return a
}

func hclogLevel(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}
