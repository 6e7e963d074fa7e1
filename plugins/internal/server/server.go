// Package server is the plugin side of the mailgate plugin protocol: it
// serves a stages.Factory as the gRPC Filter service of plugins/proto
// through hashicorp/go-plugin. plugins/sdk wraps it for plugin authors and
// plugins/sdk/sdktest runs it in-process for their tests.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// Serve serves factory until the host stops the plugin. test is nil in a
// real plugin process; sdktest sets it to serve in-process, and passes the
// plugin's end of a data path (see Frame in plugins/proto) in data. A real
// plugin process finds its end of the data path in its environment
// (proto.DataFDEnv) and serves it if the host handed one.
func Serve(factory stages.Factory, log *slog.Logger, test *plugin.ServeTestConfig, data net.Conn) {
	serve(&filterServer{factory: factory, log: log, filters: map[string]stages.Filter{}, workers: newWorkers()}, log, test, data)
}

// ServeGroup serves the stages of a process group in one process: each
// Configure names the kind (a key of kinds) and the stage, and Describe,
// Run and batches name the stage they are for (ConfigureRequest.kind in
// plugins/proto). The built-in kinds of mailgate are served this way
// (`mailgate plugin KIND...`).
func ServeGroup(kinds map[string]stages.Factory, log *slog.Logger, test *plugin.ServeTestConfig, data net.Conn) {
	serve(&filterServer{kinds: kinds, log: log, filters: map[string]stages.Filter{}, workers: newWorkers()}, log, test, data)
}

func serve(s *filterServer, log *slog.Logger, test *plugin.ServeTestConfig, data net.Conn) {
	version := uint32(proto.DataPathVersion) // an in-process test's host is this one
	if test == nil {
		var err error
		if data, err = openDataPath(); err != nil {
			// The host then calls Run over gRPC: slower, not broken.
			log.Error("no data path", "err", err)
		}
		version = hostDataVersion()
	}
	if data != nil {
		s.dataPath = version
		go func() {
			if err := s.serveData(data); err != nil {
				log.Error("data path", "err", err)
			}
		}()
		defer data.Close()
	}
	var hlog hclog.Logger // nil: go-plugin's own, JSON on stderr for the host to parse
	if test != nil {
		// In-process, that JSON would only clutter the test's output.
		hlog = hclog.NewNullLogger()
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake(),
		Plugins:         plugin.PluginSet{proto.PluginName: &GRPCPlugin{Filter: s}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          hlog,
		Test:            test,
	})
	s.close()
}

// Handshake is the go-plugin handshake of plugins/proto.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  proto.ProtocolVersion,
		MagicCookieKey:   proto.MagicCookieKey,
		MagicCookieValue: proto.MagicCookieValue,
	}
}

// GRPCPlugin is the go-plugin Plugin of the Filter service. The plugin side
// sets Filter; the host side leaves it nil and gets a proto.FilterClient.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Filter proto.FilterServer
}

func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Filter == nil {
		return errors.New("no filter to serve")
	}
	proto.RegisterFilterServer(s, p.Filter)
	return nil
}

func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return proto.NewFilterClient(c), nil
}

// filterServer builds the filter at Configure and runs it for every Run,
// concurrently: a filter must be safe for concurrent use. A group's
// server (kinds set) builds one filter per stage.
type filterServer struct {
	proto.UnimplementedFilterServer
	factory stages.Factory            // the one stage's, for a plugin
	kinds   map[string]stages.Factory // by kind, for a process group
	log     *slog.Logger

	// dataPath is the version of the data path served, as Describe
	// says; 0 for none.
	dataPath uint32
	workers  *workers // run the calls of the data path and batch steps

	mu      sync.Mutex
	filters map[string]stages.Filter // by stage name; "" for a plugin's one
}

// configured returns the filter of stage, which a plugin of one stage
// ignores (a host sends it none).
func (s *filterServer) configured(stage string) (stages.Filter, error) {
	if s.kinds == nil {
		stage = ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.filters[stage]
	if f == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "stage %q not configured", stage)
	}
	return f, nil
}

func (s *filterServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, f := range s.filters {
		if c, ok := f.(stages.Closer); ok {
			if err := c.Close(); err != nil {
				s.log.Error("close filter", "stage", name, "err", err)
			}
		}
		delete(s.filters, name)
	}
}

func (s *filterServer) Configure(_ context.Context, req *proto.ConfigureRequest) (*proto.ConfigureResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	factory, name := s.factory, ""
	if s.kinds != nil {
		name = req.GetName()
		if factory = s.kinds[req.GetKind()]; factory == nil {
			return nil, status.Errorf(codes.InvalidArgument, "kind %q is not served here", req.GetKind())
		}
	}
	if s.filters[name] != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "stage %q already configured", name)
	}
	env := stages.Env{
		Hostname:   req.GetEnv().GetHostname(),
		DNSServers: req.GetEnv().GetDnsServers(),
		DNSTimeout: time.Duration(req.GetEnv().GetDnsTimeoutNs()),
		DataDir:    req.GetEnv().GetDataDir(),
		Shared:     req.GetEnv().GetShared(),
	}
	if r := req.GetEnv().GetRedis(); r != nil {
		env.Redis = stages.Redis{URL: r.GetUrl(), Timeout: time.Duration(r.GetTimeoutNs()),
			ConnectTimeout: time.Duration(r.GetConnectTimeoutNs()), MaxConns: int(r.GetMaxConns())}
	}
	f, err := factory(env, stages.JSONConfig(req.GetConfig()))
	if err != nil {
		var ce *stages.ConfigError
		if errors.As(err, &ce) {
			return &proto.ConfigureResponse{Error: ce.Err.Error(), Key: ce.Key}, nil
		}
		return &proto.ConfigureResponse{Error: err.Error()}, nil
	}
	s.filters[name] = f
	return &proto.ConfigureResponse{}, nil
}

func (s *filterServer) Describe(_ context.Context, req *proto.DescribeRequest) (*proto.DescribeResponse, error) {
	f, err := s.configured(req.GetStage())
	if err != nil {
		return nil, err
	}
	info := f.Info()
	return &proto.DescribeResponse{
		Kind:            info.Kind,
		Version:         info.Version,
		Phases:          proto.FromPhases(info.Phases),
		Needs:           proto.FromNeeds(info.Needs),
		Edits:           info.Edits,
		Seals:           info.Seals,
		ProtocolVersion: proto.ProtocolVersion,
		Results:         info.Results,
		DataPath:        s.dataPath,
	}, nil
}

// hostDataVersion is the data path version to serve: the lower of the
// host's highest (proto.DataVersionEnv) and this package's, and 1 under a
// host that does not say (one from before version 2).
func hostDataVersion() uint32 {
	v, err := strconv.ParseUint(os.Getenv(proto.DataVersionEnv), 10, 32)
	os.Unsetenv(proto.DataVersionEnv)
	if err != nil || v < 1 {
		return 1
	}
	return uint32(min(v, proto.DataPathVersion))
}

func (s *filterServer) Run(ctx context.Context, req *proto.RunRequest) (*proto.RunResponse, error) {
	return s.runRequest(ctx, req)
}

// runRequest is a Run, from gRPC or the data path.
func (s *filterServer) runRequest(ctx context.Context, req *proto.RunRequest) (*proto.RunResponse, error) {
	body, err := bodyOf(req)
	if err != nil {
		return nil, err
	}
	return s.run(ctx, req, body)
}

// bodyOf is the body of a request that does not come by RunStream.
func bodyOf(req *proto.RunRequest) (stages.Body, error) {
	switch src := req.GetBody().GetSource().(type) {
	case nil:
		return nil, nil
	case *proto.Body_Inline:
		return stages.BytesBody(src.Inline), nil
	case *proto.Body_File:
		return fileBody{path: src.File.GetPath(), offset: src.File.GetOffset(), size: src.File.GetLength()}, nil
	default:
		return nil, status.Errorf(codes.InvalidArgument, "body %T must come by RunStream", src)
	}
}

func (s *filterServer) RunStream(stream proto.Filter_RunStreamServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	req := first.GetRequest()
	if req == nil {
		return status.Error(codes.InvalidArgument, "the first message of RunStream must be the request")
	}
	size := req.GetBody().GetStreamed()
	// The body is spilled to a temporary file rather than memory so a
	// plugin's memory stays bounded whatever the message size.
	f, err := os.CreateTemp("", "mailgate-body-*")
	if err != nil {
		return fmt.Errorf("spill body: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var n int64
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		chunk := m.GetChunk()
		if n += int64(len(chunk)); n > size {
			return status.Errorf(codes.InvalidArgument, "body longer than the %d bytes announced", size)
		}
		if _, err := f.Write(chunk); err != nil {
			return fmt.Errorf("spill body: %w", err)
		}
	}
	if n != size {
		return status.Errorf(codes.InvalidArgument, "body of %d bytes, %d announced", n, size)
	}
	resp, err := s.run(stream.Context(), req, sectionBody{io.NewSectionReader(f, 0, size)})
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// run calls the filter of the request's stage.
func (s *filterServer) run(ctx context.Context, req *proto.RunRequest, body stages.Body) (resp *proto.RunResponse, err error) {
	f, err := s.configured(req.GetStage())
	if err != nil {
		return nil, err
	}
	phase, err := proto.ToPhase(req.GetPhase())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	tx, err := transaction(req.GetTransaction())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	tx.Body = body
	resp, _, err = s.runFilter(ctx, f, phase, tx)
	return resp, err
}

// runFilter calls f and returns its verdict as the host reads it, and
// the verdict's edits (for a batch to apply before its next step). A
// panic in the filter becomes this call's error rather than the end of
// the process and of every other call in flight.
func (s *filterServer) runFilter(ctx context.Context, f stages.Filter, phase stages.Phase, tx *stages.Transaction) (resp *proto.RunResponse, edits []stages.Edit, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("filter panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, edits, err = nil, nil, status.Errorf(codes.Internal, "filter panicked: %v", r)
		}
	}()
	v, err := f.Run(ctx, phase, tx)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		// As gRPC reports a handler past its deadline: the host tells a
		// timeout from the filter's own error, even when this timer
		// fires before its own.
		return nil, nil, status.Error(codes.DeadlineExceeded, err.Error())
	case err != nil:
		return nil, nil, status.Error(codes.Unknown, err.Error())
	}
	return &proto.RunResponse{Verdict: verdict(v)}, v.Edits, nil
}

func transaction(t *proto.Transaction) (*stages.Transaction, error) {
	c := t.GetClient()
	tx := &stages.Transaction{
		QueueID: t.GetQueueId(),
		Client: stages.Client{
			Port:     uint16(c.GetPort()),
			Name:     c.GetName(),
			Helo:     string(c.GetHelo()),
			TLS:      c.GetTls(),
			AuthUser: string(c.GetAuthUser()),
			Trusted:  c.GetTrusted(),
		},
		From:  string(t.GetFrom()),
		Rcpts: proto.ToStrings(t.GetRcpts()),
	}
	if a := c.GetAddr(); a != "" {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("client address: %w", err)
		}
		tx.Client.Addr = addr
	}
	for _, f := range t.GetHeader() {
		if raw := f.GetRaw(); len(raw) > 0 {
			tx.Header = append(tx.Header, stages.ParseField(string(raw)))
			continue
		}
		tx.Header = append(tx.Header, stages.Field{Name: string(f.GetName()), Value: string(f.GetValue())})
	}
	for _, r := range t.GetResults() {
		res, err := proto.ToResult(r)
		if err != nil {
			return nil, fmt.Errorf("result of stage %q: %w", r.GetStage(), err)
		}
		tx.Results = append(tx.Results, res)
	}
	return tx, nil
}

func verdict(v stages.Verdict) *proto.Verdict {
	out := &proto.Verdict{
		Action: proto.FromAction(v.Action),
		Score:  v.Score,
		Result: []byte(v.Result),
		Reason: []byte(v.Reason),
	}
	if r := v.Reply; r != nil {
		out.Reply = &proto.Reply{Code: int32(r.Code), Text: r.Text}
		if r.Enhanced != [3]int{} {
			out.Reply.Enhanced = []int32{int32(r.Enhanced[0]), int32(r.Enhanced[1]), int32(r.Enhanced[2])}
		}
	}
	for _, e := range v.Edits {
		out.Edits = append(out.Edits, &proto.Edit{
			Op: proto.FromEditOp(e.Op), Name: []byte(e.Name), Value: []byte(e.Value), Index: int64(e.Index), Body: e.Body,
		})
	}
	return out
}

// fileBody is a body the host left in a file: the spooled message.
type fileBody struct {
	path         string
	offset, size int64
}

func (b fileBody) Size() int64 { return b.size }

func (b fileBody) Open() (io.ReadCloser, error) {
	return openRange(b.path, b.offset, b.size)
}

// sectionBody is a body spilled by RunStream; readers share the file
// through ReadAt, which is safe for concurrent use.
type sectionBody struct{ r *io.SectionReader }

func (b sectionBody) Size() int64 { return b.r.Size() }

func (b sectionBody) Open() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(b.r, 0, b.r.Size())), nil
}
