package rescue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Bucket is the GridFS bucket, in each tenant's database, that holds the raw
// bytes of what could not be stored in a document: collections
// raw_entries.files and raw_entries.chunks. Any GridFS client reads it
// (mongofiles --prefix raw_entries get_id '"<fileId>"', or the drivers'
// GridFS bucket named "raw_entries").
const Bucket = "raw_entries"

// ChunkSize is the GridFS chunk size (the GridFS default).
const ChunkSize = 255 * 1024

// chunksPerInsert bounds one insert of chunks to about 1 MiB, so each
// insert is quick even on a slow server and a retry after a timeout starts
// where the last one left off (chunks already stored are duplicates).
const chunksPerInsert = 4

// Content types of stored blobs.
const (
	// ContentField is one field of a stream entry, its bytes exactly as
	// Redis held them (for payload: the JSON text; its SHA-256 is the
	// entry's hash field).
	ContentField = "application/x-redis-field"
	// ContentBSON is a document the server refused, exactly as built.
	ContentBSON = "application/bson"
)

// BlobRef points at stored bytes; it is kept in the document they were
// taken from, under _system.offloaded.<field>.
type BlobRef struct {
	FileID string
	Length int64
	SHA256 string
}

// blobMeta describes a blob in its files document.
type blobMeta struct {
	tenant, stream, streamID, field, contentType string
}

// blobs writes GridFS files with deterministic ids: the files document's _id
// is the file id, chunk i has _id "<fileId>/<i>". Writing the same bytes
// again finds every document already there, so a redelivered entry changes
// nothing. The files document is written last: when it exists, every chunk
// does.
type blobs struct {
	w   writer
	log *slog.Logger

	mu      sync.Mutex
	indexed map[string]bool // tenants whose bucket indexes exist
}

// fileID names the blob of one field of the document docID in collection
// coll; documents of different collections may share an _id.
func fileID(coll, docID, field string) string {
	return coll + "/" + docID + "/" + field
}

// put stores data as the GridFS file id and returns its reference.
func (b *blobs) put(ctx context.Context, tenant, id string, data []byte, meta blobMeta, now time.Time) (BlobRef, error) {
	b.ensureIndexes(ctx, tenant)
	sum := sha256.Sum256(data)
	ref := BlobRef{FileID: id, Length: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	var docs [][]byte
	flush := func() error {
		if len(docs) == 0 {
			return nil
		}
		err := b.w.insert(ctx, tenant, Bucket+".chunks", docs)
		docs = docs[:0]
		return err
	}
	for n, off := 0, 0; off < len(data); n, off = n+1, off+ChunkSize {
		end := min(off+ChunkSize, len(data))
		idx, d := bsoncore.AppendDocumentStart(nil)
		d = bsoncore.AppendStringElement(d, "_id", id+"/"+strconv.Itoa(n))
		d = bsoncore.AppendStringElement(d, "files_id", id)
		d = bsoncore.AppendInt32Element(d, "n", int32(n))
		d = bsoncore.AppendBinaryElement(d, "data", 0, data[off:end])
		d, _ = bsoncore.AppendDocumentEnd(d, idx)
		docs = append(docs, d)
		if len(docs) == chunksPerInsert {
			if err := flush(); err != nil {
				return BlobRef{}, err
			}
		}
	}
	if err := flush(); err != nil {
		return BlobRef{}, err
	}
	idx, d := bsoncore.AppendDocumentStart(nil)
	d = bsoncore.AppendStringElement(d, "_id", id)
	d = bsoncore.AppendInt64Element(d, "length", ref.Length)
	d = bsoncore.AppendInt32Element(d, "chunkSize", ChunkSize)
	d = bsoncore.AppendDateTimeElement(d, "uploadDate", now.UnixMilli())
	d = bsoncore.AppendStringElement(d, "filename", id)
	midx, d := bsoncore.AppendDocumentElementStart(d, "metadata")
	d = bsoncore.AppendStringElement(d, "tenantId", meta.tenant)
	d = bsoncore.AppendStringElement(d, "stream", meta.stream)
	d = bsoncore.AppendStringElement(d, "streamId", meta.streamID)
	d = bsoncore.AppendStringElement(d, "field", meta.field)
	d = bsoncore.AppendStringElement(d, "contentType", meta.contentType)
	d = bsoncore.AppendStringElement(d, "sha256", ref.SHA256)
	d, _ = bsoncore.AppendDocumentEnd(d, midx)
	d, _ = bsoncore.AppendDocumentEnd(d, idx)
	if err := b.w.insert(ctx, tenant, Bucket+".files", [][]byte{d}); err != nil {
		return BlobRef{}, err
	}
	return ref, nil
}

// ensureIndexes creates the two standard GridFS indexes once per tenant and
// process. They serve readers; writing is correct without them, so a
// failure is only logged (and tried again next time).
func (b *blobs) ensureIndexes(ctx context.Context, tenant string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.indexed[tenant] {
		return
	}
	db, err := b.w.store.Database(tenant)
	if err != nil {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, b.w.timeout)
	defer cancel()
	_, err = db.Collection(Bucket+".chunks").Indexes().CreateOne(ictx, mongo.IndexModel{
		Keys: bson.D{{Key: "files_id", Value: 1}, {Key: "n", Value: 1}}, Options: options.Index().SetUnique(true),
	})
	if err == nil {
		_, err = db.Collection(Bucket+".files").Indexes().CreateOne(ictx, mongo.IndexModel{
			Keys: bson.D{{Key: "filename", Value: 1}, {Key: "uploadDate", Value: 1}},
		})
	}
	if err != nil {
		b.log.Warn("creating the GridFS indexes of the raw_entries bucket failed; will try again", "tenant", tenant, "err", err)
		return
	}
	if b.indexed == nil {
		b.indexed = map[string]bool{}
	}
	b.indexed[tenant] = true
}

// appendRef appends a BlobRef as a sub-document.
func appendRef(dst []byte, name string, r BlobRef) []byte {
	idx, d := bsoncore.AppendDocumentElementStart(dst, name)
	d = bsoncore.AppendStringElement(d, "bucket", Bucket)
	d = bsoncore.AppendStringElement(d, "fileId", r.FileID)
	d = bsoncore.AppendInt64Element(d, "length", r.Length)
	d = bsoncore.AppendStringElement(d, "sha256", r.SHA256)
	dst, _ = bsoncore.AppendDocumentEnd(d, idx)
	return dst
}
