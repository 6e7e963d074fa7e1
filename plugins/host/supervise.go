package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/mailgate/mailgate/plugins/internal/server"
	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// exitPoll is how often the supervisor looks for an exited process;
// go-plugin reports exits only through Client.Exited.
const exitPoll = 100 * time.Millisecond

// proc is one started plugin process.
type proc struct {
	client  *plugin.Client
	rpc     plugin.ClientProtocol
	filter  proto.FilterClient
	info    stages.Info
	data    *dataClient // the data path, nil if the plugin serves none
	pid     int
	sock    string // the plugin's Unix socket, "" for TCP
	started time.Time

	// Guarded by Plugin.mu.
	gone    bool // exited, crashed or being replaced: calls fail fast with ErrDown
	crashed bool // it died rather than being replaced by the host
}

// supervise owns the plugin's processes: it starts the first one (and
// reports on started), then restarts every process that exits, with
// exponential backoff, until Close.
func (p *Plugin) supervise(ctx context.Context, started chan<- error) {
	defer p.wg.Done()
	// Pdeathsig (see pdeathsig_linux.go) is delivered when the OS thread
	// that forked the child ends, not when the gateway does. Every start
	// happens here, on a goroutine locked to its thread for the plugin's
	// life, so no other goroutine can end that thread under the child.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	ctx, cancel := context.WithTimeout(ctx, p.spec.StartTimeout)
	pr, err := p.launch(ctx, nil)
	cancel()
	if err == nil {
		p.info = pr.info
		p.setCurrent(pr)
	}
	started <- err
	if err != nil {
		return
	}
	backoff := p.spec.RestartMin
	for {
		p.log.Info("plugin running", "pid", pr.pid, "kind", pr.info.Kind, "version", pr.info.Version)
		exited := p.wait(pr)
		p.mu.Lock()
		if exited {
			p.crashed(pr)
		}
		pr.gone = true // replaced at the circuit's request, or closing
		crashed := pr.crashed
		p.cur = nil
		p.mu.Unlock()
		pr.close(p.reattach != nil)
		if p.life.Err() != nil || p.reattach != nil {
			return
		}
		if time.Since(pr.started) > p.spec.RestartMax {
			backoff = p.spec.RestartMin // it ran well for a while: not a crash loop
		}
		for pr = nil; pr == nil; {
			p.log.Warn("plugin process gone; restarting", "in", backoff)
			select {
			case <-p.life.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, p.spec.RestartMax)
			p.restarts.Inc()
			ctx, cancel := context.WithTimeout(p.life, p.spec.StartTimeout)
			pr, err = p.launch(ctx, &p.info)
			cancel()
			if err != nil {
				p.log.Error("restart plugin", "err", err)
			}
		}
		p.mu.Lock()
		p.cur = pr
		if crashed {
			// Configured and described: the new process is healthy, and
			// the failures were the old one's.
			p.failures, p.openUntil = 0, time.Time{}
		}
		p.mu.Unlock()
	}
}

func (p *Plugin) setCurrent(pr *proc) {
	p.mu.Lock()
	p.cur = pr
	p.mu.Unlock()
}

// wait returns when pr has exited (true), or should be replaced, or the
// plugin closes (false).
func (p *Plugin) wait(pr *proc) bool {
	tick := time.NewTicker(exitPoll)
	defer tick.Stop()
	for {
		select {
		case <-p.life.Done():
			return false
		case k := <-p.kick:
			if k == pr {
				return false
			}
		case <-tick.C:
			if pr.client.Exited() {
				return true
			}
			p.mu.Lock()
			gone := pr.gone
			p.mu.Unlock()
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

// launch starts a process, configures it and checks its description. want,
// when set, is the description of the first process: a replacement must
// not change what the pipeline was built around.
func (p *Plugin) launch(ctx context.Context, want *stages.Info) (*proc, error) {
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  server.Handshake(),
		Plugins:          plugin.PluginSet{proto.PluginName: &server.GRPCPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           p.hclog,
		SyncStdout:       p.stdout,
		SyncStderr:       p.stderr,
		StartTimeout:     p.spec.StartTimeout,
	}
	var data net.Conn // the host's end of the data path
	if p.reattach != nil {
		cfg.Reattach = p.reattach
		data, p.attachData = p.attachData, nil // one process only
	} else {
		if p.spec.SHA256 != "" {
			if err := checkSHA256(p.spec.Cmd[0], p.spec.SHA256); err != nil {
				return nil, fmt.Errorf("stage %q: %w", p.spec.Name, err)
			}
		}
		cfg.Cmd = exec.Command(p.spec.Cmd[0], p.spec.Cmd[1:]...)
		setPdeathsig(cfg.Cmd)
		var child *os.File
		var err error
		if data, child, err = newSocketPair(); err != nil {
			return nil, fmt.Errorf("stage %q: %w", p.spec.Name, err)
		}
		// The child's end, fd 3 there; ours is closed once the child
		// has it (at the latest when launch returns).
		defer child.Close()
		cfg.Cmd.ExtraFiles = []*os.File{child}
		cfg.Cmd.Env = append(cfg.Cmd.Env, dataEnv())
	}
	client := plugin.NewClient(cfg)
	pr, err := p.handshake(ctx, client, want, data)
	if err != nil {
		if data != nil {
			data.Close()
		}
		client.Kill()
		return nil, err
	}
	return pr, nil
}

func (p *Plugin) handshake(ctx context.Context, client *plugin.Client, want *stages.Info, data net.Conn) (*proc, error) {
	name := p.spec.Name
	rpc, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("stage %q: start plugin: %w", name, err)
	}
	raw, err := rpc.Dispense(proto.PluginName)
	if err != nil {
		return nil, fmt.Errorf("stage %q: %w", name, err)
	}
	filter := raw.(proto.FilterClient)
	config := p.spec.Config
	if len(config) == 0 {
		config = []byte("{}")
	}
	env := p.spec.Env
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
		Name: name,
	})
	if err != nil {
		return nil, fmt.Errorf("stage %q: configure plugin: %w", name, err)
	}
	if cr.GetError() != "" {
		return nil, &ConfigError{Stage: name, Key: cr.GetKey(), Message: cr.GetError()}
	}
	dr, err := filter.Describe(ctx, &proto.DescribeRequest{})
	if err != nil {
		return nil, fmt.Errorf("stage %q: describe plugin: %w", name, err)
	}
	info, err := toInfo(dr)
	if err != nil {
		return nil, fmt.Errorf("stage %q: plugin describes itself wrongly: %w", name, err)
	}
	if want != nil && !reflect.DeepEqual(info, *want) {
		return nil, fmt.Errorf("stage %q: plugin now describes itself as %+v, was %+v; restart the gateway to use it", name, info, *want)
	}
	pr := &proc{client: client, rpc: rpc, filter: filter, info: info, started: time.Now()}
	switch v := dr.GetDataPath(); {
	case data == nil || v == 0:
		// A plugin built before the data path: Run goes over gRPC.
		if data != nil {
			data.Close()
		}
	case v == proto.DataPathVersion:
		pr.data = newDataClient(data)
	default:
		return nil, fmt.Errorf("stage %q: plugin serves data path version %d; expect %d", name, v, proto.DataPathVersion)
	}
	if rc := client.ReattachConfig(); rc != nil {
		pr.pid = rc.Pid
		if rc.Addr != nil && rc.Addr.Network() == "unix" {
			pr.sock = rc.Addr.String()
		}
	}
	return pr, nil
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
