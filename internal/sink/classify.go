package sink

import (
	"context"
	"errors"
	"strings"

	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/metrics"
)

// Class is what a write error means for the entry (or batch) it hit.
type Class int

// The error classes, from harmless to fatal.
const (
	// ClassNone means no error: the document was inserted.
	ClassNone Class = iota
	// ClassDuplicate means the document already exists: stored.
	ClassDuplicate
	// ClassRetryable means try again later: network, timeouts, elections,
	// write-concern timeouts, retryable labels.
	ClassRetryable
	// ClassPermanent means this document can never be written as it is.
	ClassPermanent
	// ClassFatal means nothing of this tenant can be written until an
	// operator acts: authentication or authorization failures.
	ClassFatal
)

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassDuplicate:
		return "duplicate"
	case ClassRetryable:
		return metrics.ClassRetryable
	case ClassPermanent:
		return metrics.ClassPermanent
	case ClassFatal:
		return metrics.ClassFatal
	}
	return "unknown"
}

// Server error codes that decide a class.
const (
	codeBadValue                = 2
	codeUnauthorized            = 13
	codeAuthenticationFailed    = 18
	codeWriteConcernTimeout     = 64
	codeDuplicateKey            = 11000
	codeDuplicateKeyLegacy      = 11001
	codeDollarPrefixedFieldName = 52
	codeBSONObjectTooLarge      = 10334
	codeKeyTooLong              = 17280
	codeInvalidBSON             = 22
	codeDocumentValidation      = 121
	codeInvalidLength           = 16
	codeEmptyFieldName          = 56
)

// ClassifyCode classifies one per-document write error by its code.
func ClassifyCode(code int, msg string) Class {
	switch code {
	case codeDuplicateKey, codeDuplicateKeyLegacy:
		return ClassDuplicate
	case codeBadValue, codeDollarPrefixedFieldName, codeBSONObjectTooLarge, codeKeyTooLong,
		codeInvalidBSON, codeDocumentValidation, codeInvalidLength, codeEmptyFieldName:
		return ClassPermanent
	case codeUnauthorized, codeAuthenticationFailed:
		return ClassFatal
	case codeWriteConcernTimeout:
		return ClassRetryable
	}
	if strings.Contains(strings.ToLower(msg), "duplicate key") {
		return ClassDuplicate
	}
	return ClassRetryable
}

// Classify classifies a command-level error (the whole call failed).
// Everything that is not fatal is retryable: the outcome of the batch is
// unknown and the write is idempotent.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	if errors.Is(err, context.Canceled) {
		return ClassRetryable
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		if se.HasErrorCode(codeUnauthorized) || se.HasErrorCode(codeAuthenticationFailed) {
			return ClassFatal
		}
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) && (ce.Code == codeUnauthorized || ce.Code == codeAuthenticationFailed) {
		return ClassFatal
	}
	lower := strings.ToLower(err.Error())
	if strings.Contains(lower, "authentication failed") || strings.Contains(lower, "unable to authenticate") {
		return ClassFatal
	}
	return ClassRetryable
}
