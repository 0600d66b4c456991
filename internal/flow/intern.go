// SPDX-License-Identifier: AGPL-3.0-only

package flow

import "strings"

// cityTable interns city names so a flow stores a 4-byte id instead of a
// string header (which would be a pointer for the GC to scan in every
// arena entry). Cities are few, so ids are never freed. Id 0 is the
// empty name ("unknown"). Not safe for concurrent use: the Table calls it
// under its lock.
type cityTable struct {
	ids   map[string]uint32
	names []string
}

func newCityTable() *cityTable {
	return &cityTable{ids: map[string]uint32{}, names: []string{""}}
}

// id returns the id of name, assigning the next one on first sight.
func (c *cityTable) id(name string) uint32 {
	if name == "" {
		return 0
	}
	if id, ok := c.ids[name]; ok {
		return id
	}
	// The enricher may hand out a substring of a large decode buffer;
	// a private copy keeps that buffer from being pinned forever.
	name = strings.Clone(name)
	id := uint32(len(c.names))
	c.names = append(c.names, name)
	c.ids[name] = id
	return id
}

// name returns the city name for id ("" for 0 or an unknown id).
func (c *cityTable) name(id uint32) string {
	if int(id) >= len(c.names) {
		return ""
	}
	return c.names[id]
}
