// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"
	"slices"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/control"
)

// component is one stage of the agent. Every stage goes through the
// same lifecycle, driven by the loops below over the ordered list that
// stages returns:
//
//  1. construct (its newXxx function): read its config, open files and
//     bind sockets; nothing touches the kernel or runs yet, so a bad
//     file or a busy port stops the agent before anything is attached;
//  2. start, in list order: a component may use what the components
//     before it publish in agent fields (a.dp, a.table, a.enricher, ...);
//  3. reconfigure at each reload, in list order, then commit or abort;
//  4. stop, in reverse order, also after a failed or partial start.
type component interface {
	name() string
	start() error
	// reconfigure prepares the change from cur to next: every step that
	// can fail runs here, and on error the component has undone its own
	// steps. Nothing another component or the outside sees may change
	// before commit, except what abort can take back.
	reconfigure(cur, next *config.Config) (reconfig, error)
	// stop releases what the component holds. Its error makes the
	// shutdown fail (exit status); what only deserves a warning is
	// logged instead.
	stop() error
}

// reconfig is one component's prepared part of a reload.
type reconfig struct {
	// needsRestart names the keys that changed but take effect only
	// after a restart; reconfigure has put their running values back
	// into next, so the next reload compares against what is in effect.
	needsRestart []string
	// commit applies the change and returns the keys it applied. It
	// cannot fail: what can fail ran in reconfigure. nil: no change.
	commit func() (applied []string)
	// abort undoes reconfigure when a later component rejects the
	// reload. nil: nothing to undo.
	abort func()
}

// stages constructs the agent's components in start order. To add a
// stage, write its component and append its constructor where its
// dependencies are (see docs/design.md, "Components").
func (a *agent) stages() []func() (component, error) {
	return []func() (component, error){
		a.newBMP,          // RIB and BMP station
		a.newEnrich,       // MMDB databases and the enricher
		a.newDatapath,     // BPF programs and maps
		a.newIPFIX,        // IPFIX exporter
		a.newSampling,     // the live sample rate
		a.newFlowTable,    // flow table, its reader and sweeper
		a.newCollector,    // Prometheus collector
		a.newInterfaces,   // attached interfaces and hotplug
		a.newPrivileges,   // drop capabilities caps.go does not keep
		a.newMetrics,      // metrics HTTP listener
		a.newControlStage, // control socket
	}
}

// startComponents constructs every component of stages, then starts
// them in order. On error the components constructed so far stay in
// a.components for stopComponents to release.
func (a *agent) startComponents(stages []func() (component, error)) error {
	for _, construct := range stages {
		c, err := construct()
		if err != nil {
			return err
		}
		a.components = append(a.components, c)
	}
	for _, c := range a.components {
		if err := c.start(); err != nil {
			return err
		}
		a.log.Debug("started", "component", c.name())
	}
	return nil
}

// stopComponents stops every component in reverse order, once.
func (a *agent) stopComponents() error {
	var errs []error
	for _, c := range slices.Backward(a.components) {
		if err := c.stop(); err != nil {
			errs = append(errs, err)
		}
		a.log.Debug("stopped", "component", c.name())
	}
	a.components = nil
	return errors.Join(errs...)
}

// reconfigureComponents asks every component to prepare the change to
// next and commits only when all of them could: a rejected reload
// changes nothing.
func (a *agent) reconfigureComponents(cur, next *config.Config) (control.ReloadResult, error) {
	prepared := make([]reconfig, 0, len(a.components))
	for _, c := range a.components {
		rc, err := c.reconfigure(cur, next)
		if err != nil {
			for _, p := range slices.Backward(prepared) {
				if p.abort != nil {
					p.abort()
				}
			}
			return control.ReloadResult{}, err
		}
		prepared = append(prepared, rc)
	}
	var res control.ReloadResult
	for _, p := range prepared {
		if p.commit != nil {
			res.Applied = append(res.Applied, p.commit()...)
		}
		res.NeedsRestart = append(res.NeedsRestart, p.needsRestart...)
	}
	slices.Sort(res.Applied)
	slices.Sort(res.NeedsRestart)
	return res, nil
}

// keyChanges collects the keys a reconfigure finds changed.
type keyChanges []string

// add records key when differs and returns differs.
func (k *keyChanges) add(key string, differs bool) bool {
	if differs {
		*k = append(*k, key)
	}
	return differs
}

// noReconfig is the reconfigure of a component without live settings.
type noReconfig struct{}

func (noReconfig) reconfigure(cur, next *config.Config) (reconfig, error) { return reconfig{}, nil }
