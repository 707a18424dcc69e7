// Package promtext reads the samples of a Prometheus text exposition, for
// the tests and tools that check the persister's /metrics.
package promtext

import (
	"bufio"
	"strconv"
	"strings"
)

// Each calls fn with the series (name{labels}) and value of every sample in
// body. Comments, blank lines and lines without a number after their last
// space are skipped; the error is the scanner's (a line over 1 MiB).
func Each(body string, fn func(series string, v float64)) error {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		fn(line[:i], v)
	}
	return sc.Err()
}

// Sum returns the sum of the samples of the metric family and whether body
// has any.
func Sum(body, family string) (sum float64, found bool) {
	_ = Each(body, func(series string, v float64) {
		if series == family || strings.HasPrefix(series, family+"{") {
			sum, found = sum+v, true
		}
	})
	return sum, found
}
