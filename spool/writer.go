package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// bufSize bounds the memory a Writer uses, whatever the message size.
const bufSize = 64 << 10

var errFinished = errors.New("spool: message already committed or aborted")

// Writer receives the bytes of one message before it is committed. A Writer
// is used by one goroutine. It ends with Commit or Abort; after a failed
// Commit the message is already gone and Abort does nothing.
type Writer struct {
	s    *Spool
	id   string
	path string
	f    *os.File
	buf  *bufio.Writer
	size int64
	err  error // first write error; the message cannot be committed
	done bool  // committed, aborted or handed to the committer
	// entry numbers the directory entry of the message's file among
	// Spool.entries: the commit needs an fsync of msg/ only if the
	// background one has not covered it yet.
	entry uint64
}

func newWriter(s *Spool, id, path string, f *os.File) *Writer {
	w := &Writer{s: s, id: id, path: path, f: f}
	w.buf = bufio.NewWriterSize(f, bufSize)
	return w
}

// ID is the message's queue ID.
func (w *Writer) ID() string { return w.id }

// Path is the file that holds the message. A reader in another process
// opens it read-only, after Flush; Rewrite replaces the file, so open it
// again after one.
func (w *Writer) Path() string { return w.path }

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Write appends p to the message. Errors wrap the file system's, so a full
// disk can be told with IsFull.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errFinished
	}
	if w.err != nil {
		return 0, w.err
	}
	if fail := w.s.opts.FailWrites; fail != nil {
		if err := fail(); err != nil {
			w.err = fmt.Errorf("spool: write %s: %w", w.id, err)
			return 0, w.err
		}
	}
	n, err := w.buf.Write(p)
	if w.size <= inlineMax && w.size+int64(n) > inlineMax {
		w.s.wakeDirSync() // too large to commit inline: its entry must be durable
	}
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: write %s: %w", w.id, err)
		return n, w.err
	}
	return n, nil
}

// Flush writes the buffered bytes to the file, so that a reader of Path
// sees everything written so far.
func (w *Writer) Flush() error {
	if w.done {
		return errFinished
	}
	if w.err != nil {
		return w.err
	}
	if err := w.buf.Flush(); err != nil {
		w.err = fmt.Errorf("spool: write %s: %w", w.id, err)
		return w.err
	}
	return nil
}

// Open returns a reader of the bytes written so far (for the data-phase
// stages that read the message before it is committed).
func (w *Writer) Open() (io.ReadSeekCloser, error) {
	if err := w.Flush(); err != nil {
		return nil, err
	}
	f, err := os.Open(w.path)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", w.id, err)
	}
	return f, nil
}

// Rewrite streams the bytes written so far through fn into the new
// content of the message (header edits, body replacement). Before Commit
// only. If fn fails the message is left as it was; if writing the new
// content fails, the Writer is failed and Commit refuses the message.
//
// A new content of up to inPlaceMax bytes is collected in memory and then
// written over the old one, in the same file. A larger one goes to a new
// file in tmp/ that is renamed over the old: a reader that opened the old
// file keeps reading the old bytes. In place spares a file's creation and
// later deletion, a rename and a second file to flush at Commit; creating
// a file was the largest cost of an edited message (see BenchmarkRewrite).
// A reader that still has the file open, such as a stage that outlived its
// timeout, may see the new bytes: the pipeline no longer listens to it.
func (w *Writer) Rewrite(fn func(src io.Reader, dst io.Writer) error) error {
	if err := w.Flush(); err != nil {
		return err
	}
	// Opened at fn's first read: a caller that writes the new content
	// from what it holds (the header it parsed and the body's own
	// reader) spares an open.
	src := &lazyFile{path: w.path}
	defer src.close()
	out := &rewriter{w: w}
	select {
	case w.s.inPlace <- struct{}{}:
		defer func() { <-w.s.inPlace }()
		// Header edits make a message a little longer.
		out.mem = make([]byte, 0, min(w.size+4096, inPlaceMax))
	default: // enough memory in use: a new file
	}
	err := fn(src, out)
	if err == nil {
		err = out.finish()
	}
	if err != nil {
		out.discard()
		return fmt.Errorf("spool: rewrite %s: %w", w.id, err)
	}
	return nil
}

// lazyFile is a file opened for reading at the first Read.
type lazyFile struct {
	path string
	f    *os.File
}

func (l *lazyFile) Read(p []byte) (int, error) {
	if l.f == nil {
		f, err := os.Open(l.path)
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	return l.f.Read(p)
}

func (l *lazyFile) close() {
	if l.f != nil {
		l.f.Close()
	}
}

// inPlaceMax is the largest message Rewrite rewrites in place, and
// inPlaceSlots how many may be collected in memory at once: together at
// most 8 MiB, whatever the number of sessions.
const (
	inPlaceMax   = 256 << 10
	inPlaceSlots = 32
)

// rewriter is where Rewrite's fn writes: memory (mem is not nil) until the
// content outgrows inPlaceMax, then a new file in tmp/.
type rewriter struct {
	w   *Writer
	mem []byte
	f   *os.File // the new file, once spilled
	fw  *fileWriter
	buf *bufio.Writer
}

func (r *rewriter) Write(p []byte) (int, error) {
	if r.mem != nil && len(r.mem)+len(p) <= inPlaceMax {
		r.mem = append(r.mem, p...)
		return len(p), nil
	}
	if r.f == nil {
		f, err := os.CreateTemp(r.w.s.tmpDir, r.w.id+".msg.*")
		if err != nil {
			return 0, err
		}
		r.f = f
		r.fw = &fileWriter{w: f, fail: r.w.s.opts.FailWrites}
		r.buf = bufio.NewWriterSize(r.fw, bufSize)
		if _, err := r.buf.Write(r.mem); err != nil {
			return 0, err
		}
		r.mem = nil
	}
	return r.buf.Write(p)
}

// finish puts the new content in place of the old.
func (r *rewriter) finish() error {
	w := r.w
	if r.f == nil {
		if err := w.overwrite(r.mem); err != nil {
			w.err = fmt.Errorf("spool: rewrite %s: %w", w.id, err)
			return err
		}
		return nil
	}
	if err := r.buf.Flush(); err != nil {
		return err
	}
	// Same file system, so rename is atomic: a reader sees the old or the
	// new message, never a part.
	if err := os.Rename(r.f.Name(), w.path); err != nil {
		return err
	}
	w.entry = w.s.newEntry(r.fw.n) // a new inode behind the name
	w.f.Close()
	w.f = r.f
	w.buf.Reset(r.f)
	w.size = r.fw.n
	r.f = nil
	return nil
}

// discard removes the new file of a rewrite that failed.
func (r *rewriter) discard() {
	if r.f != nil {
		r.f.Close()
		os.Remove(r.f.Name())
	}
}

// overwrite replaces the content of the message file with b.
func (w *Writer) overwrite(b []byte) error {
	if fail := w.s.opts.FailWrites; fail != nil {
		if err := fail(); err != nil {
			return err
		}
	}
	if _, err := w.f.WriteAt(b, 0); err != nil {
		return err
	}
	if int64(len(b)) < w.size { // header edits mostly make it longer
		if err := w.f.Truncate(int64(len(b))); err != nil {
			return err
		}
	}
	// Later writes append to the new content.
	if _, err := w.f.Seek(int64(len(b)), io.SeekStart); err != nil {
		return err
	}
	w.size = int64(len(b))
	return nil
}

// Commit writes the envelope and makes message and envelope durable; it
// returns nil only once they are on stable storage. It sets env.ID and
// env.Size, and env.Received if it is zero. If ctx ends first, Commit
// returns its error and the message is removed: the client was not told
// it was accepted, so it must not be delivered.
func (w *Writer) Commit(ctx context.Context, env *Envelope) error {
	if w.done {
		return errFinished
	}
	if err := ctx.Err(); err != nil {
		w.Abort()
		return fmt.Errorf("spool: commit %s: %w", w.id, err)
	}
	if err := w.Flush(); err != nil {
		w.Abort()
		return err
	}
	// A small message goes into its commit record: one flush of the
	// log makes message and envelope durable, as Postfix's one fsync of
	// a queue file does, instead of the file's fsync and then the
	// log's. On the bench's chain line that was 25 % more messages a
	// second at full load (BENCHMARKS.md). The file is still written,
	// for the stages and the delivery to read, and recovery writes it
	// again from the record if a crash lost it.
	var msg []byte
	if w.size <= inlineMax {
		msg = make([]byte, w.size)
		if _, err := w.f.ReadAt(msg, 0); err != nil {
			w.Abort()
			return fmt.Errorf("spool: commit %s: read message back: %w", w.id, err)
		}
	} else if err := w.f.Sync(); err != nil {
		// The message's own fsync, here rather than in the committer,
		// so that the sessions' fsyncs run concurrently (see
		// syncMessages).
		w.Abort()
		return fmt.Errorf("spool: commit %s: fsync message: %w", w.id, err)
	}
	env.ID, env.Size = w.id, w.size
	if env.Received.IsZero() {
		env.Received = time.Now()
	}
	js, err := w.s.encode(env)
	if err != nil {
		w.Abort()
		return fmt.Errorf("spool: commit %s: %w", w.id, err)
	}
	w.done = true
	j := &job{id: w.id, data: w.f, msgPath: w.path, entry: w.entry, js: js, msg: msg, done: make(chan error, 1)}
	if err := w.s.submit(j); err != nil {
		w.s.discard(j)
		return fmt.Errorf("spool: commit %s: %w", w.id, err)
	}
	select {
	case err := <-j.done:
		if err != nil {
			return fmt.Errorf("spool: commit %s: %w", w.id, err)
		}
		return nil
	case <-ctx.Done():
		if !w.s.abandon(j) {
			// The committer already decided; take its answer.
			if err := <-j.done; err != nil {
				return fmt.Errorf("spool: commit %s: %w", w.id, err)
			}
			return nil
		}
		return fmt.Errorf("spool: commit %s: %w", w.id, ctx.Err())
	}
}

// Abort removes everything of an uncommitted message.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := os.Remove(w.path); err != nil {
		return fmt.Errorf("spool: abort %s: %w", w.id, err)
	}
	return nil
}

// fileWriter writes to a spool file, counts bytes, and fails where the
// FailWrites option says so.
type fileWriter struct {
	w    io.Writer
	fail func() error
	n    int64
}

func (fw *fileWriter) Write(p []byte) (int, error) {
	if fw.fail != nil {
		if err := fw.fail(); err != nil {
			return 0, err
		}
	}
	n, err := fw.w.Write(p)
	fw.n += int64(n)
	return n, err
}
