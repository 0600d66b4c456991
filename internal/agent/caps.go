// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/internal/config"
)

// Capabilities the running agent keeps, and why:
//   - CAP_BPF: load a program pair for each interface attached later
//     (hotplug, reload) and read the BPF maps;
//   - CAP_NET_ADMIN: attach and detach TCX programs (networking program
//     types also need it to load);
//   - CAP_PERFMON: kept so loading programs behaves the same as at start
//     on kernels that gate BPF helpers or pointer handling on it;
//   - CAP_NET_BIND_SERVICE: only when a configured listen port is below
//     1024.
//
// Everything else (CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, CAP_SETUID, ...) is
// dropped from the effective, permitted, inheritable, ambient and
// bounding sets of every thread, and no_new_privs is set, so neither
// the agent nor anything it could be tricked into executing regains them.
var keptCapabilities = []uintptr{unix.CAP_BPF, unix.CAP_NET_ADMIN, unix.CAP_PERFMON}

// dropCapabilities applies the above. A process without CAP_SETPCAP in
// its effective set (already unprivileged) only loses what it has.
func dropCapabilities(cfg *config.Config) error {
	err := dropCapabilitiesAllThreads(cfg)
	if errors.Is(err, unix.ENOTSUP) {
		// syscall.AllThreadsSyscall refuses in a binary linked with cgo.
		return fmt.Errorf("%w (this binary was built with cgo; build it with CGO_ENABLED=0)", err)
	}
	return err
}

func dropCapabilitiesAllThreads(cfg *config.Config) error {
	keep := uint64(0)
	for _, c := range keptCapabilities {
		keep |= 1 << c
	}
	if lowPort(cfg) {
		keep |= 1 << unix.CAP_NET_BIND_SERVICE
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	eff := uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	perm := uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	if eff&^keep == 0 && perm&^keep == 0 {
		return nil // nothing to drop
	}
	last := lastCapability()
	if eff&(1<<unix.CAP_SETPCAP) != 0 {
		for c := uintptr(0); c <= last; c++ {
			if keep&(1<<c) != 0 {
				continue
			}
			if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); errno != 0 {
				return fmt.Errorf("drop capability %d from the bounding set: %w", c, errno)
			}
		}
	}
	if _, _, errno := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("clear ambient capabilities: %w", errno)
	}
	if _, _, errno := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("set no_new_privs: %w", errno)
	}
	for i := range data {
		k := uint32(keep >> (32 * i))
		data[i].Effective &= k
		data[i].Permitted &= k
		data[i].Inheritable = 0
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	return nil
}

// lowPort reports whether a configured listen port needs
// CAP_NET_BIND_SERVICE.
func lowPort(cfg *config.Config) bool {
	a := cfg.Agent
	for _, p := range []int{a.Prometheus.Port, a.Enrich.RIB.BMP.Port, a.IPFIX.Bind.Port} {
		if p > 0 && p < 1024 {
			return true
		}
	}
	return false
}

// lastCapability is the highest capability this kernel knows.
func lastCapability() uintptr {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 && n < 64 {
			return uintptr(n)
		}
	}
	return unix.CAP_LAST_CAP
}

// privilegesStage drops the capabilities the agent no longer needs
// once the stages before it have started (unless KeepCapabilities):
// the stages after it serve requests with only those keptCapabilities.
type privilegesStage struct {
	a *agent
	noReconfig
}

func (a *agent) newPrivileges() (component, error) { return &privilegesStage{a: a}, nil }

func (p *privilegesStage) name() string { return "capabilities" }

func (p *privilegesStage) start() error {
	if !p.a.keepCaps {
		if err := dropCapabilities(p.a.cfg); err != nil {
			p.a.log.Warn("could not drop capabilities; running with those it was started with", "err", err)
		}
	}
	return nil
}

func (p *privilegesStage) stop() error { return nil }
