package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// notifier tells the service manager how mailgate serve is doing, as
// sd_notify(3) does: one datagram of "KEY=value" lines to the unix socket
// systemd names in NOTIFY_SOCKET for a Type=notify unit (an abstract one
// when it starts with @, which package net maps). Without NOTIFY_SOCKET it
// does nothing.
type notifier struct{ socket string }

// notify sends the state lines; a service manager that does not listen is
// an error for the log, never a reason to stop serving.
func (n notifier) notify(lines ...string) error {
	if n.socket == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// ready: the listeners are bound and the spool recovered.
func (n notifier) ready(status string) error {
	return n.notify("READY=1", "STATUS="+oneLine(status))
}

// reloading goes before a reload, with the time of CLOCK_MONOTONIC that
// systemd 253 and later ask of it (Type=notify-reload), so that the
// manager can tell this reload from an older one; ready follows it.
func (n notifier) reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sd_notify: CLOCK_MONOTONIC: %w", err)
	}
	return n.notify("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000), "STATUS=reloading")
}

// stopping goes before the listeners close.
func (n notifier) stopping() error { return n.notify("STOPPING=1", "STATUS=stopping") }

// oneLine keeps a status from adding lines (keys) of its own.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
