package spool

import (
	"encoding/base32"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"
)

// idAlphabet is base32hex in upper case: its characters sort in the same
// order as the values they encode, so queue IDs sort by creation time both
// as strings and as file names, and they are safe in any file system.
const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV"

var idEncoding = base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)

// idLen is the length of a queue ID: 10 bytes (48 bits of milliseconds
// since the Unix epoch, 32 bits that start random) in base32.
const idLen = 16

// idGen hands out queue IDs that only ever grow. Within one process the
// 80-bit value is incremented when the clock has not moved on; across
// restarts the random low bits (and the highest ID found on disk at Open)
// make a repeat practically impossible even if the clock went back, and
// Create refuses an ID whose file already exists.
type idGen struct {
	mu   sync.Mutex
	ms   uint64
	rand uint32
}

func (g *idGen) next(now time.Time) string {
	g.mu.Lock()
	ms := uint64(now.UnixMilli())
	if ms > g.ms {
		g.ms, g.rand = ms, rand.Uint32()
	} else {
		g.rand++
		if g.rand == 0 {
			g.ms++
		}
	}
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], g.ms<<16)
	binary.BigEndian.PutUint32(b[6:], g.rand)
	g.mu.Unlock()
	return idEncoding.EncodeToString(b[:])
}

// observe makes sure the generator never hands out id or anything lower.
func (g *idGen) observe(id string) {
	b, err := idEncoding.DecodeString(id)
	if err != nil || len(b) != 10 {
		return
	}
	ms := binary.BigEndian.Uint64(b[:8]) >> 16
	r := binary.BigEndian.Uint32(b[6:])
	g.mu.Lock()
	if ms > g.ms || (ms == g.ms && r > g.rand) {
		g.ms, g.rand = ms, r
	}
	g.mu.Unlock()
}

// ValidID reports whether id has the form of a queue ID. Paths are built
// from IDs, so an ID from outside (the command line, the admin API) must
// pass this before it is used.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'V') {
			return false
		}
	}
	return true
}
