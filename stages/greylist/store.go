package greylist

import (
	"context"
	"crypto/sha256"
	"time"
)

// Key names one record of the store: a triplet or a client network,
// hashed. A hash keeps records one size whatever the addresses (a bounded
// cost per record) and keeps addresses out of the files.
type Key [16]byte

// tripletKey and networkKey hash what they name with a tag, so that a
// triplet and a network never share a key.
func tripletKey(network, sender, rcpt string) Key {
	return hashKey("t\x00" + network + "\x00" + sender + "\x00" + rcpt)
}

func networkKey(network string) Key { return hashKey("n\x00" + network) }

func hashKey(s string) Key {
	sum := sha256.Sum256([]byte(s))
	var k Key
	copy(k[:], sum[:])
	return k
}

// Record is what the store keeps of a triplet or a network.
type Record struct {
	// First is when a triplet was first seen in its current round: its
	// retries count from it.
	First time.Time
	// Last is when a passed triplet or a network was last used: its
	// expiry counts from it.
	Last time.Time
	// Passed is true once a triplet was retried after the delay.
	Passed bool
	// Count is a network's passes: distinct triplets that passed from it.
	Count uint32
	// Expires is when the record is of no more use and its room may be
	// taken by another: a store may drop it then, and must not before
	// unless it runs out of room.
	Expires time.Time
}

// Store keeps the greylisting state. The embedded one is fileStore, under
// the data directory; one shared by a cluster (Redis: a key per record
// with Expires as its expiry) can take its place. Get and Put are not one
// atomic step: two gateways seeing the same new triplet at once both
// record a first sighting a moment apart, and a network's count may miss a
// pass, neither of which lets mail through early.
type Store interface {
	// Get returns the record of k; ok is false when there is none.
	Get(ctx context.Context, k Key) (r Record, ok bool, err error)
	// Put stores r as the record of k.
	Put(ctx context.Context, k Key, r Record) error
	// Delete removes the record of k, if any.
	Delete(ctx context.Context, k Key) error
}
