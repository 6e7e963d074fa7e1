package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/durable"
	"github.com/mailgate/mailgate/state/trace"
)

// pickupPoll is how often <data_dir>/pickup/ is looked at. Its mail
// (daily DMARC reports) is in no hurry.
const pickupPoll = time.Second

// pickup moves the mail stages leave in <data_dir>/pickup/ (stages.Pickup)
// into the spool and hands it to the router, each file exactly once.
//
// A file is first renamed to .queued/<queue ID>, the ID its message is
// committed under; then the message is committed, the file removed, and
// only then is the router told. A crash (kill -9) leaves a file in
// .queued/ whose message is committed or not, and the spool tells which
// by its ID: a committed one has its file removed, any other is taken
// again. That a committed message whose file is still there has not been
// delivered (and removed from the spool) meanwhile, which would make it
// look uncommitted, holds because the router learns of a message only by
// Enqueue, after the removal, or when it loads the spool at start, after
// newPickup has finished what a crash left.
type pickup struct {
	dir, queued, bad string
	spool            *spool.Spool
	router           interface{ Enqueue(*spool.Envelope) }
	trace            *trace.Log
	log              *slog.Logger
	// stuck are committed messages whose file in queued/ could not be
	// removed: never taken again, and told to the router (if not nil)
	// once the file is gone.
	stuck map[string]*spool.Envelope
}

// newPickup makes the directories and takes what a crash left, before
// the router loads the spool.
func (g *Gateway) newPickup(ctx context.Context, dataDir string) error {
	dir := filepath.Join(dataDir, "pickup")
	p := &pickup{dir: dir, queued: filepath.Join(dir, ".queued"), bad: filepath.Join(dir, "bad"),
		spool: g.spool, router: g.router, trace: g.trace, log: g.log, stuck: map[string]*spool.Envelope{}}
	for _, d := range []string{p.queued, p.bad} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("pickup: %w", err)
		}
	}
	g.pickup = p
	p.scan(ctx, true)
	return nil
}

// run takes the files that appear until ctx ends.
func (p *pickup) run(ctx context.Context) {
	t := time.NewTicker(pickupPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.scan(ctx, false)
		}
	}
}

// scan finishes what is in queued/, then takes the new files. At start
// the router has not loaded the spool yet.
func (p *pickup) scan(ctx context.Context, start bool) {
	for _, id := range names(p.queued, p.log) {
		path := filepath.Join(p.queued, id)
		env, stuck := p.stuck[id]
		if !stuck {
			var err error
			env, err = p.spool.Load(id)
			if errors.Is(err, fs.ErrNotExist) {
				p.take(ctx, path) // cut short before its commit
				continue
			}
			if err != nil {
				p.log.Error("pickup: spool", "file", path, "err", err)
				continue
			}
		}
		p.done(id, env, start)
	}
	for _, name := range names(p.dir, p.log) {
		p.take(ctx, filepath.Join(p.dir, name))
	}
}

// take moves the pickup file at path into the spool.
func (p *pickup) take(ctx context.Context, path string) {
	f, err := os.Open(path)
	if err != nil {
		p.log.Error("pickup: open", "file", path, "err", err)
		return
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	pk, err := stages.ReadPickup(r)
	if errors.Is(err, stages.ErrPickup) {
		bad := filepath.Join(p.bad, filepath.Base(path)+"."+time.Now().UTC().Format("20060102T150405.000000000"))
		if err := os.Rename(path, bad); err != nil {
			p.log.Error("pickup: move malformed file", "file", path, "err", err)
			return
		}
		p.log.Error("pickup: malformed file moved aside", "file", bad, "err", err)
		return
	}
	if err != nil {
		p.log.Error("pickup: read", "file", path, "err", err)
		return
	}
	w, err := p.spool.Create()
	if err != nil {
		p.log.Error("pickup: spool", "file", path, "err", err)
		return
	}
	queued := filepath.Join(p.queued, w.ID())
	if err = os.Rename(path, queued); err == nil {
		if err = durable.Sync(p.queued); err == nil {
			err = durable.Sync(filepath.Dir(path))
		}
	}
	if err == nil {
		_, err = io.Copy(w, r)
	}
	if err != nil {
		w.Abort()
		p.log.Error("pickup: spool", "file", path, "err", err)
		return
	}
	env := spool.NewEnvelope(pk.From, pk.Rcpts, "", "", "")
	if err := w.Commit(ctx, env); err != nil {
		p.log.Error("pickup: spool", "file", path, "err", err)
		return // taken again from queued/
	}
	p.log.Info("pickup queued", "queue_id", env.ID, "file", filepath.Base(path), "from", env.From, "to", strings.Join(pk.Rcpts, ","))
	p.trace.Record(trace.Event{QueueID: env.ID, Event: "pickup", From: &pk.From, Rcpts: pk.Rcpts, Size: env.Size, Reason: "pickup file " + filepath.Base(path)})
	p.done(env.ID, env, false)
}

// done removes the file of the committed message id and tells the
// router, except at start: the router loads the spool itself then.
func (p *pickup) done(id string, env *spool.Envelope, start bool) {
	if start {
		env = nil
	}
	path := filepath.Join(p.queued, id)
	err := os.Remove(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		err = durable.Sync(p.queued)
	}
	if err != nil {
		p.stuck[id] = env
		p.log.Error("pickup: remove the file of a queued message", "file", path, "err", err)
		return
	}
	delete(p.stuck, id)
	if env != nil {
		p.router.Enqueue(env)
	}
}

// names lists the regular files in dir whose names do not start with a
// dot (a writer's file being written).
func names(dir string, log *slog.Logger) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		log.Error("pickup: read dir", "dir", dir, "err", err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}
