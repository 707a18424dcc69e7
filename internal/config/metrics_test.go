package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMetricsSettings(t *testing.T) {
	c, err := load(t, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Persister.MetricsInterval != 10*time.Second || c.Persister.MetricsTopStreams != 0 {
		t.Errorf("defaults = %v / %d, want 10s / 0", c.Persister.MetricsInterval, c.Persister.MetricsTopStreams)
	}
	checkEnvCases(t, []envCase{
		{map[string]string{"PERSISTER_METRICS_INTERVAL": "1s", "PERSISTER_METRICS_TOP_STREAMS": "50"}, ""},
		{map[string]string{"PERSISTER_METRICS_TOP_STREAMS": "1000"}, ""},
		{map[string]string{"PERSISTER_METRICS_INTERVAL": "0s"}, "PERSISTER_METRICS_INTERVAL"},
		{map[string]string{"PERSISTER_METRICS_INTERVAL": "-5s"}, "PERSISTER_METRICS_INTERVAL"},
		{map[string]string{"PERSISTER_METRICS_TOP_STREAMS": "-1"}, "PERSISTER_METRICS_TOP_STREAMS"},
		{map[string]string{"PERSISTER_METRICS_TOP_STREAMS": "1001"}, "PERSISTER_METRICS_TOP_STREAMS"},
	})
}

// envCase is an environment and the variable its error must name ("" =
// valid).
type envCase struct {
	env     map[string]string
	wantErr string
}

// checkEnvCases loads each environment and checks it is valid, or fails
// with ErrInvalid naming the variable.
func checkEnvCases(t *testing.T, cases []envCase) {
	t.Helper()
	for _, tc := range cases {
		_, err := load(t, tc.env)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: got %v, want valid", tc.env, err)
		case tc.wantErr != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: got %v, want ErrInvalid naming %s", tc.env, err, tc.wantErr)
		}
	}
}
