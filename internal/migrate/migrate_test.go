package migrate

import (
	"testing"

	"github.com/chronow/persister/internal/config"
)

func TestRetentionIndexes(t *testing.T) {
	got := RetentionIndexes(map[string]int{
		config.CollSharedMemory: 7, config.CollMessages: 30, config.CollDeadLetters: 90, config.CollTopics: 365, "bogus": 1,
	})
	want := []TTL{
		{Collection: config.CollMessages, Field: "firstSeenAt", Days: 30, ExpireAfterSeconds: 30 * 86400},
		{Collection: config.CollDeadLetters, Field: "failedAt", Days: 90, ExpireAfterSeconds: 90 * 86400},
		{Collection: config.CollTopics, Field: "_system.updatedAt", Days: 365, ExpireAfterSeconds: 365 * 86400},
		{Collection: config.CollSharedMemory, Field: "_system.expireAt", Days: 7, ExpireAfterSeconds: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d indexes, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("index %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(RetentionIndexes(nil)) != 0 {
		t.Error("no retention configured must mean no TTL index")
	}
}

func TestDecideTTL(t *testing.T) {
	ttl := TTL{Collection: config.CollMessages, Field: "firstSeenAt", Days: 30, ExpireAfterSeconds: 2592000}
	seed := indexInfo{keys: []string{"firstSeenAt"}} // the seed's {firstSeenAt: -1}, not TTL
	tests := []struct {
		name     string
		have     map[string]indexInfo
		want     ttlAction
		wantName string
	}{
		{"nothing yet", map[string]indexInfo{"firstSeenAt_-1": seed}, ttlCreate, RetentionIndexName},
		{"same period", map[string]indexInfo{"firstSeenAt_-1": seed, RetentionIndexName: {keys: []string{"firstSeenAt"}, ttl: true, expire: 2592000}}, ttlKeep, RetentionIndexName},
		{"period changed", map[string]indexInfo{RetentionIndexName: {keys: []string{"firstSeenAt"}, ttl: true, expire: 86400}}, ttlUpdate, RetentionIndexName},
		{"someone else's TTL index on the field", map[string]indexInfo{"by_hand": {keys: []string{"firstSeenAt"}, ttl: true, expire: 2592000}}, ttlKeep, "by_hand"},
		{"TTL on a compound index is not it", map[string]indexInfo{"c": {keys: []string{"topic", "firstSeenAt"}, ttl: true, expire: 1}}, ttlCreate, RetentionIndexName},
		{"our name on another field", map[string]indexInfo{RetentionIndexName: {keys: []string{"_system.createdAt"}, ttl: true, expire: 1}}, ttlConflict, RetentionIndexName},
	}
	for _, tt := range tests {
		got, name, _ := decideTTL(ttl, tt.have)
		if got != tt.want || name != tt.wantName {
			t.Errorf("%s: got action %d on %q, want %d on %q", tt.name, got, name, tt.want, tt.wantName)
		}
	}
}
