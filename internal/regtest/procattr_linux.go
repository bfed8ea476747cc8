package regtest

import "syscall"

// sysProcAttr has the kernel kill the registry if the test binary dies
// (a panic, a -timeout) before its cleanup could stop it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
