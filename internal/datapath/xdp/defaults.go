// SPDX-License-Identifier: AGPL-3.0-only

package xdp

// DefaultStateFile is where the live blocklist persists when
// agent.xdp.state_file is left out (systemd's StateDirectory=rfm).
const DefaultStateFile = "/var/lib/rfm/blocklist.json"
