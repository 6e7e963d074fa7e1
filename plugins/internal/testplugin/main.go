// Command testplugin is the filter plugin the tests of plugins/host start
// as a real process. What it does is chosen by its config and, per call, by
// the local part of the envelope sender:
//
//	crash@…  exits at once (status 3), in-flight calls with it
//	sleep@…  logs "testplugin sleeping", then sleeps for the config's
//	         "sleep", ignoring the call's deadline
//	wait@…   logs "testplugin waiting", waits for the call's context to
//	         end, logs "testplugin context ended" with its error, and
//	         returns that error
//	fail@…   returns an error (the stage broke)
//	panic@…  panics inside Run
//	env@…    reports the Env it was built with in Result
//	header@… reports the header block it got, as it would write it, in
//	         Result
//	results@… reports the results of the stages before it, as
//	         "stage=action/result" joined by spaces, in Result, or
//	         "none" without any; with the config's "fail", fails
//
// With TESTPLUGIN_GRPC_ONLY set in its environment it does not serve the
// data path, as a plugin built before it; with TESTPLUGIN_DATA_VERSION=1
// it serves version 1 of it, as under a host from before version 2. With arguments it serves a
// process group whose stages are of kind "testplugin".
//
// Otherwise it answers the config's verdict. For a body it reports the
// size and SHA-256 it read in Result, "<size> <hex>", without one the
// Subject it got (or with "result_header" the value of that field); its
// pid goes in Reason.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/plugins/sdk"
	"github.com/mailgate/mailgate/stages"
)

type config struct {
	Action    stages.Action `json:"action"`     // default continue
	Score     float64       `json:"score"`      //
	Reply     string        `json:"reply"`      // text of a 550 5.7.1 reply
	AddHeader string        `json:"add_header"` // "Name: value", added by an edit
	// ResultHeader names the field whose value it reports in Result
	// instead of the Subject (a stage after an editing one sees its edit).
	ResultHeader string          `json:"result_header"`
	Sleep        stages.Duration `json:"sleep"`   // for sleep@ senders
	Garbage      string          `json:"garbage"` // "action" or "edit": a verdict the host must refuse
	// Results are the result words it declares in Info, so that a config
	// may map them; the words it reports are the Subject or the body's
	// size and hash, for the tests to read.
	Results []string `json:"results"`
	Fail    bool     `json:"fail"` // for results@ senders
	// Tag, with TESTPLUGIN_CALLS naming a file, appends a line "<tag>"
	// to the file at each call: how many times the stage ran.
	Tag string `json:"tag"`
}

type filter struct {
	cfg config
	env stages.Env
}

func newFilter(env stages.Env, c stages.Config) (stages.Filter, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Garbage != "" && cfg.Garbage != "action" && cfg.Garbage != "edit" {
		return nil, &sdk.ConfigError{Key: "garbage", Err: fmt.Errorf("unexpected %q; expect action or edit", cfg.Garbage)}
	}
	// Both ways a plugin's output reaches the gateway's log.
	slog.Warn("testplugin configured", "action", cfg.Action)
	fmt.Fprintln(os.Stderr, "testplugin plain stderr line")
	return &filter{cfg, env}, nil
}

func (f *filter) Info() stages.Info {
	return stages.Info{
		Kind:    "testplugin",
		Version: "1",
		Phases:  stages.AllPhases,
		Needs:   stages.NeedHeader | stages.NeedBody | stages.NeedResults,
		Edits:   f.cfg.AddHeader != "" || f.cfg.Garbage == "edit",
		Results: f.cfg.Results,
	}
}

func (f *filter) Run(ctx context.Context, ph stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if calls := os.Getenv("TESTPLUGIN_CALLS"); calls != "" && f.cfg.Tag != "" {
		if err := appendLine(calls, f.cfg.Tag); err != nil {
			return stages.Verdict{}, err
		}
	}
	switch local, _, _ := strings.Cut(tx.From, "@"); local {
	case "crash":
		os.Exit(3)
	case "wait":
		slog.Info("testplugin waiting")
		<-ctx.Done()
		slog.Info("testplugin context ended", "err", ctx.Err())
		return stages.Verdict{}, ctx.Err()
	case "sleep":
		// Tests wait for this line to know the call reached the plugin.
		slog.Info("testplugin sleeping")
		time.Sleep(time.Duration(f.cfg.Sleep))
	case "fail":
		return stages.Verdict{}, errors.New("scanner unreachable")
	case "panic":
		panic("testplugin told to panic")
	case "env":
		return stages.Verdict{Result: fmt.Sprintf("%+v", f.env)}, nil
	case "header":
		var b strings.Builder
		tx.Header.WriteTo(&b)
		return stages.Verdict{Result: b.String()}, nil
	case "results":
		if f.cfg.Fail {
			return stages.Verdict{}, errors.New("told to fail")
		}
		var rs []string
		for _, r := range tx.Results {
			rs = append(rs, fmt.Sprintf("%s=%s/%s", r.Stage, r.Action, r.Result))
		}
		v := stages.Verdict{Action: f.cfg.Action, Score: f.cfg.Score, Result: strings.Join(rs, " ")}
		if len(rs) == 0 {
			v.Result = "none"
		}
		return v, nil
	}
	v := stages.Verdict{Action: f.cfg.Action, Score: f.cfg.Score, Reason: fmt.Sprintf("pid %d", os.Getpid())}
	if f.cfg.Reply != "" {
		v.Reply = &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: f.cfg.Reply}
	}
	if name, value, ok := strings.Cut(f.cfg.AddHeader, ":"); ok && ph == stages.Data {
		v.Edits = append(v.Edits, stages.Edit{Op: stages.HeaderAdd, Name: name, Value: strings.TrimSpace(value)})
	}
	switch f.cfg.Garbage {
	case "action":
		v.Action = stages.Action(42)
	case "edit":
		v.Edits = append(v.Edits, stages.Edit{Op: stages.HeaderAdd, Name: "X-Ok", Value: "1\r\nInjected: yes"})
	}
	v.Result = tx.Header.Get("Subject")
	if f.cfg.ResultHeader != "" {
		v.Result = tx.Header.Get(f.cfg.ResultHeader)
	}
	if tx.Body != nil && f.cfg.ResultHeader == "" {
		r, err := tx.Body.Open()
		if err != nil {
			return stages.Verdict{}, err
		}
		defer r.Close()
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err != nil {
			return stages.Verdict{}, fmt.Errorf("read body: %w", err)
		}
		v.Result = fmt.Sprintf("%d %x", n, h.Sum(nil))
	}
	return v, nil
}

func main() {
	if os.Getenv("TESTPLUGIN_GRPC_ONLY") != "" {
		os.Unsetenv(proto.DataFDEnv)
	}
	if v := os.Getenv("TESTPLUGIN_DATA_VERSION"); v != "" {
		os.Setenv(proto.DataVersionEnv, v) // as under a host that serves no later version
	}
	if len(os.Args) > 1 {
		sdk.ServeGroup(map[string]stages.Factory{"testplugin": newFilter})
		return
	}
	sdk.Serve(newFilter)
}

// appendLine appends line to the file at path, in one write.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	return errors.Join(err, f.Close())
}
