package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/testenv"
)

// replica is one persister process; it can be killed and restarted. Its
// counters are kept over its incarnations (each as of its last scrape).
type replica struct {
	name    string
	bin     string
	env     []string
	addr    string // metrics/health address
	logPath string
	counts  *e2e.Counts[e2e.Counters]

	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	incarnation int
	// ended counts incarnations that ended.
	ended int
	// stopping is set while stop ends the incarnation; an exit without
	// it is one the nemesis did not cause, reported by onExit.
	stopping bool
	onExit   func(name string, incarnation int, state string)
}

func newReplica(name, bin, addr, logPath string, env map[string]string) *replica {
	rp := &replica{name: name, bin: bin, addr: addr, logPath: logPath,
		counts: e2e.NewCounts(addr, 2*time.Second, e2e.ParseCounters, e2e.Counters.Plus)}
	rp.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		rp.env = append(rp.env, k+"="+v)
	}
	return rp
}

// start launches a new incarnation.
func (rp *replica) start() error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.cmd != nil {
		return fmt.Errorf("%s already running", rp.name)
	}
	f, err := os.OpenFile(rp.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	rp.incarnation++
	fmt.Fprintf(f, "=== chaos: %s incarnation %d at %s\n", rp.name, rp.incarnation, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(rp.bin, "run")
	cmd.Env = rp.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := testenv.StartGroup(cmd); err != nil {
		return fmt.Errorf("start %s: %w", rp.name, err)
	}
	done := make(chan struct{})
	inc := rp.incarnation
	go func() {
		_ = cmd.Wait()
		rp.mu.Lock()
		unexpected := !rp.stopping
		rp.mu.Unlock()
		if unexpected && rp.onExit != nil {
			rp.onExit(rp.name, inc, cmd.ProcessState.String())
		}
		close(done)
	}()
	rp.cmd, rp.done, rp.stopping = cmd, done, false
	rp.counts.Started()
	return nil
}

// running reports whether an incarnation is up.
func (rp *replica) running() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.cmd != nil
}

// waitUp waits until the incarnation answers /healthz, at most timeout:
// a SIGTERM sent before the daemon has installed its signal handler (a
// fault drawn right after a restart) kills it by the signal's default
// action, which says nothing about how the daemon stops.
func (rp *replica) waitUp(timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < timeout {
		if code, _, err := rp.counts.Get(context.Background(), "/healthz"); err == nil && code == http.StatusOK {
			return time.Since(start), true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start), false
}

// stop ends the incarnation with sig and waits up to timeout (then
// SIGKILL); the last scrape is taken just before the signal (and, after
// SIGTERM, while it drains).
func (rp *replica) stop(sig syscall.Signal, timeout time.Duration) (exitCode int, err error) {
	rp.counts.Refresh()
	rp.mu.Lock()
	cmd, done := rp.cmd, rp.done
	rp.stopping = true
	rp.mu.Unlock()
	if cmd == nil {
		return 0, fmt.Errorf("%s is not running", rp.name)
	}
	_ = cmd.Process.Signal(sig)
	if sig == syscall.SIGTERM {
		// Keep scraping while it drains: its last acks are counted.
		tick := time.NewTicker(50 * time.Millisecond)
		deadline := time.After(timeout)
	wait:
		for {
			select {
			case <-done:
				break wait
			case <-tick.C:
				rp.counts.Refresh()
			case <-deadline:
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-done
				err = fmt.Errorf("%s did not exit within %s of SIGTERM", rp.name, timeout)
				break wait
			}
		}
		tick.Stop()
	} else {
		<-done
	}
	rp.counts.Stopped()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	exitCode = cmd.ProcessState.ExitCode()
	rp.ended++
	rp.cmd, rp.done = nil, nil
	return exitCode, err
}

// kill ends the incarnation at once (cleanup).
func (rp *replica) kill() {
	if rp.running() {
		_, _ = rp.stop(syscall.SIGKILL, 0)
	}
}
