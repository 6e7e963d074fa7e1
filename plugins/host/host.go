// Package host runs filter plugins for the engine. Start launches a stage's
// plugin executable through hashicorp/go-plugin, configures it over the
// gRPC contract of plugins/proto and returns a *Plugin, a stages.Stage that
// forwards every Run to that one process: over the data path (a socket
// pair, see datapath.go) when the plugin serves it, else over gRPC.
// StartGroup runs one process for several stages of built-in kinds (a
// process group), whose calls of one phase can go in one round trip
// (RunBatch).
//
// A plugin that breaks never takes the gateway with it: Run returns an error
// (never a hang past its context) when the plugin is slow, crashed, down or
// answers garbage, and the pipeline applies the stage's on_error. A process
// that exits is restarted in the background with exponential backoff; after
// repeated failures a circuit opens and Run fails fast for a cool-down
// before one probe call is let through.
//
// A crash is one failure, however many calls it cut short, and a process
// started after a crash, configured and described, starts with a closed
// circuit: mail is held up for the restart, not for a cool-down. The
// restart backoff is what slows down a plugin that keeps crashing. In a
// process group each stage keeps its own circuit; a crash of the process
// is a failure of each.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/go-plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// Spec says how to run one stage instance's plugin, or the process of a
// group (StartGroup).
type Spec struct {
	Name string // instance name (a group's name): logs, metrics and errors use it
	// Cmd is the executable and its arguments. Built-in kinds are the
	// mailgate binary itself with "plugin", "<kind>".
	Cmd []string
	// SHA256 pins the executable (hex); checked before every start.
	SHA256 string
	Config []byte // the [stage.config] block as a JSON object; nil means {}
	Env    stages.Env
	Logger *slog.Logger // plugin logs and restarts are logged here with stage=<Name>
	// Registerer receives mailgate_plugin_restarts_total; nil registers nothing.
	Registerer prometheus.Registerer

	// Tuning; zero values take the defaults in brackets.
	StartTimeout time.Duration // start, handshake, Configure and Describe [10s]
	RestartMin   time.Duration // first restart delay, doubled up to RestartMax [100ms]
	RestartMax   time.Duration // [30s]
	MaxFailures  int           // consecutive failed calls that open the circuit [5]
	Cooldown     time.Duration // how long an open circuit fails calls fast [30s]
}

// Member is one stage of a process group: a built-in kind the group's
// executable serves, under the stage's name, with its config.
type Member struct {
	Name   string
	Kind   string
	Config []byte // as Spec.Config
}

// FileBody is the optional interface of a stages.Body backed by a file, as
// the engine's spooled bodies are. A plugin is then handed the file's path
// and byte range and reads the body itself, so a large message is not
// copied once per stage. Other bodies travel inline when small and in
// chunks otherwise.
type FileBody interface {
	File() (path string, offset int64) // the body is Size() bytes from offset
}

// Errors of calls refused without reaching the plugin.
var (
	ErrDown        = errors.New("plugin process is down; restarting")
	ErrCircuitOpen = errors.New("circuit open after repeated failures")
	ErrClosed      = errors.New("plugin closed")

	// errLost is a call whose connection to the process broke.
	errLost = errors.New("plugin process lost")
)

// ConfigError is a config the plugin refused at Configure.
type ConfigError struct {
	Stage   string
	Key     string // the config key the plugin named, "" if none
	Message string // the plugin's text, about Key
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("stage %q: config: %s", e.Stage, e.Message)
	}
	return fmt.Sprintf("stage %q: config: %s: %s", e.Stage, e.Key, e.Message)
}

// Plugin is a running stage plugin: a stage served by a plugin process of
// its own, or by its group's. It is safe for concurrent use: calls share
// the one process.
type Plugin struct {
	name     string
	kind     string // in a group, the kind the process is asked to serve
	config   []byte
	info     stages.Info // from Describe at Start; fixed for the Plugin's life
	restarts prometheus.Counter
	p        *process

	// Guarded by p.mu.
	failures  int // consecutive failed calls; a crash counts once
	openUntil time.Time
	probing   bool // a half-open probe is in flight
	closed    bool
}

// State is where a plugin stands, for health reports.
type State struct {
	Up          bool      // a process is running and takes calls
	PID         int       // its process ID; 0 while down or if not ours
	CircuitOpen bool      // calls fail fast until OpenUntil
	OpenUntil   time.Time // then one probe call goes through
	Failures    int       // consecutive failed calls
}

// State reports whether the plugin takes calls now.
func (p *Plugin) State() State {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	cur := p.p.cur
	st := State{Up: cur != nil && !cur.gone && p.p.life.Err() == nil && !p.closed, Failures: p.failures}
	if st.Up {
		st.PID = cur.pid
	}
	if p.failures >= p.p.spec.MaxFailures {
		st.CircuitOpen, st.OpenUntil = true, p.openUntil
	}
	return st
}

var _ stages.Stage = (*Plugin)(nil)

// Start starts the plugin process, configures it and asks what it is. A
// config the plugin refuses is a *ConfigError. The process keeps running
// until Close.
func Start(ctx context.Context, spec Spec) (*Plugin, error) {
	if len(spec.Cmd) == 0 || spec.Cmd[0] == "" {
		return nil, fmt.Errorf("stage %q: no plugin executable", spec.Name)
	}
	ps, err := start(ctx, spec, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// StartGroup starts one process for the stages of a process group:
// spec.Cmd serves every member's kind (`mailgate plugin KIND...`), and
// spec.Name names the group; spec.Config is not used. It returns the
// members' Plugins in order. They share the process: its crash fails the
// calls in flight of every member, each of which counts it as a failure,
// and its restart brings them all back. The process stops when every
// member is closed. A config a member refuses is a *ConfigError naming
// that member.
func StartGroup(ctx context.Context, spec Spec, members []Member) ([]*Plugin, error) {
	if len(spec.Cmd) == 0 || spec.Cmd[0] == "" {
		return nil, fmt.Errorf("process group %q: no plugin executable", spec.Name)
	}
	if len(members) == 0 {
		return nil, fmt.Errorf("process group %q: no stages", spec.Name)
	}
	return start(ctx, spec, members, nil, nil)
}

// Attach is Start for a plugin already serving in go-plugin's test mode in
// this process (see plugins/sdk/sdktest): there is no process to pin,
// restart or kill. data, if not nil, is the host's end of the data path
// whose other end the plugin serves (see plugins/proto's Frame); Attach
// owns it from then on.
func Attach(ctx context.Context, spec Spec, rc *plugin.ReattachConfig, data net.Conn) (*Plugin, error) {
	ps, err := start(ctx, spec, nil, rc, data)
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// start starts the process of spec: a group's when members is not empty,
// else one stage's, named spec.Name.
func start(ctx context.Context, spec Spec, members []Member, rc *plugin.ReattachConfig, data net.Conn) ([]*Plugin, error) {
	pr, err := newProcess(spec, members, rc)
	if err != nil {
		if data != nil {
			data.Close()
		}
		return nil, err
	}
	pr.attachData = data
	started := make(chan error, 1)
	pr.wg.Add(1)
	go pr.supervise(ctx, started)
	select {
	case err = <-started:
	case <-ctx.Done():
		err = fmt.Errorf("%s: start plugin: %w", pr.what(), ctx.Err())
	}
	if err != nil {
		pr.close()
		return nil, err
	}
	return pr.members, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Name returns the stage's instance name.
func (p *Plugin) Name() string { return p.name }

// Info returns what the plugin said of itself in Describe.
func (p *Plugin) Info() stages.Info { return p.info }

// Close stops the plugin and waits until its process is gone: at once
// for a plugin of its own, once every member is closed for a group's.
func (p *Plugin) Close() error {
	p.p.mu.Lock()
	last := !p.closed
	p.closed = true
	for _, m := range p.p.members {
		last = last && m.closed
	}
	p.p.mu.Unlock()
	if last {
		p.p.close()
	}
	return nil
}

// ReturnsByDeadline marks Plugin as a stage whose Run returns by the time
// its context ends, whatever the plugin process does: the pipeline need
// not run it in a goroutine of its own to be able to abandon it.
func (*Plugin) ReturnsByDeadline() {}

// Run asks the plugin for a verdict. It returns an error, at the latest
// when ctx ends, if the plugin is down, slow, crashed or answers garbage.
func (p *Plugin) Run(ctx context.Context, phase stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	pr, probe, err := p.admit()
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("stage %q: %w", p.name, err)
	}
	v, err := p.call(ctx, pr, phase, tx)
	p.record(pr, probe, ctx, err)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("stage %q: %w", p.name, err)
	}
	return v, nil
}

// admit lets a call through to the current process unless the plugin is
// closed, down, or its circuit is open. Once the cool-down is over, one
// call at a time goes through as a probe.
func (p *Plugin) admit() (pr *proc, probe bool, err error) {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	return p.admitLocked()
}

func (p *Plugin) admitLocked() (pr *proc, probe bool, err error) {
	switch {
	case p.p.life.Err() != nil || p.closed:
		return nil, false, ErrClosed
	case p.failures >= p.p.spec.MaxFailures:
		if p.probing || time.Now().Before(p.openUntil) {
			return nil, false, ErrCircuitOpen
		}
		probe = true
	}
	cur := p.p.cur
	if cur == nil || cur.gone {
		return nil, false, ErrDown
	}
	p.probing = probe
	return cur, probe, nil
}

// record counts a call's outcome for the circuit. A caller that gave up
// (ctx canceled, not timed out) says nothing about the plugin, nor does a
// call to a process already known to be gone: its crash was counted once,
// and a process the host replaced was not the plugin's fault.
func (p *Plugin) record(pr *proc, probe bool, ctx context.Context, err error) {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	if probe {
		p.probing = false
	}
	switch {
	case err == nil:
		p.failures = 0
		return
	case errors.Is(ctx.Err(), context.Canceled), pr.gone:
		return
	case errors.Is(err, errLost):
		// The process died under the call. Replace it now rather than
		// at the supervisor's next look.
		p.p.crashed(pr)
		p.p.replace(pr)
		return
	}
	p.failures++
	if p.failures < p.p.spec.MaxFailures && !probe {
		return
	}
	p.openCircuit(err)
	// A plugin that keeps failing may be wedged rather than dead: a fresh
	// process is cheap and the cool-down hides the restart. It is not a
	// crash, so the circuit stays open for its cool-down.
	p.p.replace(pr)
}

// unprobe ends a call admitted as a probe that was not made (a batch
// stopped before its step): it says nothing of the plugin, so the circuit
// stays as it was and the next call may probe.
func (p *Plugin) unprobe(probe bool) {
	if !probe {
		return
	}
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	p.probing = false
}

func (p *Plugin) openCircuit(err error) {
	p.openUntil = time.Now().Add(p.p.spec.Cooldown)
	p.p.log.Warn("plugin circuit open", "stage", p.name, "failures", p.failures, "cooldown", p.p.spec.Cooldown, "err", err)
}

func (p *Plugin) call(ctx context.Context, pr *proc, phase stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	req, err := request(phase, tx, p.info.Needs)
	if err != nil {
		return stages.Verdict{}, err
	}
	if p.kind != "" {
		req.Stage = p.name
	}
	var resp *proto.RunResponse
	_, streamed := req.GetBody().GetSource().(*proto.Body_Streamed)
	switch {
	case streamed:
		resp, err = runStream(ctx, pr.filter, req, tx.Body)
	case pr.data != nil:
		resp, err = pr.data.run(ctx, req)
		if errors.Is(err, errLost) {
			return stages.Verdict{}, fmt.Errorf("run: %w", err)
		}
	default:
		resp, err = pr.filter.Run(ctx, req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return stages.Verdict{}, fmt.Errorf("run: %w", ctx.Err())
		}
		return stages.Verdict{}, runError(err)
	}
	v, err := toVerdict(resp.GetVerdict(), p.info.Edits)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("plugin answered garbage: %w", err)
	}
	return v, nil
}

// runError is the error of a Run the plugin failed (a gRPC status, as
// the Run RPC or the data path reports it).
func runError(err error) error {
	switch s, _ := status.FromError(err); s.Code() {
	case codes.Unavailable:
		// The connection broke or was refused: on a local socket, the
		// process is gone.
		return fmt.Errorf("run: %w: %s", errLost, s.Message())
	case codes.Unknown:
		return fmt.Errorf("plugin: %s", s.Message()) // the filter's own error
	case codes.DeadlineExceeded:
		// The plugin's side enforces the deadline it was sent and may
		// give up a moment before ctx itself ends.
		return fmt.Errorf("run: %w", context.DeadlineExceeded)
	}
	return fmt.Errorf("run: %w", err)
}

// request builds a RunRequest with no more of the transaction than
// needs, what the plugin declared it needs. A body need implies the
// header: scanners want the whole message.
func request(phase stages.Phase, tx *stages.Transaction, needs stages.Needs) (*proto.RunRequest, error) {
	t := &proto.Transaction{
		QueueId: tx.QueueID,
		Client: &proto.Client{
			Addr:     addrString(tx.Client.Addr),
			Port:     uint32(tx.Client.Port),
			Name:     tx.Client.Name,
			Helo:     []byte(tx.Client.Helo),
			Tls:      tx.Client.TLS,
			AuthUser: []byte(tx.Client.AuthUser),
			Trusted:  tx.Client.Trusted,
		},
		From:  []byte(tx.From),
		Rcpts: proto.FromStrings(tx.Rcpts),
	}
	if needs&(stages.NeedHeader|stages.NeedBody) != 0 {
		for _, f := range tx.Header {
			hf := &proto.HeaderField{Name: []byte(f.Name), Value: []byte(f.Value)}
			// Raw is Name + ":" + Value with at most one space between;
			// only a field written otherwise needs its bytes sent.
			if raw := f.Raw(); len(raw) != len(f.Name)+2+len(f.Value) {
				hf.Raw = []byte(raw)
			}
			t.Header = append(t.Header, hf)
		}
	}
	if needs&stages.NeedResults != 0 {
		for _, r := range tx.Results {
			t.Results = append(t.Results, proto.FromResult(r))
		}
	}
	req := &proto.RunRequest{Phase: proto.FromPhase(phase), Transaction: t}
	if needs&stages.NeedBody == 0 || tx.Body == nil {
		return req, nil
	}
	size := tx.Body.Size()
	fb, isFile := tx.Body.(FileBody)
	switch {
	case isFile:
		// By reference whatever its size: the plugin reads the spooled
		// file as the host would have, and no copy crosses the socket.
		path, offset := fb.File()
		req.Body = &proto.Body{Source: &proto.Body_File{File: &proto.FileRef{Path: path, Offset: offset, Length: size}}}
	case size <= proto.MaxInline:
		b, err := readBody(tx.Body, size)
		if err != nil {
			return nil, err
		}
		req.Body = &proto.Body{Source: &proto.Body_Inline{Inline: b}}
	default:
		req.Body = &proto.Body{Source: &proto.Body_Streamed{Streamed: size}}
	}
	return req, nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func readBody(body stages.Body, size int64) ([]byte, error) {
	rc, err := body.Open()
	if err != nil {
		return nil, fmt.Errorf("open body: %w", err)
	}
	defer rc.Close()
	b := make([]byte, size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return b, nil
}

// runStream sends the body in chunks after the request. If the plugin
// answers before it has read everything, Send reports io.EOF and the
// answer (or its error) comes from CloseAndRecv.
func runStream(ctx context.Context, c proto.FilterClient, req *proto.RunRequest, body stages.Body) (*proto.RunResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we stop early
	stream, err := c.RunStream(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&proto.RunStreamRequest{Part: &proto.RunStreamRequest_Request{Request: req}}); err != nil && err != io.EOF {
		return nil, err
	}
	rc, err := body.Open()
	if err != nil {
		return nil, fmt.Errorf("open body: %w", err)
	}
	defer rc.Close()
	for {
		// A fresh buffer per chunk: gRPC may still hold the previous
		// message after Send returns.
		chunk := make([]byte, proto.ChunkSize)
		n, rerr := io.ReadFull(rc, chunk)
		if n > 0 {
			err := stream.Send(&proto.RunStreamRequest{Part: &proto.RunStreamRequest_Chunk{Chunk: chunk[:n]}})
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read body: %w", rerr)
		}
	}
	return stream.CloseAndRecv()
}
