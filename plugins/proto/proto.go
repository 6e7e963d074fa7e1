// Package proto is the versioned contract between the mailgate engine and
// its filter plugins: the gRPC service in filter.proto (generated Go code in
// filter.pb.go and filter_grpc.pb.go), the frames of the data path
// (frame.go) and the go-plugin handshake both sides must agree on.
//
// The data path encodes and decodes its frames with the reflection-free
// code protoc-gen-go-vtproto generates (filter_vtproto.pb.go): the same
// bytes on the wire as the protobuf runtime's (TestVTWire), at about half
// the CPU, which was a tenth of a plugin process's (BENCHMARKS.md).
//
// To regenerate after editing filter.proto (needs protoc, protoc-gen-go,
// protoc-gen-go-grpc and protoc-gen-go-vtproto on PATH; go install
// google.golang.org/protobuf/cmd/protoc-gen-go@latest,
// google.golang.org/grpc/cmd/protoc-gen-go-grpc@latest and
// github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.0):
//
//	go generate ./plugins/proto
package proto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size filter.proto

// The go-plugin handshake. The magic cookie is not security: it only tells
// a binary started by mailgate that it is being run as a plugin, so that a
// user who runs it by hand gets a message instead of a hang.
const (
	// ProtocolVersion is the version of this contract. It is checked in the
	// go-plugin handshake and again in DescribeResponse.protocol_version.
	ProtocolVersion = 1

	MagicCookieKey   = "MAILGATE_PLUGIN"
	MagicCookieValue = "9f1c7e2a-mailgate-filter-v1"

	// PluginName is the name the Filter service is dispensed under.
	PluginName = "filter"
)

// MaxInline is the largest body sent inline in a RunRequest; larger ones
// travel as a FileRef or in RunStream chunks.
const MaxInline = 64 << 10

// ChunkSize is the size of the body chunks of RunStream.
const ChunkSize = 64 << 10

// The data path (Frame in filter.proto): Run over a socket pair without
// gRPC.
const (
	// DataPathVersion is the version of the data path this package
	// describes, as a plugin states it in DescribeResponse.data_path.
	// Version 2 lets a Batch go on after the step of an editing stage
	// (the plugin applies its edits before the next group); a plugin of
	// version 1 is sent batches that end at such a step. A host serves
	// every version from DataPathOldest on.
	DataPathVersion = 2

	// DataPathOldest is the oldest version of the data path a host
	// serves: plugins built with an older SDK keep working.
	DataPathOldest = 1

	// DataPathEditsInBatch is the version from which a Batch may hold
	// steps after the step of an editing stage.
	DataPathEditsInBatch = 2

	// DataVersionEnv names the environment variable in which the host
	// gives the highest data path version it serves. A plugin states the
	// lower of it and its own DataPathVersion; without it (a host from
	// before version 2), version 1, so that a plugin built with a newer
	// SDK still starts under an older gateway.
	DataVersionEnv = "MAILGATE_PLUGIN_DATA_VERSION"

	// DataFDEnv names the environment variable that gives a plugin the
	// number of its end of the data socket (an inherited descriptor).
	DataFDEnv = "MAILGATE_PLUGIN_DATA_FD"

	// MaxFrame bounds a Frame on the data path: an inline body, the
	// header and the envelope, with room to spare. A longer one is a
	// protocol error that ends the connection.
	MaxFrame = 16 << 20
)
