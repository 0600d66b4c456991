// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import "math"

// failureProbability is the chance a correct datapath fails one
// statistical check of this package. The package makes 10 such checks
// (8 in TestTCPOffloadsOn at rate 10, 2 in TestSampleRateChangeUnderLoad),
// so a correct datapath fails a run with probability below 1e-6.
const failureProbability = 1e-7

// samplingBound is how far a 1-in-rate estimate may stray from the truth
// with probability below failureProbability.
//
// The datapath draws once per skb: skb i carries a_i units (segments or
// bytes) and adds rate*a_i with probability 1/rate. The error is a sum of
// independent zero-mean terms Y_i = a_i*(rate*X_i - 1), |Y_i| <= (rate-1)*a_i
// <= (rate-1)*maxUnit =: M, with variance sum a_i^2*(rate-1) <=
// (rate-1)*maxUnit*total =: V. Bernstein's inequality gives
// P(|sum Y_i| >= t) <= 2 exp(-t^2 / (2(V + M t/3))); solving for t with
// L = ln(2/p) gives t = L*M/3 + sqrt((L*M/3)^2 + 2*L*V).
func samplingBound(rate int, total, maxUnit float64) float64 {
	if rate <= 1 {
		return 0
	}
	r := float64(rate - 1)
	l := math.Log(2 / failureProbability)
	m := r * maxUnit
	v := r * maxUnit * total
	return l*m/3 + math.Sqrt(l*m/3*l*m/3+2*l*v)
}
