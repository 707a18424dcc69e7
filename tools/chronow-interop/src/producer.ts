// The producer of the persister's interop test (internal/interop): it drives
// the real Chronow library (third_party/chronow, v0.9.6) through its public
// API against the Redis named by REDIS_URL, and prints a JSON ledger of what
// it did on stdout. Diagnostics go to stderr.
//
//   node bin/chronow-interop.cjs streams   topics, batches, consumers (ack,
//                                           nack with requeue, dead-letter,
//                                           nack up to maxDeliveries) and the
//                                           first shared-memory values
//   node bin/chronow-interop.cjs mutate    shared memory: overwrite, del,
//                                           expire, a new key
//
// Two Chronow instances write: "doubled" is configured with configFromEnv()
// (redis.keyPrefix = "cw:", so ioredis and Chronow both add it and keys come
// out as cw:cw:{tenant}:...), "single" leaves redis.keyPrefix unset (keys
// cw:{tenant}:..., Chronow's default prefix applied once).

import { Chronow, configFromEnv } from '../../../third_party/chronow/src/index';
import type { ChronowMessage } from '../../../third_party/chronow/src/index';

type Form = 'doubled' | 'single';

interface Instance {
  form: Form;
  chronow: Chronow;
  // The key prefix as it ends up in Redis (ioredis' prefix + Chronow's).
  keyPrefix: string;
}

interface PublishedRecord {
  form: Form;
  tenant: string;
  namespace: string;
  topic: string;
  stream: string;
  msgId: string;
  payloadText: string;
  headersText: string;
  via: 'publish' | 'publishBatch';
}

interface ConsumedRecord {
  form: Form;
  stream: string;
  subscription: string;
  msgId: string;
  action: 'ack' | 'requeue' | 'deadLetter' | 'nackToMax' | 'ackRetry';
  reason?: string;
}

interface SharedRecord {
  form: Form;
  key: string;
  tenant: string;
  namespace: string;
  name: string;
  // The JSON text Chronow last wrote for the key (JSON.stringify(value)).
  text: string;
  // present: in Redis at the end; deleted: shared.del'd after its last
  // value was stored; expiring: shared.expire'd with a 1 s TTL.
  state: 'present' | 'deleted' | 'expiring';
}

interface Ledger {
  phase: string;
  published: PublishedRecord[];
  consumed: ConsumedRecord[];
  shared: SharedRecord[];
  // What the library did that the test should know about.
  notes: string[];
}

// Half of an emoji: a JavaScript string JSON.stringify writes as \ud83d.
const LONE = '😀'.slice(0, 1);

function fail(msg: string): never {
  process.stderr.write(`chronow-interop: ${msg}\n`);
  process.exit(1);
}

async function open(form: Form, url: string): Promise<Instance> {
  if (form === 'doubled') {
    // Chronow's README / configFromEnv(): REDIS_KEY_PREFIX or "cw:".
    const cfg = configFromEnv({ REDIS_URL: url });
    if (cfg.redis?.keyPrefix !== 'cw:') fail(`configFromEnv gave keyPrefix ${cfg.redis?.keyPrefix}`);
    return { form, chronow: await Chronow.init(cfg), keyPrefix: 'cw:cw:' };
  }
  const chronow = await Chronow.init({
    redis: { url },
    chronos: { config: configFromEnv({ REDIS_URL: url }).chronos.config },
  });
  return { form, chronow, keyPrefix: 'cw:' };
}

function streamKey(inst: Instance, tenant: string, ns: string, kind: string, name: string): string {
  return `${inst.keyPrefix}${tenant}:${ns}:${kind}:${name}`;
}

// Payloads of every JSON kind, and the awkward ones.
function kindsPayloads(): Array<{ payload: any; headers?: Record<string, string> }> {
  return [
    { payload: { id: 1, name: 'plain object', ok: true, none: null, ratio: 2.5 } },
    { payload: [1, 'two', null, false, { three: 3 }] },
    { payload: 'just a string' },
    { payload: '' },
    { payload: 42 },
    { payload: -7 },
    { payload: 0.1 },
    { payload: 1e21 },
    { payload: 2 ** 40 },
    { payload: -(2 ** 31) - 1 },
    { payload: 2 ** 31 - 1 },
    { payload: null },
    { payload: true },
    {
      payload: { deep: { deeper: { deepest: [1, { k: 'v' }, 'x'] } }, after: 'order kept', alpha: 1, 10: 'numeric key first' },
      headers: { 'content-type': 'application/json' },
    },
    {
      payload: { 'a.b': 1, $set: { 'x.y': 2, ok: 3 }, 'nul\u0000key': 'n', list: [{ '$in': [1] }] },
      headers: { 'trace.id': 'abc-123', $meta: 'm', plain: 'p' },
    },
    { payload: { text: `cut emoji ${LONE}`, whole: '😀 é ß \u2028 "quoted" \\ \n\t\u0001' } },
    { payload: `${LONE}` },
    { payload: { ok: 'fine' }, headers: { 'x-cut': `half ${LONE}` } },
    { payload: { both: LONE }, headers: { 'span.id': LONE, $kind: 'both' } },
    { payload: [1, [2, [3]]] },
    { payload: { inner: [[1, 2], [3]] } },
    { payload: {} },
    { payload: [] },
    { payload: { unicode: 'héllo wörld 😀 日本' } },
  ];
}

async function publishKinds(inst: Instance, ledger: Ledger, tenant: string, ns: string, topic: string): Promise<void> {
  await inst.chronow.bus.ensureTopic(topic, { tenantId: tenant, namespace: ns });
  for (const m of kindsPayloads()) {
    const headers = m.headers ?? {};
    const msgId = await inst.chronow.bus.publish(topic, m.payload, { tenantId: tenant, namespace: ns, headers: m.headers });
    ledger.published.push({
      form: inst.form, tenant, namespace: ns, topic, stream: streamKey(inst, tenant, ns, 'topic', topic), msgId,
      payloadText: JSON.stringify(m.payload), headersText: JSON.stringify(headers), via: 'publish',
    });
  }
}

async function publishBatch(inst: Instance, ledger: Ledger, tenant: string, ns: string, topic: string, n: number): Promise<void> {
  const msgs = [];
  for (let i = 0; i < n; i++) {
    msgs.push({
      payload: { seq: i, tenant, note: i % 3 === 0 ? `batch ${LONE}` : `batch ${i}`, amount: i * 1.25, big: 2 ** 33 + i },
      headers: i % 2 === 0 ? { traceId: `t-${i}`, 'trace.parent': `p-${i}` } : { traceId: `t-${i}` },
    });
  }
  const ids = await inst.chronow.bus.publishBatch(topic, msgs, { tenantId: tenant, namespace: ns });
  if (ids.length !== n) fail(`publishBatch returned ${ids.length} ids for ${n} messages`);
  ids.forEach((msgId, i) => {
    ledger.published.push({
      form: inst.form, tenant, namespace: ns, topic, stream: streamKey(inst, tenant, ns, 'topic', topic), msgId,
      payloadText: JSON.stringify(msgs[i].payload), headersText: JSON.stringify(msgs[i].headers), via: 'publishBatch',
    });
  });
}

// consumeN reads exactly n messages from a subscription, handing each to act.
async function consumeN(inst: Instance, tenant: string, ns: string, topic: string, sub: string, n: number,
  act: (m: ChronowMessage<any>) => Promise<void>): Promise<void> {
  let seen = 0;
  if (n === 0) return;
  for await (const m of inst.chronow.bus.consume(topic, sub, { tenantId: tenant, namespace: ns, consumerName: `interop-${sub}` })) {
    await act(m);
    seen++;
    if (seen >= n) break;
  }
}

// The jobs topic: a worker subscription acks, requeues and dead-letters;
// then a strict subscription (maxDeliveries 1) nacks some into the DLQ.
async function jobs(inst: Instance, ledger: Ledger, tenant: string, ns: string): Promise<void> {
  const topic = 'jobs';
  const stream = streamKey(inst, tenant, ns, 'topic', topic);
  const bus = inst.chronow.bus;
  const scope = { tenantId: tenant, namespace: ns };
  await bus.ensureTopic(topic, scope);
  await bus.ensureSubscription(topic, 'workers', { maxDeliveries: 5, retryBackoffMs: [50], blockMs: 200, count: 10 }, scope);
  await bus.ensureSubscription(topic, 'strict', { maxDeliveries: 1, retryBackoffMs: [50], blockMs: 200, count: 10 }, scope);

  const plan = new Map<string, ConsumedRecord['action']>();
  const actions: ConsumedRecord['action'][] = ['ack', 'requeue', 'deadLetter', 'ack', 'requeue', 'deadLetter', 'ack', 'ack', 'requeue', 'deadLetter', 'ack', 'ack'];
  for (let i = 0; i < actions.length; i++) {
    const payload = { job: i, kind: actions[i], data: i % 4 === 1 ? { cut: LONE, 'k.dot': 1 } : { list: [i, i + 1] } };
    const headers: Record<string, string> = i % 3 === 0 ? { 'trace.id': `job-${i}`, $tag: 'x', half: LONE } : { attempt: 'first' };
    const msgId = await bus.publish(topic, payload, { ...scope, headers });
    plan.set(msgId, actions[i]);
    ledger.published.push({
      form: inst.form, tenant, namespace: ns, topic, stream, msgId,
      payloadText: JSON.stringify(payload), headersText: JSON.stringify(headers), via: 'publish',
    });
  }
  const requeues = actions.filter((a) => a === 'requeue').length;

  if (inst.form === 'doubled') {
    // Chronow v0.9.6 with redis.keyPrefix cannot consume: ioredis does not
    // prefix XGROUP's key, so ensureTopic/ensureSubscription create the
    // groups on cw:{tenant}:... (an empty stream) while XADD and XREADGROUP
    // use cw:cw:{tenant}:...; consume() fails with NOGROUP. Record it.
    try {
      await consumeN(inst, tenant, ns, topic, 'workers', 1, async (m) => { await m.ack(); });
      ledger.notes.push(`${stream}: consume() worked with redis.keyPrefix set`);
    } catch (err: any) {
      ledger.notes.push(`${stream}: consume() with redis.keyPrefix set fails: ${String(err?.message ?? err).split('\n')[0]}`);
    }
    return;
  }

  // workers: every planned message, then one retry entry per requeue.
  await consumeN(inst, tenant, ns, topic, 'workers', plan.size + requeues, async (m) => {
    const action = plan.get(m.id) ?? 'ackRetry';
    const rec: ConsumedRecord = { form: inst.form, stream, subscription: 'workers', msgId: m.id, action };
    switch (action) {
      case 'ack':
      case 'ackRetry':
        await m.ack();
        break;
      case 'requeue':
        await m.nack({ requeue: true });
        break;
      case 'deadLetter':
        rec.reason = `job ${m.payload?.job} failed: bad input ☃`;
        await m.deadLetter(rec.reason);
        break;
      default:
        fail(`unexpected action ${action}`);
    }
    ledger.consumed.push(rec);
  });

  // strict: sees the planned messages and the retry entries; nacks every
  // third one, which with maxDeliveries 1 dead-letters it
  // ("Max deliveries exceeded"), and acks the rest.
  let k = 0;
  await consumeN(inst, tenant, ns, topic, 'strict', plan.size + requeues, async (m) => {
    const rec: ConsumedRecord = { form: inst.form, stream, subscription: 'strict', msgId: m.id, action: 'ack' };
    if (k++ % 3 === 0) {
      rec.action = 'nackToMax';
      rec.reason = 'Max deliveries exceeded';
      await m.nack();
    } else {
      await m.ack();
    }
    ledger.consumed.push(rec);
  });
}

interface SharedValue { name: string; value: any }

function firstShared(): SharedValue[] {
  return [
    { name: 'flags', value: { a: 1, b: [true, false], c: { d: null } } },
    { name: 'text', value: 'hello' },
    { name: 'empty', value: '' },
    { name: 'num', value: 42.5 },
    { name: 'int', value: 7 },
    { name: 'big', value: 2 ** 40 },
    { name: 'nullv', value: null },
    { name: 'list', value: [1, 'two', { three: 3 }] },
    { name: 'dotted', value: { 'a.b': 1, $set: { 'x.y': 2 } } },
    { name: 'surrogate', value: `ab${LONE}cd` },
    { name: 'surrogate-obj', value: { cut: LONE, ok: 'yes' } },
    { name: 'nested-array', value: [1, [2, [3]]] },
    { name: 'cfg:eu', value: { region: 'eu', limits: { rps: 100 } } },
    { name: 'gone', value: { v: 'deleted later' } },
    { name: 'short', value: { v: 'expires later' } },
  ];
}

function record(inst: Instance, ledger: Ledger, tenant: string, ns: string, name: string, value: any, state: SharedRecord['state']): void {
  const key = streamKey(inst, tenant, ns, 'sm', name);
  const rec: SharedRecord = { form: inst.form, key, tenant, namespace: ns, name, text: JSON.stringify(value), state };
  const i = ledger.shared.findIndex((r) => r.key === key);
  if (i >= 0) ledger.shared[i] = rec;
  else ledger.shared.push(rec);
}

const sharedScopes: Array<{ form: Form; tenant: string; ns: string }> = [
  { form: 'doubled', tenant: 'acme', ns: 'default' },
  { form: 'doubled', tenant: 'default', ns: 'default' },
  { form: 'single', tenant: 'globex', ns: 'eu' },
];

async function sharedFirst(insts: Record<Form, Instance>, ledger: Ledger): Promise<void> {
  for (const s of sharedScopes) {
    const inst = insts[s.form];
    for (const v of firstShared()) {
      await inst.chronow.shared.set(v.name, v.value, { tenantId: s.tenant, namespace: s.ns });
      record(inst, ledger, s.tenant, s.ns, v.name, v.value, 'present');
    }
  }
}

async function sharedMutate(insts: Record<Form, Instance>, ledger: Ledger): Promise<void> {
  for (const s of sharedScopes) {
    const inst = insts[s.form];
    const scope = { tenantId: s.tenant, namespace: s.ns };
    for (const v of firstShared()) {
      record(inst, ledger, s.tenant, s.ns, v.name, v.value, 'present');
    }
    const flags = { a: 2, b: [false], c: { d: 'now set' }, e: 'added' };
    await inst.chronow.shared.set('flags', flags, scope);
    record(inst, ledger, s.tenant, s.ns, 'flags', flags, 'present');
    const surrogate = { replaced: `x${LONE}`, n: 1 };
    await inst.chronow.shared.set('surrogate', surrogate, scope);
    record(inst, ledger, s.tenant, s.ns, 'surrogate', surrogate, 'present');
    await inst.chronow.shared.set('text', 'hello again', scope);
    record(inst, ledger, s.tenant, s.ns, 'text', 'hello again', 'present');
    await inst.chronow.shared.del('gone', { ...scope, tombstone: s.tenant === 'acme' });
    record(inst, ledger, s.tenant, s.ns, 'gone', { v: 'deleted later' }, 'deleted');
    if (!(await inst.chronow.shared.expire('short', 1, scope))) fail(`expire short in ${s.tenant}:${s.ns} found no key`);
    record(inst, ledger, s.tenant, s.ns, 'short', { v: 'expires later' }, 'expiring');
    const late = { born: 'in the second phase', list: [1, 2], at: 'late' };
    await inst.chronow.shared.set('late', late, scope);
    record(inst, ledger, s.tenant, s.ns, 'late', late, 'present');
  }
}

async function main(): Promise<void> {
  const phase = process.argv[2];
  const url = process.env.REDIS_URL;
  if (!url) fail('REDIS_URL is not set');
  if (phase !== 'streams' && phase !== 'mutate') fail(`usage: chronow-interop streams|mutate (got ${phase})`);
  const timer = setTimeout(() => fail(`phase ${phase} did not finish within 120s`), 120_000);

  const insts: Record<Form, Instance> = {
    doubled: await open('doubled', url),
    single: await open('single', url),
  };
  const ledger: Ledger = { phase, published: [], consumed: [], shared: [], notes: [] };

  if (phase === 'streams') {
    const d = insts.doubled;
    const s = insts.single;
    // Without tenant/namespace options: Chronow's defaults (default/default).
    for (const payload of [{ ping: 1 }, 'pong', [1, 2, 3]]) {
      const msgId = await d.chronow.bus.publish('pings', payload);
      ledger.published.push({
        form: 'doubled', tenant: 'default', namespace: 'default', topic: 'pings', stream: streamKey(d, 'default', 'default', 'topic', 'pings'),
        msgId, payloadText: JSON.stringify(payload), headersText: '{}', via: 'publish',
      });
    }
    await publishKinds(d, ledger, 'acme', 'default', 'kinds');
    await publishKinds(s, ledger, 'globex', 'eu', 'kinds');
    await publishBatch(d, ledger, 'acme', 'payments', 'orders:eu', 20);
    await publishBatch(s, ledger, 'globex', 'default', 'orders', 20);
    await publishBatch(s, ledger, 'acme', 'ops', 'audit', 5);
    await jobs(d, ledger, 'acme', 'payments');
    await jobs(s, ledger, 'globex', 'default');
    await jobs(s, ledger, 'acme', 'ops');
    await sharedFirst(insts, ledger);
  } else {
    await sharedMutate(insts, ledger);
  }

  await insts.doubled.chronow.close();
  await insts.single.chronow.close();
  clearTimeout(timer);
  process.stdout.write(JSON.stringify(ledger) + '\n');
}

main().catch((err) => fail(err?.stack ?? String(err)));
