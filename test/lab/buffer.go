// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"bytes"
	"sync"
)

// Buffer collects output from concurrent writers (a child process, a
// logger) while a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
