package admin

import (
	"errors"
	"net/http"
)

// NotFound reports whether err says there is no such message.
func NotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}
