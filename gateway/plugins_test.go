package gateway_test

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/smtptest"
)

func pluginStage(name, path string, timeout, onError, config string) string {
	s := fmt.Sprintf("\n[[stage]]\nname = %q\nkind = \"plugin\"\npath = %q\n", name, path)
	if timeout != "" {
		s += fmt.Sprintf("timeout = %q\n", timeout)
	}
	if onError != "" {
		s += fmt.Sprintf("on_error = %q\n", onError)
	}
	if config != "" {
		s += "[stage.config]\n" + config + "\n"
	}
	return s
}

// TestChainOfThreePlugins: a message passes three plugin processes and
// reaches the downstream server with their header edits in chain order.
func TestChainOfThreePlugins(t *testing.T) {
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test")
	for _, n := range []string{"one", "two", "three"} {
		conf += pluginStage("p-"+n, testPluginBin, "", "", fmt.Sprintf("add_header = \"X-Chain: %s\"", n))
	}
	g := startGateway(t, conf)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("chain@test", "body\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	data := string(down.WaitFor(1, waitLong)[0].Data)
	i1, i2, i3 := strings.Index(data, "X-Chain: one\r\n"), strings.Index(data, "X-Chain: two\r\n"), strings.Index(data, "X-Chain: three\r\n")
	if i1 < 0 || i2 < i1 || i3 < i2 {
		t.Fatalf("headers missing or out of order (%d %d %d):\n%s", i1, i2, i3, data)
	}
	if !strings.HasSuffix(data, "\r\n\r\nbody\r\n") {
		t.Fatalf("body changed:\n%q", data)
	}
}

func fakePE() []byte {
	b := make([]byte, 512)
	copy(b, "MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00\x4c\x01")
	return b
}

func withAttachment(id, name, ctype string, content []byte) string {
	return "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: invoice\r\nMessage-ID: <" + id + ">\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
		"--b1\r\nContent-Type: " + ctype + "; name=\"" + name + "\"\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"" + name + "\"\r\n\r\n" +
		base64.StdEncoding.EncodeToString(content) + "\r\n--b1--\r\n"
}

// TestExamplePluginRejects: the third-party example plugin refuses its
// trigger, a program disguised as a PDF, with its own reply text.
func TestExamplePluginRejects(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+pluginStage("exeblock", exeblockBin, "", "",
		`reply = "Executables are not accepted here"`))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	r := c.SendMail("a@sender.test", []string{"b@dest.test"}, withAttachment("exe@test", "invoice.pdf", "application/pdf", fakePE()))
	if r != "550 5.7.1 Executables are not accepted here" {
		t.Fatalf("program attachment: %q", r)
	}
	pdf := []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, withAttachment("pdf@test", "invoice.pdf", "application/pdf", pdf)); !strings.HasPrefix(r, "250") {
		t.Fatalf("PDF attachment: %q", r)
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "pdf@test" {
		t.Fatalf("wrong message delivered")
	}
}

// TestPluginTimeout: a plugin that sleeps past its timeout gets the stage's
// on_error at the timeout. It sleeps for an hour: were the timeout not
// enforced, the reply would not come within the client's deadline.
func TestPluginTimeout(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+pluginStage("slow", testPluginBin, "300ms", "reject", `sleep = "1h"`))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	// The test plugin sleeps for senders called sleep@; MAIL is its first call.
	c.Cmd("MAIL FROM:<sleep@sender.test>", "250")
	if r := c.Cmd("RCPT TO:<b@dest.test>", "5"); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("on_error = reject gave %q", r)
	}
}

// pluginPIDs returns the processes running the executable at path.
func pluginPIDs(t *testing.T, path string) []int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}
