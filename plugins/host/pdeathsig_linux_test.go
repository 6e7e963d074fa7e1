package host

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestGatewayKilled kills a gateway stand-in with SIGKILL and expects the
// kernel to kill its plugin (Pdeathsig).
func TestGatewayKilled(t *testing.T) {
	gw := exec.Command(os.Args[0], "-test.run=^$")
	gw.Env = append(os.Environ(), helperEnv+"="+testPlugin)
	gw.Stderr = os.Stderr
	out, err := gw.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer gw.Wait()
	defer gw.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read plugin pid: %v", err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace([]byte(line))))
	if err != nil {
		t.Fatal(err)
	}
	if !alive(pid) {
		t.Fatalf("plugin %d not running", pid)
	}
	gw.Process.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d still running 30s after its gateway was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid runs. A killed orphan may stay a zombie until
// init reaps it; it counts as gone.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
