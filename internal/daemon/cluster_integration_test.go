package daemon_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chronow/persister/internal/consumer"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

var (
	clusterTenants = []string{"acme", "globex", "initech"}
	clusterNS      = []string{"payments", "default"}
	clusterTopics  = []string{"orders", "billing:eu", "audit"}
)

// clusterMessages builds n messages spread round robin over the cluster
// test's 18 streams.
func clusterMessages(n, offset int) []publisher.Message {
	s := e2e.Spread{Tenants: clusterTenants, Namespaces: clusterNS, Topics: clusterTopics}
	return spreadMessages(s, n, offset, `{"seq":%d,"big":9007199254740993,"note":"cluster"}`, "c")
}

// metricSum sums the samples of a metric family on a daemon's /metrics.
func metricSum(addr, family string) (float64, error) { return metricSumLabel(addr, family, "") }

// metricSumLabel sums the samples of a family whose labels contain label.
func metricSumLabel(addr, family, label string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, family+"{") && !strings.HasPrefix(line, family+" ") {
			continue
		}
		if label != "" && !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, sc.Err()
}

// TestClusterReplicasExactlyOnce runs the real binary against a 3-master
// Redis Cluster: a backlog across tenants whose streams lie on all three
// masters, one replica, then two sharing the group, a killed client
// connection on one master, one replica SIGKILLed (its pending entries are
// reclaimed by the other), a master paused, a third replica added and
// stopped again. Every entry must be stored exactly once and the group
// must end with nothing pending.
func TestClusterReplicasExactlyOnce(t *testing.T) {
	ctx := context.Background()
	bin := e2e.BuildBinary(t)
	c := testenv.StartCluster(t, 3)
	ms := testenv.StartMongo(t)
	rdb := c.Client(t)
	mc := ms.Client(t)
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	var ledger e2e.Ledger

	// The streams must lie on every master (checked with CLUSTER KEYSLOT).
	var streams []string
	onMaster := map[int]int{}
	for _, m := range clusterMessages(18, 0) {
		k := m.Key("cw:")
		streams = append(streams, k)
		slot, err := rdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if int(slot) != consumer.Slot(k) {
			t.Fatalf("CLUSTER KEYSLOT %s = %d, consumer.Slot says %d", k, slot, consumer.Slot(k))
		}
		onMaster[c.Master(int(slot))]++
	}
	if len(onMaster) != 3 {
		t.Fatalf("streams per master %v, want streams on all 3", onMaster)
	}
	t.Logf("18 streams per master: %v", onMaster)

	seq := 0
	publishN := func(n int) {
		t.Helper()
		msgs := clusterMessages(n, seq)
		seq += n
		if err := ledger.Publish(ctx, pub, msgs); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	replica := func(name string) (*e2e.Proc, string) {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		env := e2e.Env(t, "redis://127.0.0.1:1/0", ms.URI, clusterTenants, map[string]string{
			"REDIS_CLUSTER_NODES":        c.NodesJSON(),
			"PERSISTER_CONSUMER":         name,
			"PERSISTER_HTTP_ADDR":        addr,
			"PERSISTER_BATCH_SIZE":       "40",
			"PERSISTER_CLAIM_MIN_IDLE":   "3s",
			"PERSISTER_CLAIM_INTERVAL":   "1s",
			"PERSISTER_METRICS_INTERVAL": "500ms",
		})
		return e2e.StartProc(t, bin, env), addr
	}
	stored := func(what string) {
		t.Helper()
		e2e.Eventually(t, 90*time.Second, what, func() (bool, string) {
			rep := e2e.Verify(ctx, t, mc, &ledger, clusterTenants)
			return rep.OK(), rep.String()
		})
	}

	// 1 replica drains a backlog.
	publishN(300)
	a, aAddr := replica("replica-a")
	stored("backlog stored by one replica")

	// 1 → 2: both replicas read from the group.
	b, bAddr := replica("replica-b")
	readBefore, _ := metricSum(aAddr, "persister_entries_read_total")
	e2e.Eventually(t, 60*time.Second, "both replicas read entries", func() (bool, string) {
		publishN(60)
		ra, errA := metricSum(aAddr, "persister_entries_read_total")
		rb, errB := metricSum(bAddr, "persister_entries_read_total")
		return errA == nil && errB == nil && ra > readBefore && rb > 0,
			fmt.Sprintf("replica-a read %v (%v before), replica-b %v (errs %v %v)", ra, readBefore, rb, errA, errB)
	})
	stored("entries stored by two replicas")

	// Every client connection of master 0 is killed (the daemons'
	// included); go-redis reconnects.
	killed, err := c.Nodes[0].Client(t).ClientKillByFilter(ctx, "TYPE", "normal").Result()
	if err != nil {
		t.Fatalf("client kill: %v", err)
	}
	t.Logf("CLIENT KILL TYPE normal on master 0 closed %d connections", killed)
	publishN(300)
	stored("entries stored after master 0 dropped every client")

	// 2 → 1 the hard way: SIGKILL replica-b while it holds entries. The
	// database is paused so that what replica-b reads stays pending on it,
	// and replica-a is stopped (SIGSTOP) meanwhile so that replica-b reads
	// the new entries itself: entries pending on it may also be ones it
	// claimed from replica-a, which replica-a still holds and acknowledges
	// itself, without a claim (a CI run saw replica-a claim 0 of 183); the
	// ones replica-b read itself can only come back through replica-a's
	// claim sweeper. The kill waits until replica-b has read some.
	ownReads := func() (float64, error) { // entries replica-b read, not claimed
		read, err1 := metricSum(bAddr, "persister_entries_read_total")
		claimed, err2 := metricSum(bAddr, "persister_entries_claimed_total")
		return read - claimed, errors.Join(err1, err2)
	}
	bReadBefore, err := ownReads()
	if err != nil {
		t.Fatal(err)
	}
	ms.Pause(t)
	signal := func(p *e2e.Proc, sig syscall.Signal) {
		if err := syscall.Kill(p.Pid(), sig); err != nil {
			t.Fatalf("%s replica-a: %v", sig, err)
		}
	}
	signal(a, syscall.SIGSTOP)
	aStopped := true
	defer func() {
		if aStopped {
			signal(a, syscall.SIGCONT)
		}
	}()
	publishN(300)
	var stranded int64
	e2e.Eventually(t, 30*time.Second, "replica-b holds pending entries it read", func() (bool, string) {
		stranded = 0
		for _, k := range streams {
			for _, cs := range rdb.XInfoConsumers(ctx, k, "persister").Val() {
				if cs.Name == "replica-b" {
					stranded += cs.Pending
				}
			}
		}
		bRead, err := ownReads()
		return stranded > 0 && err == nil && bRead > bReadBefore,
			fmt.Sprintf("pending on replica-b %d; it read %v (%v before the pause; err %v)", stranded, bRead, bReadBefore, err)
	})
	b.Kill()
	signal(a, syscall.SIGCONT)
	aStopped = false
	ms.Resume(t)
	t.Logf("replica-b SIGKILLed holding %d pending entries", stranded)
	publishN(150)

	// Master 1 stops answering for a moment (less than the node timeout).
	c.Nodes[1].Pause(t)
	time.Sleep(1500 * time.Millisecond)
	c.Nodes[1].Resume(t)
	publishN(150)
	stored("entries stored after a replica died and a master paused")
	// What replica-b held stays pending on it even when its writes landed
	// (it died before the XACK): replica-a's sweeper claims it, until
	// nothing is pending on replica-b. Waited for here, before replica-c
	// joins and could claim it first. (replica-a does not count taking
	// back entries it still holds in hand; the ones replica-b read itself
	// it counts: checked at the end.)
	e2e.Eventually(t, 60*time.Second, "replica-a took over what replica-b held", func() (bool, string) {
		var left int64
		for _, k := range streams {
			for _, cs := range rdb.XInfoConsumers(ctx, k, "persister").Val() {
				if cs.Name == "replica-b" {
					left += cs.Pending
				}
			}
		}
		claimed, err := metricSum(aAddr, "persister_entries_claimed_total")
		return left == 0, fmt.Sprintf("pending on replica-b %d; replica-a claimed %v (err %v)", left, claimed, err)
	})

	// 1 → 2 → 1 gracefully: replica-c joins and leaves with SIGTERM.
	cp, _ := replica("replica-c")
	publishN(300)
	time.Sleep(500 * time.Millisecond)
	if code, err := cp.Term(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("replica-c SIGTERM: exit %d, err %v; want 0", code, err)
	}
	publishN(150)
	stored("every entry stored exactly once after scaling 1→2→1")

	// Nothing stays pending: what replica-b held was reclaimed by a
	// surviving replica (claim sweeper), replica-c flushed before leaving.
	e2e.WaitNothingPending(ctx, t, rdb, "persister", streams, 60*time.Second)
	// The lag collector measures streams on every master (one Lua call per
	// stream, pipelined and split by slot): with nothing pending and
	// nothing left, every tenant's gauges read 0 and no lag errors accrue.
	e2e.Eventually(t, 30*time.Second, "lag gauges at 0 on replica-a", func() (bool, string) {
		lag, err1 := metricSum(aAddr, "persister_stream_lag_entries")
		pend, err2 := metricSum(aAddr, "persister_stream_pending_entries")
		return err1 == nil && err2 == nil && lag == 0 && pend == 0, fmt.Sprintf("lag %v pending %v (%v %v)", lag, pend, err1, err2)
	})
	lagErrs := func() float64 {
		v, err := metricSumLabel(aAddr, "persister_redis_errors_total", `op="lag"`)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := lagErrs()
	time.Sleep(2 * time.Second)
	if after := lagErrs(); after != before {
		t.Errorf("lag measurement errors grew from %v to %v with the cluster healthy", before, after)
	}
	claimed, err := metricSum(aAddr, "persister_entries_claimed_total")
	if err != nil || claimed < 1 {
		t.Errorf("replica-a claimed %v entries (err %v); replica-b died holding %d", claimed, err, stranded)
	}
	t.Logf("replica-a claimed %v entries", claimed)
	rep := e2e.Verify(ctx, t, mc, &ledger, clusterTenants)
	if !rep.OK() {
		t.Fatalf("final check: %s", rep)
	}
	if code, err := a.Term(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("replica-a SIGTERM: exit %d, err %v; want 0", code, err)
	}
	t.Logf("published %d; %s", ledger.Len(), rep)
}
