package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages/dmarc"
	"github.com/mailgate/mailgate/stages/durable"
	"github.com/mailgate/mailgate/state"
)

// The DMARC aggregate reports of a cluster are sent once a day for all
// the nodes together, with every node's evaluations. The dmarc stage
// runs in its own process and reaches neither the gateway nor
// PostgreSQL: on a node of a cluster (stages.Env.Shared) it records its
// evaluations in its day files as on one node, and reports only the days
// the gateway hands it (stages/dmarc README). The gateway, here, sends
// every new line of the stage's day files to state.DMARCRecords; when a
// day has ended (and dmarcGrace more, for the other nodes' last lines),
// the first node to claim it (state.Claims, a transaction decides)
// writes that day's records of every node into the stage's
// dmarc.ClusterDaysDir, and its stage reports them. A node claims only
// once PostgreSQL has answered it for dmarcSettle: when PostgreSQL comes
// back after an outage, every node sends what it kept meanwhile before
// any claims a day. Records a node could not send by then (it was down)
// miss the day's report.
const (
	dmarcEvery = 5 * time.Second
	// dmarcGrace is how long after a UTC day ends its reports wait for
	// every node's last records to reach the store.
	dmarcGrace = 10 * time.Minute
	// dmarcSettle is how long PostgreSQL must have answered a node
	// before it claims a day: time for every node that kept records
	// while it was away to send them (they do every dmarcEvery).
	dmarcSettle = 30 * time.Second
	// dmarcDays is how many days back a day is still reported (the
	// cluster's PostgreSQL was away), and how long the store keeps a
	// day's records and the node the days it handed over.
	dmarcDays = 8
)

// dmarcCursor is the file, beside the stage's day files, that says how
// far each was sent to the store.
const dmarcCursor = ".collected"

// dmarcCollector collects the dmarc stage's records of one node.
type dmarcCollector struct {
	n             *Node
	records, days string
	// settled are the days another node claimed, or this node found
	// without records: not asked again.
	settled map[string]bool
}

// dmarcReports reports whether a stage of the node's config is a dmarc
// stage with aggregate reports on: only such a node may claim a day, for
// its stage must report it.
func (n *Node) dmarcReports() bool {
	for i, st := range n.cfg.Stages {
		if st.Kind != "dmarc" {
			continue
		}
		if b, err := n.cfg.StageConfigJSON(i); err == nil && dmarc.ReportsOn(b) {
			return true
		}
	}
	return false
}

// collectDMARC collects the dmarc stage's records every dmarcEvery
// until ctx ends; without a dmarc stage that reports, it does nothing.
func (n *Node) collectDMARC(ctx context.Context) {
	if !n.dmarcReports() {
		return
	}
	c := &dmarcCollector{n: n, records: filepath.Join(n.cfg.DataDir, dmarc.RecordsDir),
		days: filepath.Join(n.cfg.DataDir, dmarc.ClusterDaysDir), settled: map[string]bool{}}
	t := time.NewTicker(dmarcEvery)
	defer t.Stop()
	for {
		if err := c.round(ctx, time.Now()); err != nil && ctx.Err() == nil && !errors.Is(err, state.ErrUnavailable) {
			n.log.Error("dmarc records", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round sends what is new in the stage's day files, then claims the
// days ended; a day is claimed only once this node's own records of it
// are all in the store. The younger of two live processes under one
// name (state.NameWatch) does neither: the store would keep one of two
// records under the same name and key, and the files wait on its disk
// until the other stops.
func (c *dmarcCollector) round(ctx context.Context, now time.Time) error {
	if c.n.names.Yields() {
		return nil
	}
	st := c.n.Store()
	if err := c.ship(ctx, st, now); err != nil {
		return err
	}
	if c.n.answeringFor(now) < dmarcSettle {
		return c.clean(now)
	}
	return errors.Join(c.claim(ctx, st, now), c.clean(now))
}

// ship sends every whole line of the day files not sent yet, each under
// a key of its file and offset (a line sent again after a crash is
// stored once), and removes the files of days ended and sent whole.
func (c *dmarcCollector) ship(ctx context.Context, st state.Store, now time.Time) error {
	sent, err := c.cursor()
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(c.records, "*.jsonl"))
	if err != nil {
		return err
	}
	slices.Sort(files)
	today := now.UTC().Format(time.DateOnly)
	for _, f := range files {
		name := filepath.Base(f)
		off, err := c.shipFile(ctx, st, f, sent[name])
		if off != sent[name] {
			sent[name] = off
			if serr := c.saveCursor(sent); serr != nil {
				return errors.Join(err, serr)
			}
		}
		if err != nil {
			return err
		}
		day := strings.TrimSuffix(name, ".jsonl")
		if end, perr := time.Parse(time.DateOnly, day); perr == nil && day < today && now.After(end.Add(24*time.Hour+dmarcGrace)) {
			if fi, serr := os.Stat(f); serr == nil && fi.Size() == off {
				// The stage writes no more to a day ended: its file
				// is all in the store.
				if err := os.Remove(f); err != nil {
					return err
				}
				delete(sent, name)
				if err := c.saveCursor(sent); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// shipFile sends the whole lines of file from offset off on and returns
// the offset after the last one sent.
func (c *dmarcCollector) shipFile(ctx context.Context, st state.Store, file string, off int64) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return off, err
	}
	name := filepath.Base(file)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return off, nil // a line being written, or none
		}
		line := b[:i]
		if at, domain, ok := dmarc.ParseRow(line); ok {
			r := state.DMARCRecord{Time: at, Domain: domain, Row: bytes.Clone(line), Key: name + ":" + strconv.FormatInt(off, 10)}
			if err := st.DMARC().Add(ctx, r); err != nil {
				return off, err
			}
		} // else: a line a crash cut short, as the stage reads them
		off += int64(i) + 1
		b = b[i+1:]
	}
}

// claim hands this node's stage each day ended that it is the first
// node to claim: every node's records of it, in the order they came.
func (c *dmarcCollector) claim(ctx context.Context, st state.Store, now time.Time) error {
	today := now.UTC().Truncate(24 * time.Hour)
	for i := dmarcDays; i >= 1; i-- {
		d := today.AddDate(0, 0, -i)
		name := d.Format(time.DateOnly)
		file := filepath.Join(c.days, name+".jsonl")
		if c.settled[name] || now.Before(d.Add(24*time.Hour+dmarcGrace)) || exists(file) || exists(file+".sent") {
			continue
		}
		mine, err := st.Claims().Claim(ctx, "dmarc/"+name, c.n.cfg.Cluster.Node)
		if err != nil {
			return err
		}
		if !mine {
			c.settled[name] = true
			continue
		}
		recs, err := st.DMARC().Day(ctx, d)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			c.settled[name] = true
			continue
		}
		var b bytes.Buffer
		for _, r := range recs {
			b.Write(r.Row)
			b.WriteByte('\n')
		}
		if err := os.MkdirAll(c.days, 0o750); err != nil {
			return err
		}
		if err := durable.WriteFile(file, b.Bytes(), ""); err != nil {
			return fmt.Errorf("dmarc reports of %s: %w", name, err)
		}
		c.n.log.Info("dmarc reports of a day are this node's to send", "day", name, "records", len(recs))
	}
	return nil
}

// clean removes the days handed over and reported more than dmarcDays
// ago: claim no longer looks at them.
func (c *dmarcCollector) clean(now time.Time) error {
	oldest := now.UTC().AddDate(0, 0, -dmarcDays-1).Format(time.DateOnly)
	done, err := filepath.Glob(filepath.Join(c.days, "*.jsonl.sent"))
	var errs []error
	for _, f := range done {
		if strings.TrimSuffix(filepath.Base(f), ".jsonl.sent") < oldest {
			errs = append(errs, os.Remove(f))
		}
	}
	for d := range c.settled {
		if d < oldest {
			delete(c.settled, d)
		}
	}
	return errors.Join(append(errs, err)...)
}

// cursor reads how far each day file was sent.
func (c *dmarcCollector) cursor() (map[string]int64, error) {
	sent := map[string]int64{}
	b, err := os.ReadFile(filepath.Join(c.records, dmarcCursor))
	if errors.Is(err, fs.ErrNotExist) {
		return sent, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &sent)
	}
	if err != nil {
		return nil, fmt.Errorf("dmarc records: %w", err)
	}
	return sent, nil
}

func (c *dmarcCollector) saveCursor(sent map[string]int64) error {
	b, err := json.Marshal(sent)
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(c.records, dmarcCursor), b, "")
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
