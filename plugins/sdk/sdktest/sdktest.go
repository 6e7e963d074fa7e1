// Package sdktest runs a filter plugin in-process for its author's tests,
// against the gateway's real plugin host over a real gRPC connection and
// data path (a socket pair, as the gateway gives a plugin process): what a
// test sees is what the gateway will see, config errors included.
package sdktest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/plugins/internal/server"
	"github.com/mailgate/mailgate/stages"
)

// Stage serves factory in-process, configures it with config (a JSON
// object, as the gateway turns a [stage.config] block into) and returns
// the stage as the pipeline would run it. A refused config is the error
// the gateway would report, a *host.ConfigError. The plugin stops when the
// test ends.
//
// The stage's Env has Hostname "mx.example.test" and a fresh DataDir.
func Stage(t testing.TB, factory stages.Factory, config string) (stages.Stage, error) {
	t.Helper()
	// Warnings and errors only, to stderr: t.Log would panic if go-plugin
	// logged after the test ended.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	attach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	// The data path, as the gateway hands a plugin process one: a socket
	// pair, one end for each side.
	hostEnd, pluginEnd := dataPair(t)
	go server.Serve(factory, log, &plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: attach, CloseCh: closed}, pluginEnd)
	stop := func() {
		cancel()
		<-closed
	}
	var rc *plugin.ReattachConfig
	select {
	case rc = <-attach:
	case <-closed:
		cancel()
		hostEnd.Close()
		return nil, errors.New("sdktest: plugin server ended before serving")
	case <-time.After(10 * time.Second):
		stop()
		hostEnd.Close()
		return nil, errors.New("sdktest: plugin server did not start within 10s")
	}
	p, err := host.Attach(ctx, host.Spec{
		Name:   "sdktest",
		Config: []byte(config),
		Env:    stages.Env{Hostname: "mx.example.test", DataDir: t.TempDir()},
		Logger: log,
	}, rc, hostEnd)
	if err != nil {
		stop()
		return nil, err
	}
	t.Cleanup(func() {
		// Close asks the plugin to shut down, which ends the server by
		// itself; cancelling before it has would stop the gRPC server from
		// two goroutines at once (a race inside go-plugin).
		p.Close()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
		}
		stop()
	})
	return p, nil
}

// dataPair is a connected Unix socket pair, as the gateway makes for the
// data path of each plugin process.
func dataPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("sdktest: socket pair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "sdktest-data")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("sdktest: socket pair: %v", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}
