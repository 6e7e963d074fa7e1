package server

import "time"

// workers run functions on goroutines that ran one before and wait for
// the next (see workerIdle): a call of the data path, or a step of a
// batch, starts a goroutine only when no worker is idle, so the workers
// keep the stacks they grew. Growing a fresh goroutine's stack for every
// call was a twentieth of a plugin's CPU.
type workers struct {
	work chan func() // unbuffered: a send succeeds when a worker is idle
}

// workerIdle is how long a worker waits for more work before it ends.
const workerIdle = time.Minute

func newWorkers() *workers { return &workers{work: make(chan func())} }

// spawn runs fn on an idle worker, or on a new one.
func (w *workers) spawn(fn func()) {
	select {
	case w.work <- fn:
	default:
		go w.loop(fn)
	}
}

func (w *workers) loop(fn func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(workerIdle)
		select {
		case fn = <-w.work:
		case <-idle.C:
			return
		}
	}
}
