// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"context"
	"slices"
	"sync"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/enrich"
	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// bmpStage is the RIB (a.rib) and the BMP station that fills it
// (a.station); both nil when agent.enrich.rib.bmp is off.
type bmpStage struct {
	a      *agent
	cancel context.CancelFunc
	served sync.WaitGroup
}

// newBMP binds the BMP listener.
func (a *agent) newBMP() (component, error) {
	c := a.cfg.Agent.Enrich.RIB.BMP
	if !c.Enabled() {
		return &bmpStage{a: a}, nil
	}
	sc, err := c.Station()
	if err != nil {
		return nil, err
	}
	r := rib.New(rib.Options{Keep: c.Keep.Duration})
	st, err := bmp.Listen(sc, r, a.log)
	if err != nil {
		r.Close()
		return nil, err
	}
	a.rib, a.station = r, st
	return &bmpStage{a: a}, nil
}

func (b *bmpStage) name() string { return "BMP station" }

func (b *bmpStage) start() error {
	a := b.a
	if a.station == nil {
		return nil
	}
	a.reg.MustRegister(a.rib, a.station)
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.served.Add(1)
	go func() {
		defer b.served.Done()
		if err := a.station.Serve(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("BMP station stopped", "err", err)
		}
	}()
	return nil
}

// reconfigure: the station's sessions and the RIB they filled would
// have to be rebuilt, so every BMP key takes a restart.
func (b *bmpStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	var rc reconfig
	if !bmpEqual(cur.Agent.Enrich.RIB.BMP, next.Agent.Enrich.RIB.BMP) {
		rc.needsRestart = []string{"agent.enrich.rib.bmp"}
		next.Agent.Enrich.RIB.BMP = cur.Agent.Enrich.RIB.BMP
	}
	return rc, nil
}

func bmpEqual(a, b config.BMP) bool {
	return a.Host == b.Host && a.Port == b.Port && a.Keep == b.Keep && slices.Equal(a.Allow, b.Allow) &&
		a.MaxSessions == b.MaxSessions && a.MaxMessageSize == b.MaxMessageSize &&
		slices.Equal(a.LabelVRFs, b.LabelVRFs) && a.MaxRoutesPerPeer == b.MaxRoutesPerPeer
}

func (b *bmpStage) stop() error {
	a := b.a
	if b.cancel != nil {
		b.cancel()
	}
	if a.station != nil {
		a.station.Close()
	}
	b.served.Wait()
	if a.rib != nil {
		a.rib.Close()
	}
	return nil
}

// enrichStage is the MMDB databases and the enricher (a.enricher) that
// labels flows from them and from the RIB.
type enrichStage struct{ a *agent }

func (a *agent) newEnrich() (component, error) {
	db, err := openMMDB(a.cfg.Agent.Enrich.MMDB)
	if err != nil {
		return nil, err
	}
	a.enricher = enrich.New(a.rib, db)
	return &enrichStage{a: a}, nil
}

func openMMDB(c config.MMDB) (*mmdb.DB, error) {
	if c.ASNDB == "" && c.CityDB == "" {
		return nil, nil
	}
	return mmdb.Open(c.ASNDB, c.CityDB)
}

func (e *enrichStage) name() string { return "enrichment" }
func (e *enrichStage) start() error { return nil }

func (e *enrichStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	if cur.Agent.Enrich.MMDB == next.Agent.Enrich.MMDB {
		// Same paths: pick up replaced files. Reopen swaps them in at
		// once, so a reload a later stage rejects keeps them.
		if db := e.a.enricher.DB(); db != nil {
			if err := db.Reopen(); err != nil {
				return reconfig{}, err
			}
		}
		return reconfig{}, nil
	}
	db, err := openMMDB(next.Agent.Enrich.MMDB)
	if err != nil {
		return reconfig{}, err
	}
	return reconfig{
		commit: func() []string {
			e.a.enricher.SetDB(db)
			return []string{"agent.enrich.mmdb"}
		},
		abort: func() {
			if db != nil {
				_ = db.Close()
			}
		},
	}, nil
}

// stop closes the databases in use. One that a reload replaced stays
// open: a lookup may have been using it.
func (e *enrichStage) stop() error {
	if e.a.enricher != nil {
		if db := e.a.enricher.DB(); db != nil {
			_ = db.Close()
		}
	}
	return nil
}
