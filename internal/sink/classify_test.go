package sink

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/mongo"
)

func TestClassifyCode(t *testing.T) {
	for _, tc := range []struct {
		code int
		msg  string
		want Class
	}{
		{11000, "E11000 duplicate key error", ClassDuplicate},
		{11001, "", ClassDuplicate},
		{0, "Duplicate Key on _id", ClassDuplicate},
		{2, "bad value", ClassPermanent},
		{52, "$-prefixed field", ClassPermanent},
		{10334, "object too large", ClassPermanent},
		{13, "not authorized", ClassFatal},
		{18, "auth failed", ClassFatal},
		{64, "waiting for replication timed out", ClassRetryable},
		{91, "shutdown in progress", ClassRetryable},
		{0, "something else", ClassRetryable},
	} {
		if got := ClassifyCode(tc.code, tc.msg); got != tc.want {
			t.Errorf("ClassifyCode(%d, %q) = %v, want %v", tc.code, tc.msg, got, tc.want)
		}
	}
}

func TestClassifyCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, ClassNone},
		{"timeout", fmt.Errorf("insert: %w", context.DeadlineExceeded), ClassRetryable},
		{"cancelled", context.Canceled, ClassRetryable},
		{"network", errors.New("connection() error occurred during connection handshake: dial tcp: connection refused"), ClassRetryable},
		{"unauthorized command", mongo.CommandError{Code: 13, Message: "not authorized on db"}, ClassFatal},
		{"auth failed command", fmt.Errorf("wrapped: %w", mongo.CommandError{Code: 18}), ClassFatal},
		{"handshake auth", errors.New("auth error: sasl conversation error: unable to authenticate using mechanism \"SCRAM-SHA-256\""), ClassFatal},
		{"write concern timeout", mongo.WriteException{WriteConcernError: &mongo.WriteConcernError{Code: 64}}, ClassRetryable},
		{"retryable label", mongo.CommandError{Code: 189, Labels: []string{"RetryableWriteError"}}, ClassRetryable},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
