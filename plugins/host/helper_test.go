package host

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// helperEnv makes the test binary a gateway stand-in (see helperMain) for
// the tests that must kill the gateway itself. Its value is the plugin.
const helperEnv = "MAILGATE_HOST_TEST_HELPER"

// helperMain starts the plugin named by helperEnv, prints its pid and waits
// to be killed.
func helperMain() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Start(ctx, Spec{Name: "helper", Cmd: []string{os.Getenv(helperEnv)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(p.current().pid)
	time.Sleep(time.Minute)
	os.Exit(2)
}
