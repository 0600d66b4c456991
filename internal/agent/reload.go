// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/control"
)

// reload re-reads the config file and applies what changed: every
// component prepares its part (the steps that can fail: opening MMDB
// files, resolving the collector, binding the metrics port) and only
// when all could does any of it take effect; a rejected reload changes
// nothing.
func (a *agent) reload() (control.ReloadResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next, err := config.Load(a.configPath)
	if err != nil {
		return control.ReloadResult{}, err
	}
	if err := config.ValidateFiles(next); err != nil {
		var e *config.Error
		if errors.As(err, &e) {
			e.Source = a.configPath
		}
		return control.ReloadResult{}, err
	}
	res, err := a.reconfigureComponents(a.cfg, next)
	if err != nil {
		return res, err
	}
	a.cfg = next
	return res, nil
}

func (a *agent) logReload(applied, restart []string) {
	if len(applied) == 0 && len(restart) == 0 {
		a.log.Info("reloaded: no changes", "config", a.configPath)
	} else {
		a.log.Info("reloaded", "config", a.configPath, "applied", applied)
	}
	if len(restart) > 0 {
		a.log.Warn("reload: these keys changed but take effect only after a restart", "keys", restart)
	}
}
