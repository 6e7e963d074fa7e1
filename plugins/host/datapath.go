package host

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mailgate/mailgate/plugins/proto"
)

// The data path (Frame in plugins/proto): every Run whose body is absent,
// inline or in a file goes to a plugin that serves it as a frame on a Unix
// socket pair, answered by id, rather than as a unary gRPC call, which
// cost the gateway and each plugin far more CPU per call than the filter
// (HTTP/2 streams, headers, flow control and the goroutines behind them).
// go-plugin still launches the process, does the handshake, and carries
// Configure, Describe and RunStream.

// dataFD is the descriptor number of the plugin's end of the socket pair:
// the first of exec.Cmd.ExtraFiles.
const dataFD = 3

// newSocketPair returns the host's end of a new data socket pair and the
// plugin's, to be handed to the child and closed here once it runs.
func newSocketPair() (host net.Conn, child *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("data socket: %w", err)
	}
	hf := os.NewFile(uintptr(fds[0]), "mailgate-data-host")
	defer hf.Close() // FileConn has its own copy
	host, err = net.FileConn(hf)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("data socket: %w", err)
	}
	return host, os.NewFile(uintptr(fds[1]), "mailgate-data"), nil
}

// cancelWait bounds the sending of a cancel frame.
const cancelWait = time.Second

// dataEnv is the environment entries that tell the plugin where its end
// is and which versions of the data path the host serves.
func dataEnv() []string {
	return []string{
		proto.DataFDEnv + "=" + strconv.Itoa(dataFD),
		proto.DataVersionEnv + "=" + strconv.Itoa(proto.DataPathVersion),
	}
}

// dataClient is the host's side of one process's data path. Calls share
// the connection: each is a frame out and one back, matched by id.
type dataClient struct {
	conn net.Conn
	// wlock serialises writes; a channel rather than a mutex so that a
	// caller waiting for it gives up when its context ends.
	wlock chan struct{}
	wb    []byte // the frame being written, under wlock

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan dataAnswer
	err     error // set once the connection broke: every call fails with it
	done    chan struct{}
}

// dataAnswer is a call's answer: a frame with a response or a batch
// response, or the error the call failed with.
type dataAnswer struct {
	f   *proto.Frame
	err error
}

func newDataClient(conn net.Conn) *dataClient {
	c := &dataClient{conn: conn, wlock: make(chan struct{}, 1), pending: map[uint64]chan dataAnswer{}, done: make(chan struct{})}
	go c.read()
	return c
}

// close ends the connection; calls in flight fail with errLost.
func (c *dataClient) close() {
	c.conn.Close()
	<-c.done
}

// read delivers answers to their callers until the connection ends, then
// fails every call still waiting: on a socket pair, the end of the
// connection is the end of the process.
func (c *dataClient) read() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.conn, 64<<10)
	var buf []byte
	var err error
	for {
		f := new(proto.Frame)
		if err = proto.ReadFrame(r, &buf, f); err != nil {
			break
		}
		a := dataAnswer{f: f}
		switch k := f.GetKind().(type) {
		case *proto.Frame_Response, *proto.Frame_BatchResponse:
		case *proto.Frame_Error:
			a.err = errorStatus(k.Error)
		default:
			err = fmt.Errorf("unexpected frame %T from the plugin", k)
		}
		if err != nil {
			break
		}
		c.mu.Lock()
		ch := c.pending[f.GetId()]
		delete(c.pending, f.GetId())
		c.mu.Unlock()
		if ch != nil { // nil: the caller gave up
			ch <- a
		}
	}
	c.conn.Close()
	c.mu.Lock()
	c.err = fmt.Errorf("%w: data path: %v", errLost, err)
	for id, ch := range c.pending {
		ch <- dataAnswer{err: c.err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// run sends req and waits for its answer until ctx ends. Errors are gRPC
// statuses, as from the Run RPC, or wrap errLost.
func (c *dataClient) run(ctx context.Context, req *proto.RunRequest) (*proto.RunResponse, error) {
	call := &proto.Call{Request: req}
	if dl, ok := ctx.Deadline(); ok {
		call.TimeoutNs = max(int64(time.Until(dl)), 1)
	}
	f, err := c.call(ctx, &proto.Frame{Kind: &proto.Frame_Call{Call: call}})
	if err != nil {
		return nil, err
	}
	resp := f.GetResponse()
	if resp == nil {
		return nil, fmt.Errorf("%w: data path: a call answered with %T", errLost, f.GetKind())
	}
	return resp, nil
}

// batch sends b and waits for its answer until ctx ends; errors as run's.
func (c *dataClient) batch(ctx context.Context, b *proto.Batch) (*proto.BatchResponse, error) {
	f, err := c.call(ctx, &proto.Frame{Kind: &proto.Frame_Batch{Batch: b}})
	if err != nil {
		return nil, err
	}
	resp := f.GetBatchResponse()
	if resp == nil {
		return nil, fmt.Errorf("%w: data path: a batch answered with %T", errLost, f.GetKind())
	}
	return resp, nil
}

// call sends f, a call or a batch, with an id of its own and waits for
// the frame that answers it.
func (c *dataClient) call(ctx context.Context, f *proto.Frame) (*proto.Frame, error) {
	ch := make(chan dataAnswer, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()
	f.Id = id
	if err := c.write(ctx, f); err != nil {
		c.forget(id)
		return nil, err
	}
	select {
	case a := <-ch:
		return a.f, a.err
	case <-ctx.Done():
		if c.forget(id) {
			// Tell the plugin, so the filter's context ends as with
			// gRPC; it need not answer, and an answer is dropped. A
			// plugin that cannot take so small a frame within
			// cancelWait is wedged: the write breaks the connection.
			wctx, cancel := context.WithTimeout(context.Background(), cancelWait)
			c.write(wctx, &proto.Frame{Id: id, Kind: &proto.Frame_Cancel{Cancel: &proto.Cancel{}}})
			cancel()
		}
		return nil, ctx.Err()
	}
}

// forget removes a call nobody waits for any more; false if its answer
// came (or the connection broke) first.
func (c *dataClient) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	return ok
}

// write sends one frame. A plugin that stops reading its socket must not
// hold the caller past its context: the wait for the lock and the write
// itself end with ctx, and a frame left half written breaks the
// connection (the plugin is then replaced, as after a crash).
func (c *dataClient) write(ctx context.Context, f *proto.Frame) error {
	select {
	case c.wlock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.wlock }()
	b, err := proto.AppendFrame(c.wb[:0], f)
	if err != nil {
		return err
	}
	if cap(b) <= 1<<20 {
		c.wb = b
	}
	dl, _ := ctx.Deadline()
	c.conn.SetWriteDeadline(dl)
	if _, err := c.conn.Write(b); err != nil {
		c.conn.Close() // the reader fails every call in flight
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: data path: %v", errLost, err)
	}
	return nil
}

// errorStatus is the gRPC status a CallError carries.
func errorStatus(e *proto.CallError) error {
	return status.Error(codes.Code(e.GetCode()), e.GetMessage())
}
