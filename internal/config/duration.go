// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"fmt"
	"time"
)

// MarshalText writes the duration as a Go duration string ("30s", "5m0s").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}

// UnmarshalText reads a Go duration string such as "30s" or "1m30s".
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("parsing duration %q: %w", text, err)
	}
	d.Duration = v
	return nil
}
