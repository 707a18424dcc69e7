package chaos

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// reservePort returns a port free now on 127.0.0.1, below the kernel's
// ephemeral range (so no outgoing connection takes it while a replica or a
// proxy is down), locked the way internal/testenv locks its ports (an
// flock on a file in the system temp dir), so that tests running beside
// the soak do not pick it. release frees it.
func reservePort() (port int, release func(), err error) {
	dir := filepath.Join(os.TempDir(), "persister-testenv-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, nil, err
	}
	lo, hi := 15000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if eph, err := strconv.Atoi(f[0]); err == nil && eph > 12000 {
				hi, lo = eph, min(lo, eph-2000)
			}
		}
	}
	var lastErr error
	for range 200 {
		port := lo + rand.IntN(hi-lo) //nolint:gosec // a port number
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			lastErr = err
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			_ = f.Close()
			lastErr = err
			continue
		}
		_ = l.Close()
		return port, func() { _ = f.Close() }, nil
	}
	return 0, nil, fmt.Errorf("no free port below the ephemeral range: %w", lastErr)
}
