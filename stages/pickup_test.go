package stages

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// TestReadPickup: what Line writes reads back, addresses in canonical
// form and the reader at the message; every malformed file is ErrPickup.
func TestReadPickup(t *testing.T) {
	line, err := Pickup{From: "Reports@Example.TEST.", Rcpts: []string{"a@b.test", "c@D.test"}}.Line()
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(strings.NewReader(string(line) + "Subject: x\r\n\r\nbody\r\n"))
	p, err := ReadPickup(r)
	if err != nil {
		t.Fatal(err)
	}
	if p.From != "Reports@example.test" || !slices.Equal(p.Rcpts, []string{"a@b.test", "c@d.test"}) {
		t.Errorf("read %+v", p)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("message %q", rest)
	}
	if p, err := ReadPickup(bufio.NewReader(strings.NewReader("{\"from\":\"\",\"rcpts\":[\"a@b.test\"]}\r\nx"))); err != nil || p.From != "" {
		t.Errorf("null sender: %+v, %v", p, err)
	}

	for name, file := range map[string]string{
		"empty":          "",
		"no CRLF":        `{"from":"","rcpts":["a@b.test"]}` + "\nx",
		"no line end":    `{"from":"","rcpts":["a@b.test"]}`,
		"not JSON":       "From: a@b.test\r\n\r\nx",
		"unknown field":  `{"from":"","rcpts":["a@b.test"],"bcc":["c@d.test"]}` + "\r\nx",
		"no recipient":   `{"from":"a@b.test","rcpts":[]}` + "\r\nx",
		"bad recipient":  `{"from":"a@b.test","rcpts":["nobody"]}` + "\r\nx",
		"bad sender":     `{"from":"a@-b-","rcpts":["a@b.test"]}` + "\r\nx",
		"no message":     `{"from":"","rcpts":["a@b.test"]}` + "\r\n",
		"envelope twice": `{"from":"","rcpts":["a@b.test"]}{"from":""}` + "\r\nx",
		"line too long":  `{"from":"","rcpts":["` + strings.Repeat("a", 5000) + `@b.test"]}` + "\r\nx",
	} {
		if _, err := ReadPickup(bufio.NewReader(strings.NewReader(file))); !errors.Is(err, ErrPickup) {
			t.Errorf("%s: %v, want ErrPickup", name, err)
		}
	}
}
