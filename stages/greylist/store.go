package greylist

import "github.com/mailgate/mailgate/stages/recstore"

// The greylisting state is kept in a recstore (embedded: recstore.File
// under data_dir/greylist). A triplet's record: First is when it was
// first seen in its current round (its retries count from it), Last when
// a passed triplet was last used (its expiry counts from it), Passed once
// it was retried after the delay. A network's record: Count is its passes
// (distinct triplets that passed from it), Last when it was last used.
// Two gateways seeing the same new triplet at once both record a first
// sighting a moment apart, and a network's count may miss a pass, neither
// of which lets mail through early.
type (
	Key    = recstore.Key
	Record = recstore.Record
	Store  = recstore.Store
)

// tripletKey and networkKey hash what they name with a tag, so that a
// triplet and a network never share a key.
func tripletKey(network, sender, rcpt string) Key {
	return recstore.HashKey("t\x00" + network + "\x00" + sender + "\x00" + rcpt)
}

func networkKey(network string) Key { return recstore.HashKey("n\x00" + network) }
