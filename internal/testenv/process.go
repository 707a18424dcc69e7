package testenv

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// StartGroup starts cmd in its own process group (so that a kill of -pid
// reaches its children too), SIGKILLed if this process dies (Pdeathsig).
// Pdeathsig fires when the thread that forked exits, so the fork happens on
// a locked thread (Go never exits an unlocked one).
func StartGroup(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}

// PersisterCommand returns the command `bin run` whose environment is env
// plus PATH and HOME (nothing else of this process's).
func PersisterCommand(bin string, env map[string]string) *exec.Cmd {
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}
