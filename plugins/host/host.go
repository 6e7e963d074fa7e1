// Package host runs filter plugins for the engine. Start launches a stage's
// plugin executable through hashicorp/go-plugin, configures it over the
// gRPC contract of plugins/proto and returns a *Plugin, a stages.Stage that
// forwards every Run to that one process.
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
// restart backoff is what slows down a plugin that keeps crashing.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// Spec says how to run one stage instance's plugin.
type Spec struct {
	Name string // instance name: logs, metrics and errors use it
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

// Plugin is a running stage plugin. It is safe for concurrent use: calls
// share the one process.
type Plugin struct {
	spec     Spec
	reattach *plugin.ReattachConfig // Attach: the process is not ours
	log      *slog.Logger
	hclog    *hclogAdapter
	stdout   *lineLogger
	stderr   *lineLogger
	restarts prometheus.Counter
	info     stages.Info // from Describe at Start; fixed for the Plugin's life

	life context.Context // ends at Close
	stop context.CancelFunc
	kick chan *proc // asks the supervisor to replace this process
	wg   sync.WaitGroup

	mu        sync.Mutex
	cur       *proc // nil while down
	failures  int   // consecutive failed calls; a crash counts once
	openUntil time.Time
	probing   bool // a half-open probe is in flight
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
	p.mu.Lock()
	defer p.mu.Unlock()
	st := State{Up: p.cur != nil && !p.cur.gone && p.life.Err() == nil, Failures: p.failures}
	if st.Up {
		st.PID = p.cur.pid
	}
	if p.failures >= p.spec.MaxFailures {
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
	return start(ctx, spec, nil)
}

// Attach is Start for a plugin already serving in go-plugin's test mode in
// this process (see plugins/sdk/sdktest): there is no process to pin,
// restart or kill.
func Attach(ctx context.Context, spec Spec, rc *plugin.ReattachConfig) (*Plugin, error) {
	return start(ctx, spec, rc)
}

func start(ctx context.Context, spec Spec, rc *plugin.ReattachConfig) (*Plugin, error) {
	p, err := newPlugin(spec, rc)
	if err != nil {
		return nil, err
	}
	started := make(chan error, 1)
	p.wg.Add(1)
	go p.supervise(ctx, started)
	select {
	case err = <-started:
	case <-ctx.Done():
		err = fmt.Errorf("stage %q: start plugin: %w", spec.Name, ctx.Err())
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func newPlugin(spec Spec, rc *plugin.ReattachConfig) (*Plugin, error) {
	setDefault(&spec.StartTimeout, 10*time.Second)
	setDefault(&spec.RestartMin, 100*time.Millisecond)
	setDefault(&spec.RestartMax, 30*time.Second)
	setDefault(&spec.Cooldown, 30*time.Second)
	if spec.MaxFailures <= 0 {
		spec.MaxFailures = 5
	}
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	restarts, err := restartCounter(spec.Registerer, spec.Name)
	if err != nil {
		return nil, fmt.Errorf("stage %q: %w", spec.Name, err)
	}
	log := spec.Logger.With("stage", spec.Name)
	life, stop := context.WithCancel(context.Background())
	return &Plugin{
		spec:     spec,
		reattach: rc,
		log:      log,
		hclog:    &hclogAdapter{log: log},
		stdout:   &lineLogger{log: log.With("stream", "stdout")},
		stderr:   &lineLogger{log: log.With("stream", "stderr")},
		restarts: restarts,
		life:     life,
		stop:     stop,
		kick:     make(chan *proc, 1),
	}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Name returns the stage's instance name.
func (p *Plugin) Name() string { return p.spec.Name }

// Info returns what the plugin said of itself in Describe.
func (p *Plugin) Info() stages.Info { return p.info }

// Close stops the plugin process and waits until it is gone.
func (p *Plugin) Close() error {
	p.stop()
	p.wg.Wait()
	return nil
}

// Run asks the plugin for a verdict. It returns an error, at the latest
// when ctx ends, if the plugin is down, slow, crashed or answers garbage.
func (p *Plugin) Run(ctx context.Context, phase stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	pr, probe, err := p.admit()
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("stage %q: %w", p.spec.Name, err)
	}
	v, err := p.call(ctx, pr, phase, tx)
	p.record(pr, probe, ctx, err)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("stage %q: %w", p.spec.Name, err)
	}
	return v, nil
}

// admit lets a call through to the current process unless the plugin is
// closed, down, or its circuit is open. Once the cool-down is over, one
// call at a time goes through as a probe.
func (p *Plugin) admit() (pr *proc, probe bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.life.Err() != nil:
		return nil, false, ErrClosed
	case p.failures >= p.spec.MaxFailures:
		if p.probing || time.Now().Before(p.openUntil) {
			return nil, false, ErrCircuitOpen
		}
		probe = true
	}
	if p.cur == nil || p.cur.gone {
		return nil, false, ErrDown
	}
	p.probing = probe
	return p.cur, probe, nil
}

// record counts a call's outcome for the circuit. A caller that gave up
// (ctx canceled, not timed out) says nothing about the plugin, nor does a
// call to a process already known to be gone: its crash was counted once,
// and a process the host replaced was not the plugin's fault.
func (p *Plugin) record(pr *proc, probe bool, ctx context.Context, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
		p.crashed(pr)
		p.replace(pr)
		return
	}
	p.failures++
	if p.failures < p.spec.MaxFailures && !probe {
		return
	}
	p.openUntil = time.Now().Add(p.spec.Cooldown)
	p.openCircuit(err)
	// A plugin that keeps failing may be wedged rather than dead: a fresh
	// process is cheap and the cool-down hides the restart. It is not a
	// crash, so the circuit stays open for its cool-down.
	p.replace(pr)
}

// replace asks the supervisor to replace pr now. The supervisor also
// finds a gone process on its own (see wait), so a kick lost to a full
// channel only delays the restart.
func (p *Plugin) replace(pr *proc) {
	if p.reattach != nil {
		return
	}
	select {
	case p.kick <- pr:
	default:
	}
}

func (p *Plugin) openCircuit(err error) {
	p.openUntil = time.Now().Add(p.spec.Cooldown)
	p.log.Warn("plugin circuit open", "failures", p.failures, "cooldown", p.spec.Cooldown, "err", err)
}

// crashed marks pr as gone and counts its crash as one failure, the first
// time it is seen: by a call that lost its connection or by the
// supervisor finding the process exited. Callers hold mu.
func (p *Plugin) crashed(pr *proc) {
	if pr.gone {
		return
	}
	pr.gone, pr.crashed = true, true
	p.failures++
	if p.failures == p.spec.MaxFailures {
		p.openCircuit(errors.New("plugin process crashed"))
	}
}

func (p *Plugin) call(ctx context.Context, pr *proc, phase stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	req, err := p.request(phase, tx)
	if err != nil {
		return stages.Verdict{}, err
	}
	var resp *proto.RunResponse
	if _, streamed := req.GetBody().GetSource().(*proto.Body_Streamed); streamed {
		resp, err = runStream(ctx, pr.filter, req, tx.Body)
	} else {
		resp, err = pr.filter.Run(ctx, req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return stages.Verdict{}, fmt.Errorf("run: %w", ctx.Err())
		}
		switch s, _ := status.FromError(err); s.Code() {
		case codes.Unavailable:
			// The connection broke or was refused: on a local socket, the
			// process is gone.
			return stages.Verdict{}, fmt.Errorf("run: %w: %s", errLost, s.Message())
		case codes.Unknown:
			return stages.Verdict{}, fmt.Errorf("plugin: %s", s.Message()) // the filter's own error
		case codes.DeadlineExceeded:
			// The plugin's side enforces the deadline it was sent and may
			// give up a moment before ctx itself ends.
			return stages.Verdict{}, fmt.Errorf("run: %w", context.DeadlineExceeded)
		}
		return stages.Verdict{}, fmt.Errorf("run: %w", err)
	}
	v, err := toVerdict(resp.GetVerdict(), p.info.Edits)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("plugin answered garbage: %w", err)
	}
	return v, nil
}

// request builds a RunRequest with no more of the transaction than the
// plugin declared it needs. A body need implies the header: scanners want
// the whole message.
func (p *Plugin) request(phase stages.Phase, tx *stages.Transaction) (*proto.RunRequest, error) {
	needs := p.info.Needs
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
			t.Results = append(t.Results, &proto.Result{
				Stage: r.Stage, Kind: r.Kind, Action: proto.FromAction(r.Action), Score: r.Score,
				Result: []byte(r.Result), Reason: []byte(r.Reason), Errored: r.Errored,
			})
		}
	}
	req := &proto.RunRequest{Phase: proto.FromPhase(phase), Transaction: t}
	if needs&stages.NeedBody == 0 || tx.Body == nil {
		return req, nil
	}
	size := tx.Body.Size()
	fb, isFile := tx.Body.(FileBody)
	switch {
	case size <= proto.MaxInline:
		b, err := readBody(tx.Body, size)
		if err != nil {
			return nil, err
		}
		req.Body = &proto.Body{Source: &proto.Body_Inline{Inline: b}}
	case isFile:
		path, offset := fb.File()
		req.Body = &proto.Body{Source: &proto.Body_File{File: &proto.FileRef{Path: path, Offset: offset, Length: size}}}
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
