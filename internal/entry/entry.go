// Package entry turns a stream entry of any consumed kind into the item the
// batcher stores; the daemon and the replay tool decode through it alike.
package entry

import (
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
)

// Decoder turns one stream entry into the item to store. Defects are what
// was wrong with the entry (it is stored anyway). An error means no document
// can be built at all (e.g. message.ErrTooLarge).
type Decoder interface {
	Decode(key keyspace.Key, msg redis.XMessage, now time.Time) (batch.Item, []message.Defect, error)
}

// Decoders returns the decoder of every stream kind the persister consumes.
func Decoders() map[keyspace.Kind]Decoder {
	return map[keyspace.Kind]Decoder{
		keyspace.KindTopic: NewTopic(),
		keyspace.KindDLQ:   DeadLetter{},
	}
}

// Topic decodes topic entries into messages documents. It is safe for
// concurrent use. The zero value works; NewTopic's reuses work buffers.
type Topic struct {
	builders *sync.Pool // of *message.Builder
}

// NewTopic returns a Topic decoder that recycles its builders' buffers.
func NewTopic() Topic {
	return Topic{builders: &sync.Pool{New: func() any { return new(message.Builder) }}}
}

// Decode implements Decoder.
func (tp Topic) Decode(key keyspace.Key, msg redis.XMessage, now time.Time) (batch.Item, []message.Defect, error) {
	var b *message.Builder
	if tp.builders != nil {
		b = tp.builders.Get().(*message.Builder)
		defer tp.builders.Put(b)
	} else {
		b = new(message.Builder)
	}
	doc, err := b.Topic(key, msg.ID, msg.Values, now)
	return item(key, msg.ID, config.CollMessages, doc, err)
}

// DeadLetter decodes Chronow's dead-letter entries into dead_letters
// documents (dlq.Build).
type DeadLetter struct{}

// Decode implements Decoder.
func (DeadLetter) Decode(key keyspace.Key, msg redis.XMessage, now time.Time) (batch.Item, []message.Defect, error) {
	doc, err := dlq.Build(key, msg.ID, msg.Values, now)
	return item(key, msg.ID, config.CollDeadLetters, doc, err)
}

// item is the item of the document built for the entry id of the stream
// key, or build's error.
func item(key keyspace.Key, id, coll string, doc message.Doc, err error) (batch.Item, []message.Defect, error) {
	if err != nil {
		return batch.Item{}, doc.Defects, err
	}
	t, _ := message.IDTime(id)
	return batch.Item{
		Stream: key.String(), ID: id, Kind: string(key.Kind),
		Collection: coll, Doc: doc.Raw, Time: t,
	}, doc.Defects, nil
}
