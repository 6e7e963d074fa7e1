package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mailgate/mailgate/plugins/proto"
)

// openDataPath returns the plugin's end of the data socket the host handed
// it (proto.DataFDEnv), or nil when it handed none: an older host, or a
// plugin run in-process by sdktest, which passes its own. The variable is
// cleared, so that processes the filter starts do not take it for theirs.
func openDataPath() (net.Conn, error) {
	v := os.Getenv(proto.DataFDEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(proto.DataFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor number", proto.DataFDEnv, v)
	}
	f := os.NewFile(uintptr(fd), "mailgate-data")
	defer f.Close() // FileConn has its own copy
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", proto.DataFDEnv, err)
	}
	return c, nil
}

// serveData answers the calls of the data path on conn until the host
// closes it (or the connection breaks), then cancels the calls still
// running and returns. Each call runs in its own goroutine, as gRPC runs
// each Run: a filter is safe for concurrent use.
func (s *filterServer) serveData(conn net.Conn) error {
	d := &dataServer{s: s, conn: conn, calls: map[uint64]context.CancelFunc{}}
	defer d.cancelAll()
	r := bufio.NewReaderSize(conn, 64<<10)
	var buf []byte
	for {
		f := new(proto.Frame)
		if err := proto.ReadFrame(r, &buf, f); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("data path: %w", err)
		}
		switch k := f.GetKind().(type) {
		case *proto.Frame_Call:
			d.start(f.GetId(), k.Call.GetTimeoutNs(), func(ctx context.Context) *proto.Frame {
				resp, err := s.runRequest(ctx, k.Call.GetRequest())
				if err != nil {
					return errorFrame(err)
				}
				return &proto.Frame{Kind: &proto.Frame_Response{Response: resp}}
			})
		case *proto.Frame_Batch:
			d.start(f.GetId(), 0, func(ctx context.Context) *proto.Frame {
				resp, err := s.runBatch(ctx, k.Batch)
				if err != nil {
					return errorFrame(err)
				}
				return &proto.Frame{Kind: &proto.Frame_BatchResponse{BatchResponse: resp}}
			})
		case *proto.Frame_Cancel:
			d.cancel(f.GetId())
		default:
			return fmt.Errorf("data path: unexpected frame %T from the host", k)
		}
	}
}

// dataServer is the plugin's side of one data path connection.
type dataServer struct {
	s    *filterServer
	conn net.Conn

	wmu sync.Mutex // one frame at a time on conn
	wb  []byte     // the frame being written, under wmu

	mu    sync.Mutex
	calls map[uint64]context.CancelFunc // calls running, by id
}

// start runs a call (a Run or a batch) in a goroutine of its own, within
// timeoutNs if not 0, and sends the answer run returns with the call's id.
func (d *dataServer) start(id uint64, timeoutNs int64, run func(context.Context) *proto.Frame) {
	ctx, cancel := context.WithCancel(context.Background())
	if timeoutNs > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(timeoutNs))
	}
	d.mu.Lock()
	d.calls[id] = cancel
	d.mu.Unlock()
	d.s.workers.spawn(func() {
		f := run(ctx)
		d.mu.Lock()
		_, live := d.calls[id]
		delete(d.calls, id)
		d.mu.Unlock()
		cancel()
		if !live {
			return // cancelled by the host: nobody waits for the answer
		}
		f.Id = id
		d.write(f)
	})
}

// errorFrame is a failed call's answer: its gRPC status, as the Run RPC
// would have returned it.
func errorFrame(err error) *proto.Frame {
	st, _ := status.FromError(err)
	return &proto.Frame{Kind: &proto.Frame_Error{Error: &proto.CallError{Code: uint32(st.Code()), Message: st.Message()}}}
}

func (d *dataServer) cancel(id uint64) {
	d.mu.Lock()
	cancel := d.calls[id]
	delete(d.calls, id)
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (d *dataServer) cancelAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, cancel := range d.calls {
		cancel()
		delete(d.calls, id)
	}
}

// write sends one frame. A write that fails means the host is gone: the
// read loop sees it too and ends.
func (d *dataServer) write(f *proto.Frame) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	b, err := proto.AppendFrame(d.wb[:0], f)
	if err != nil {
		// Too long an answer (edits of many megabytes): the call fails,
		// the connection stays usable.
		b, _ = proto.AppendFrame(d.wb[:0], &proto.Frame{Id: f.GetId(), Kind: &proto.Frame_Error{Error: &proto.CallError{
			Code: uint32(codes.ResourceExhausted), Message: err.Error()}}})
	}
	d.conn.Write(b)
	if cap(b) <= 1<<20 {
		d.wb = b // kept for the next frame, unless one was huge
	}
}
