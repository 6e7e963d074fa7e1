package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/mailgate/mailgate/plugins/internal/server"
	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// exitPoll is how often the supervisor looks for an exited process;
// go-plugin reports exits only through Client.Exited.
const exitPoll = 100 * time.Millisecond

// process is one plugin process's life, for the stage or the stages (a
// process group) it serves: it starts the executable, restarts it when it
// exits, and stops it at close.
type process struct {
	spec       Spec
	members    []*Plugin              // the stages served, in config order
	group      bool                   // Configure names each member's kind (StartGroup)
	reattach   *plugin.ReattachConfig // Attach: the process is not ours
	attachData net.Conn               // Attach: the host's end of its data path, until used
	log        *slog.Logger
	hclog      *hclogAdapter
	stdout     *lineLogger
	stderr     *lineLogger

	life context.Context // ends at close
	stop context.CancelFunc
	kick chan *proc // asks the supervisor to replace this process
	wg   sync.WaitGroup

	mu  sync.Mutex // guards cur and the members' circuits
	cur *proc      // nil while down
}

// proc is one started plugin process.
type proc struct {
	client  *plugin.Client
	rpc     plugin.ClientProtocol
	filter  proto.FilterClient
	infos   []stages.Info // the members', in order
	data    *dataClient   // the data path, nil if the plugin serves none
	dataVer uint32        // the data path's version (proto.DataPathVersion), 0 without one
	pid     int
	sock    string // the plugin's Unix socket, "" for TCP
	started time.Time

	// Guarded by process.mu.
	gone    bool // exited, crashed or being replaced: calls fail fast with ErrDown
	crashed bool // it died rather than being replaced by the host
}

func newProcess(spec Spec, members []Member, rc *plugin.ReattachConfig) (*process, error) {
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
	log := spec.Logger.With("stage", spec.Name)
	group := len(members) > 0
	if group {
		// The process's own lines name the group; a member's name the
		// member.
		log = spec.Logger.With("process", spec.Name)
	} else {
		members = []Member{{Name: spec.Name, Config: spec.Config}}
	}
	life, stop := context.WithCancel(context.Background())
	pr := &process{
		spec:     spec,
		group:    group,
		reattach: rc,
		log:      log,
		hclog:    &hclogAdapter{log: log},
		stdout:   &lineLogger{log: log.With("stream", "stdout")},
		stderr:   &lineLogger{log: log.With("stream", "stderr")},
		life:     life,
		stop:     stop,
		kick:     make(chan *proc, 1),
	}
	for _, m := range members {
		restarts, err := restartCounter(spec.Registerer, m.Name)
		if err != nil {
			stop()
			return nil, fmt.Errorf("stage %q: %w", m.Name, err)
		}
		pr.members = append(pr.members, &Plugin{name: m.Name, kind: m.Kind, config: m.Config, restarts: restarts, p: pr})
	}
	return pr, nil
}

// what names the process in errors: its stage, or its group.
func (pr *process) what() string {
	if pr.group {
		return fmt.Sprintf("process group %q", pr.spec.Name)
	}
	return fmt.Sprintf("stage %q", pr.spec.Name)
}

// close stops the process and waits until it is gone.
func (pr *process) close() {
	pr.stop()
	pr.wg.Wait()
}

// replace asks the supervisor to replace cur now. The supervisor also
// finds a gone process on its own (see wait), so a kick lost to a full
// channel only delays the restart.
func (pr *process) replace(cur *proc) {
	if pr.reattach != nil {
		return
	}
	select {
	case pr.kick <- cur:
	default:
	}
}

// crashed marks cur as gone and counts its crash as one failure of each
// member, the first time it is seen: by a call that lost its connection
// or by the supervisor finding the process exited. Callers hold mu.
func (pr *process) crashed(cur *proc) {
	if cur.gone {
		return
	}
	cur.gone, cur.crashed = true, true
	for _, m := range pr.members {
		m.failures++
		if m.failures == pr.spec.MaxFailures {
			m.openCircuit(errors.New("plugin process crashed"))
		}
	}
}

// supervise owns the plugin's processes: it starts the first one (and
// reports on started), then restarts every process that exits, with
// exponential backoff, until close.
func (pr *process) supervise(ctx context.Context, started chan<- error) {
	defer pr.wg.Done()
	// Pdeathsig (see pdeathsig_linux.go) is delivered when the OS thread
	// that forked the child ends, not when the gateway does. Every start
	// happens here, on a goroutine locked to its thread for the plugin's
	// life, so no other goroutine can end that thread under the child.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	ctx, cancel := context.WithTimeout(ctx, pr.spec.StartTimeout)
	cur, err := pr.launch(ctx, false)
	cancel()
	if err == nil {
		for i, m := range pr.members {
			m.info = cur.infos[i]
		}
		pr.mu.Lock()
		pr.cur = cur
		pr.mu.Unlock()
	}
	started <- err
	if err != nil {
		return
	}
	backoff := pr.spec.RestartMin
	for {
		pr.log.Info("plugin running", "pid", cur.pid, "kind", pr.kinds(), "version", cur.infos[0].Version)
		exited := pr.wait(cur)
		pr.mu.Lock()
		if exited {
			pr.crashed(cur)
		}
		cur.gone = true // replaced at the circuit's request, or closing
		crashed := cur.crashed
		pr.cur = nil
		pr.mu.Unlock()
		cur.close(pr.reattach != nil)
		if pr.life.Err() != nil || pr.reattach != nil {
			return
		}
		if time.Since(cur.started) > pr.spec.RestartMax {
			backoff = pr.spec.RestartMin // it ran well for a while: not a crash loop
		}
		for cur = nil; cur == nil; {
			pr.log.Warn("plugin process gone; restarting", "in", backoff)
			select {
			case <-pr.life.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, pr.spec.RestartMax)
			for _, m := range pr.members {
				m.restarts.Inc()
			}
			ctx, cancel := context.WithTimeout(pr.life, pr.spec.StartTimeout)
			cur, err = pr.launch(ctx, true)
			cancel()
			if err != nil {
				pr.log.Error("restart plugin", "err", err)
			}
		}
		pr.mu.Lock()
		pr.cur = cur
		if crashed {
			// Configured and described: the new process is healthy, and
			// the failures were the old one's.
			for _, m := range pr.members {
				m.failures, m.openUntil = 0, time.Time{}
			}
		}
		pr.mu.Unlock()
	}
}

// kinds is what the process serves, for its log lines.
func (pr *process) kinds() string {
	var k []string
	for _, m := range pr.members {
		k = append(k, m.info.Kind)
	}
	return strings.Join(k, ",")
}

// wait returns when cur has exited (true), or should be replaced, or the
// process closes (false).
func (pr *process) wait(cur *proc) bool {
	tick := time.NewTicker(exitPoll)
	defer tick.Stop()
	for {
		select {
		case <-pr.life.Done():
			return false
		case k := <-pr.kick:
			if k == cur {
				return false
			}
		case <-tick.C:
			if cur.client.Exited() {
				return true
			}
			pr.mu.Lock()
			gone := cur.gone
			pr.mu.Unlock()
			if gone {
				return false
			}
		}
	}
}

// close ends the process: go-plugin asks it to shut down, waits two seconds
// at most, then kills it. An attached plugin is only disconnected.
func (pr *proc) close(attached bool) {
	if pr.data != nil {
		pr.data.close()
	}
	if attached {
		pr.rpc.Close()
	}
	pr.client.Kill()
	// A plugin that exits cleanly removes its socket; one that crashed or
	// was killed leaves it behind in the temp directory, once per restart.
	if pr.sock != "" {
		os.Remove(pr.sock)
	}
}

// launch starts a process, configures its stages and checks their
// descriptions. again is set for a replacement: it must describe the
// stages as the first process did, since the pipeline was built around
// that.
func (pr *process) launch(ctx context.Context, again bool) (*proc, error) {
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  server.Handshake(),
		Plugins:          plugin.PluginSet{proto.PluginName: &server.GRPCPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           pr.hclog,
		SyncStdout:       pr.stdout,
		SyncStderr:       pr.stderr,
		StartTimeout:     pr.spec.StartTimeout,
	}
	var data net.Conn // the host's end of the data path
	if pr.reattach != nil {
		cfg.Reattach = pr.reattach
		data, pr.attachData = pr.attachData, nil // one process only
	} else {
		if pr.spec.SHA256 != "" {
			if err := checkSHA256(pr.spec.Cmd[0], pr.spec.SHA256); err != nil {
				return nil, fmt.Errorf("%s: %w", pr.what(), err)
			}
		}
		cfg.Cmd = exec.Command(pr.spec.Cmd[0], pr.spec.Cmd[1:]...)
		setPdeathsig(cfg.Cmd)
		var child *os.File
		var err error
		if data, child, err = newSocketPair(); err != nil {
			return nil, fmt.Errorf("%s: %w", pr.what(), err)
		}
		// The child's end, fd 3 there; ours is closed once the child
		// has it (at the latest when launch returns).
		defer child.Close()
		cfg.Cmd.ExtraFiles = []*os.File{child}
		cfg.Cmd.Env = append(cfg.Cmd.Env, dataEnv()...)
	}
	client := plugin.NewClient(cfg)
	cur, err := pr.handshake(ctx, client, again, data)
	if err != nil {
		if data != nil {
			data.Close()
		}
		client.Kill()
		return nil, err
	}
	return cur, nil
}

func (pr *process) handshake(ctx context.Context, client *plugin.Client, again bool, data net.Conn) (*proc, error) {
	rpc, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("%s: start plugin: %w", pr.what(), err)
	}
	raw, err := rpc.Dispense(proto.PluginName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pr.what(), err)
	}
	filter := raw.(proto.FilterClient)
	cur := &proc{client: client, rpc: rpc, filter: filter, started: time.Now()}
	dataPath := uint32(0)
	for _, m := range pr.members {
		info, v, err := pr.configure(ctx, filter, m)
		if err != nil {
			return nil, err
		}
		if again && !reflect.DeepEqual(info, m.info) {
			return nil, fmt.Errorf("stage %q: plugin now describes itself as %+v, was %+v; restart the gateway to use it", m.name, info, m.info)
		}
		cur.infos, dataPath = append(cur.infos, info), v
	}
	switch {
	case data == nil || dataPath == 0:
		// A plugin built before the data path: Run goes over gRPC.
		if data != nil {
			data.Close()
		}
	case dataPath >= proto.DataPathOldest && dataPath <= proto.DataPathVersion:
		cur.data, cur.dataVer = newDataClient(data), dataPath
	default:
		return nil, fmt.Errorf("%s: plugin serves data path version %d; expect %d to %d", pr.what(), dataPath, proto.DataPathOldest, proto.DataPathVersion)
	}
	if rc := client.ReattachConfig(); rc != nil {
		cur.pid = rc.Pid
		if rc.Addr != nil && rc.Addr.Network() == "unix" {
			cur.sock = rc.Addr.String()
		}
	}
	return cur, nil
}

// configure configures stage m in the process and asks what it is; it
// returns the description and the data path version the process serves.
func (pr *process) configure(ctx context.Context, filter proto.FilterClient, m *Plugin) (stages.Info, uint32, error) {
	config := m.config
	if len(config) == 0 {
		config = []byte("{}")
	}
	env := pr.spec.Env
	cr, err := filter.Configure(ctx, &proto.ConfigureRequest{
		Config: config,
		Env: &proto.Env{
			Hostname:     env.Hostname,
			DnsServers:   env.DNSServers,
			DnsTimeoutNs: int64(env.DNSTimeout),
			DataDir:      env.DataDir,
			Redis:        redisEnv(env.Redis),
			Shared:       env.Shared,
		},
		Name: m.name,
		Kind: m.kind,
	})
	if err != nil {
		return stages.Info{}, 0, fmt.Errorf("stage %q: configure plugin: %w", m.name, err)
	}
	if cr.GetError() != "" {
		return stages.Info{}, 0, &ConfigError{Stage: m.name, Key: cr.GetKey(), Message: cr.GetError()}
	}
	req := &proto.DescribeRequest{}
	if pr.group {
		req.Stage = m.name
	}
	dr, err := filter.Describe(ctx, req)
	if err != nil {
		return stages.Info{}, 0, fmt.Errorf("stage %q: describe plugin: %w", m.name, err)
	}
	info, err := toInfo(dr)
	if err != nil {
		return stages.Info{}, 0, fmt.Errorf("stage %q: plugin describes itself wrongly: %w", m.name, err)
	}
	return info, dr.GetDataPath(), nil
}

func toInfo(d *proto.DescribeResponse) (stages.Info, error) {
	if v := d.GetProtocolVersion(); v != proto.ProtocolVersion {
		return stages.Info{}, fmt.Errorf("protocol version %d; expect %d", v, proto.ProtocolVersion)
	}
	phases, err := proto.ToPhases(d.GetPhases())
	if err != nil {
		return stages.Info{}, err
	}
	if phases == 0 {
		return stages.Info{}, fmt.Errorf("no phases")
	}
	needs, err := proto.ToNeeds(d.GetNeeds())
	if err != nil {
		return stages.Info{}, err
	}
	return stages.Info{
		Kind:    d.GetKind(),
		Version: d.GetVersion(),
		Phases:  phases,
		Needs:   needs | stages.NeedEnvelope,
		Edits:   d.GetEdits(),
		Seals:   d.GetSeals(),
		Results: d.GetResults(),
	}, nil
}

// checkSHA256 compares the executable with its pinned hash. It runs before
// every start, so a binary replaced under a running gateway is refused at
// the next restart.
func checkSHA256(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check sha256: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("check sha256 of %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return fmt.Errorf("executable %s has sha256 %s; the config pins %s", path, got, want)
	}
	return nil
}

// redisEnv is stages.Redis as the protocol carries it: absent on one node.
func redisEnv(r stages.Redis) *proto.Redis {
	if r.URL == "" {
		return nil
	}
	return &proto.Redis{Url: r.URL, TimeoutNs: int64(r.Timeout), ConnectTimeoutNs: int64(r.ConnectTimeout), MaxConns: int32(r.MaxConns)}
}
