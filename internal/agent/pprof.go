// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
)

// pprofEnv names the environment variable that, set to 1, serves the Go
// runtime's profiles under /debug/pprof/ on the metrics listener (with
// its TLS and basic auth, if any). Off by default: a heap or CPU profile
// reveals internals and costs CPU while it runs, so it is a diagnostic
// for whoever starts the agent, not something a reload can turn on.
const pprofEnv = "RFM_PPROF"

func pprofEnabled() bool { return os.Getenv(pprofEnv) == "1" }

// Linking net/http/pprof links the heap profiler, which the runtime then
// runs in every process: it samples allocations and keeps a record of
// every sampled call stack for good (off-heap memory that only grows).
// A binary without it has the profiler switched off by the linker;
// without RFM_PPROF=1 this switches it off as early as a package can.
func init() {
	if !pprofEnabled() {
		runtime.MemProfileRate = 0
	}
}

// handlePprof adds the profile endpoints to mux. net/http/pprof also
// registers them on http.DefaultServeMux when imported; the agent never
// serves that mux, so only this one exposes them.
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
