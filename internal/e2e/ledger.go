package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
)

// Record is one published topic entry.
type Record struct {
	Msg publisher.Message
	ID  string
}

// DocID is the _id the persister gives the entry's document.
func (r Record) DocID() string { return message.Identity(r.Msg.Namespace, r.Msg.Topic, r.ID) }

// Ledger records every id Redis returned to the producer.
type Ledger struct {
	mu      sync.Mutex
	records []Record
}

// Add records published entries.
func (l *Ledger) Add(ms []publisher.Message, ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range ms {
		l.records = append(l.records, Record{Msg: ms[i], ID: ids[i]})
	}
}

// Publish publishes ms in one batch through p and records what Redis
// accepted.
func (l *Ledger) Publish(ctx context.Context, p *publisher.Publisher, ms []publisher.Message) error {
	ids, err := p.PublishBatch(ctx, ms)
	if err != nil {
		return err
	}
	l.Add(ms, ids)
	return nil
}

// Records returns a copy of the records.
func (l *Ledger) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Record(nil), l.records...)
}

// Len returns the number of records.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// Report is what Verify found.
type Report struct {
	Expected    int
	Stored      int
	Missing     []string // doc ids of ledger entries not stored
	Unexpected  []string // tenant/doc ids stored but not in the ledger
	CrossTenant []string // docs whose tenantId is not their database's tenant
}

// OK reports whether every ledger entry is stored once, and nothing else.
func (r Report) OK() bool {
	return r.Stored == r.Expected && len(r.Missing) == 0 && len(r.Unexpected) == 0 && len(r.CrossTenant) == 0
}

func (r Report) String() string {
	clip := func(s []string) string {
		if len(s) > 5 {
			return fmt.Sprintf("%v... (%d)", s[:5], len(s))
		}
		return fmt.Sprint(s)
	}
	return fmt.Sprintf("expected %d, stored %d, missing %s, unexpected %s, cross-tenant %s",
		r.Expected, r.Stored, clip(r.Missing), clip(r.Unexpected), clip(r.CrossTenant))
}

// Verify compares the ledger with the messages collections of tenants. A
// document _id is unique per collection, so "stored once" is checked by the
// _id set matching the ledger exactly (the daemon never writes random ids).
func Verify(ctx context.Context, t testing.TB, mc *mongo.Client, l *Ledger, tenants []string) Report {
	t.Helper()
	rep, err := VerifyOnce(ctx, mc, l, tenants)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// VerifyOnce is Verify returning its error. It reads each collection in one
// batch (FerretDB's cursors are bound to a connection), so a caller may
// retry it after a server restart.
func VerifyOnce(ctx context.Context, mc *mongo.Client, l *Ledger, tenants []string) (Report, error) {
	want := map[string]map[string]bool{}
	var rep Report
	for _, rec := range l.Records() {
		if want[rec.Msg.Tenant] == nil {
			want[rec.Msg.Tenant] = map[string]bool{}
		}
		if !want[rec.Msg.Tenant][rec.DocID()] {
			rep.Expected++
		}
		want[rec.Msg.Tenant][rec.DocID()] = true
	}
	for _, tenant := range tenants {
		cur, err := mc.Database(DBName(tenant)).Collection("messages").Find(ctx, bson.D{},
			options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "tenantId", Value: 1}}).SetBatchSize(100000))
		if err != nil {
			return rep, fmt.Errorf("find in %s: %w", DBName(tenant), err)
		}
		var docs []struct {
			ID       string `bson:"_id"`
			TenantID string `bson:"tenantId"`
		}
		if err := cur.All(ctx, &docs); err != nil {
			return rep, fmt.Errorf("read %s: %w", DBName(tenant), err)
		}
		seen := map[string]bool{}
		for _, d := range docs {
			if d.TenantID != tenant {
				rep.CrossTenant = append(rep.CrossTenant, tenant+"/"+d.ID)
			}
			if want[tenant][d.ID] {
				rep.Stored++
				seen[d.ID] = true
			} else {
				rep.Unexpected = append(rep.Unexpected, tenant+"/"+d.ID)
			}
		}
		for id := range want[tenant] {
			if !seen[id] {
				rep.Missing = append(rep.Missing, tenant+"/"+id)
			}
		}
	}
	sort.Strings(rep.Missing)
	sort.Strings(rep.Unexpected)
	return rep, nil
}

// CountStored counts documents in a tenant's messages collection.
func CountStored(ctx context.Context, t testing.TB, mc *mongo.Client, tenant string) int64 {
	t.Helper()
	n, err := mc.Database(DBName(tenant)).Collection("messages").CountDocuments(ctx, bson.D{})
	if err != nil && !strings.Contains(err.Error(), "does not exist") {
		t.Logf("count %s: %v", tenant, err)
	}
	return n
}

// Spread places a workload's messages round robin over its streams: message
// k goes to tenant k mod len(Tenants), namespace k/len(Tenants) mod
// len(Namespaces), topic k/(len(Tenants)·len(Namespaces)) mod len(Topics).
type Spread struct {
	Tenants, Namespaces, Topics []string
}

// Message returns message k with payload and a traceId header.
func (s Spread) Message(k int, payload, traceID string) publisher.Message {
	nt, nn := len(s.Tenants), len(s.Namespaces)
	return publisher.Message{
		Tenant:    s.Tenants[k%nt],
		Namespace: s.Namespaces[(k/nt)%nn],
		Topic:     s.Topics[(k/(nt*nn))%len(s.Topics)],
		Payload:   payload,
		Headers:   map[string]string{"traceId": traceID},
	}
}
