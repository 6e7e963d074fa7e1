package dkimcore

import (
	"context"
	"fmt"
	"io"

	"github.com/mailgate/mailgate/stages"
)

// ReadBody streams body (nil is an empty body) into w, the body hashers
// of one or more signatures (NewBodyHasher), and stops with the context's
// cause when it ends between two reads: hashing a large body is the long
// part of signing and verifying, and must end with the stage's time.
func ReadBody(ctx context.Context, body stages.Body, w io.Writer) error {
	if body == nil {
		return nil
	}
	r, err := body.Open()
	if err != nil {
		return fmt.Errorf("open body: %w", err)
	}
	defer r.Close()
	if _, err := io.Copy(w, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	return nil
}

// ctxReader is r that fails once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if c.ctx.Err() != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}
