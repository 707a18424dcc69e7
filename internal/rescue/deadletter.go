package rescue

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
)

// DeadLetter describes a dead letter the persister makes itself for a raw
// stream entry.
type DeadLetter struct {
	// ID is the document's _id.
	ID string
	// Key is the entry's stream, parsed; Stream is its name as read.
	Key    keyspace.Key
	Stream string
	Msg    redis.XMessage
	// Defect is the one defect recorded.
	Defect message.Defect
	// Reason, then ": " and Error (valid UTF-8, bounded), is the reason
	// field; Error is also _system.error.
	Reason, Error string
	// Deliveries is the deliveries field; failedAt is Now.
	Deliveries int64
	Now        time.Time
}

// DeadLetter stores the fields of d's entry that would make the document
// too large in the bucket and returns the dead_letters document to insert,
// which keeps the other fields and references the stored ones.
func (w *Writer) DeadLetter(ctx context.Context, d DeadLetter) ([]byte, error) {
	e := entryDoc{
		coll: config.CollDeadLetters, id: d.ID, key: d.Key, entryID: d.Msg.ID,
		values: message.Fields(d.Msg.Values), defects: []message.Defect{d.Defect}, errText: d.Error,
		own: true, deliveries: d.Deliveries, now: d.Now, reason: d.Reason + ": " + safeString(d.Error),
	}
	if off := chooseOffload(e.values); len(off) > 0 {
		e.offloaded = map[string]BlobRef{}
		for _, name := range off {
			ref, err := w.blobs.put(ctx, d.Key.Tenant, fileID(config.CollDeadLetters, e.id, name), []byte(fmt.Sprint(e.values[name])), blobMeta{
				tenant: d.Key.Tenant, stream: d.Stream, streamID: d.Msg.ID, field: name, contentType: ContentField,
			}, d.Now)
			if err != nil {
				return nil, fmt.Errorf("store field %q of %s in the %s bucket: %w", name, d.Msg.ID, Bucket, err)
			}
			e.offloaded[name] = ref
		}
	}
	return e.build()
}
