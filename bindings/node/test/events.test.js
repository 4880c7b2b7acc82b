'use strict';
// client.events(): filters, replay, closing, errors, and resuming across a
// daemon restart without missing or repeating an event.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const apsd = require('..');
const { Daemon, setup, collect, within } = require('./helpers');

let d;
let c;
const FAR = new Date(Date.now() + 365 * 86400e3);

before(async () => {
  ({ d, client: c } = await setup());
});

after(async () => {
  if (c) c.close();
  if (d) {
    const rc = await d.stop();
    const log = d.log();
    d.cleanup();
    assert.equal(rc, 0, `apsd exited with ${rc}:\n${log}`);
  }
});

test('a command job: JOB_ADDED, JOB_SUBMITTED, JOB_EXECUTED with its outcome', async () => {
  const start = (await c.getScheduler()).eventLog.lastSequence;
  await c.addJob(['/bin/echo', 'hello'], { id: 'echo-1' }); // no trigger: runs once, now
  const it = c.events({ after: start, jobIds: ['echo-1'] });
  const col = collect(it);
  try {
    await col.waitFor((evs) => evs.some((e) => e.type === 'JOB_EXECUTED'), 15000, 'JOB_EXECUTED');
    const types = col.events.map((e) => e.type);
    for (const t of ['JOB_ADDED', 'JOB_SUBMITTED', 'JOB_EXECUTED']) assert.ok(types.includes(t), `${t} in ${types}`);
    const ex = col.events.find((e) => e.type === apsd.EventType.JOB_EXECUTED);
    assert.equal(ex.jobId, 'echo-1');
    assert.ok(ex.time instanceof Date);
    assert.ok(ex.scheduledRunTimes[0] instanceof Date);
    assert.match(ex.runId, /^[0-9a-f]+$/);
    assert.equal(ex.outcome.status, 'SUCCEEDED');
    assert.equal(ex.outcome.exitCode, 0);
    assert.ok(Buffer.isBuffer(ex.outcome.stdoutTail));
    assert.equal(ex.outcome.stdoutTail.toString(), 'hello\n');
    assert.ok(ex.outcome.duration >= 0);
    const seqs = col.events.map((e) => e.sequence);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.ok(col.events.every((e) => e.jobId === 'echo-1'));
  } finally {
    it.close();
    await within(5000, col.finished, 'close');
  }
  assert.equal(col.error, null);
  assert.deepEqual(await it.next(), { value: undefined, done: true });
});

test('a failing command: JOB_ERROR with the exit status', async () => {
  const start = (await c.getScheduler()).eventLog.lastSequence;
  await c.addJob(['/bin/sh', '-c', 'echo oops >&2; exit 3'], { id: 'fail-1' });
  const it = c.events({ after: start, jobIds: ['fail-1'], types: ['JOB_ERROR'] });
  try {
    const { value: ev } = await within(15000, it.next(), 'JOB_ERROR');
    assert.equal(ev.type, 'JOB_ERROR');
    assert.equal(ev.outcome.status, 'FAILED');
    assert.equal(ev.outcome.exitCode, 3);
    assert.equal(ev.outcome.stderrTail.toString(), 'oops\n');
    assert.match(ev.outcome.error, /3/);
  } finally {
    await it.return();
  }
});

test('live events: ready, filters by type, break closes the stream', async () => {
  const it = c.events({ types: ['JOB_ADDED', 'EVENT_TYPE_JOB_REMOVED'] });
  await within(5000, it.ready, 'ready');
  await c.addJob(['/bin/true'], 'date', { runDate: FAR, id: 'live-1' });
  await c.pauseJob('live-1'); // JOB_MODIFIED: filtered out
  await c.removeJob('live-1');
  const got = [];
  for await (const ev of it) {
    got.push(`${ev.type}:${ev.jobId}`);
    if (got.length === 2) break;
  }
  assert.deepEqual(got, ['JOB_ADDED:live-1', 'JOB_REMOVED:live-1']);
  assert.deepEqual(await it.next(), { value: undefined, done: true }, 'break ended it');
});

test('replay after a sequence, then live; close() ends a pending next()', async () => {
  const start = (await c.getScheduler()).eventLog.lastSequence;
  for (const id of ['r-1', 'r-2', 'r-3']) await c.addJob(['/bin/true'], 'date', { runDate: FAR, id });
  const it = c.events({ after: start, types: ['JOB_ADDED'] });
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await within(5000, it.next())).value.jobId);
  assert.deepEqual(ids, ['r-1', 'r-2', 'r-3']);
  await within(5000, it.ready, 'ready');
  const pending = it.next();
  it.close();
  assert.deepEqual(await within(5000, pending), { value: undefined, done: true });
  for (const id of ids) await c.removeJob(id);
});

test('a slow consumer (flow control) still gets every event, in order', async () => {
  const start = (await c.getScheduler()).eventLog.lastSequence;
  const ids = Array.from({ length: 40 }, (_, i) => `slow-${String(i).padStart(2, '0')}`);
  for (const id of ids) await c.addJob(['/bin/true'], 'date', { runDate: FAR, id });
  const it = c.events({ after: start, types: ['JOB_ADDED'], highWaterMark: 2 });
  const got = [];
  for await (const ev of it) {
    got.push(ev.jobId);
    if (got.length % 10 === 0) await new Promise((r) => setTimeout(r, 20));
    if (got.length === ids.length) break;
  }
  assert.deepEqual(got, ids);
  assert.equal(await c.removeAllJobs(), ids.length);
});

test('AbortSignal ends the iteration with an AbortError', async () => {
  const ac = new AbortController();
  const it = c.events({ signal: ac.signal });
  const pending = it.next();
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(within(5000, pending), (e) => e.name === 'AbortError');
  assert.deepEqual(await it.next(), { value: undefined, done: true });
  const pre = c.events({ signal: AbortSignal.abort() });
  await assert.rejects(pre.next(), (e) => e.name === 'AbortError');
});

test('errors: OUT_OF_RANGE is not retried; bad filters', async () => {
  const it = c.events({ after: 1e12 });
  await assert.rejects(within(10000, it.next()),
                       (e) => e instanceof apsd.OutOfRangeError && /after_sequence/.test(e.details));
  assert.equal(it.reconnects, 0);
  assert.throws(() => c.events({ types: ['JOB_EXPLODED'] }), TypeError);
  assert.throws(() => c.events({ bogus: 1 }), TypeError);
  assert.throws(() => c.events({ after: -1 }), TypeError);
});

test('which stream ends are resumed: the daemon going away, a slow-subscriber cut', () => {
  const { retryable } = require('../lib/events');
  const { status } = require('@grpc/grpc-js');
  const cut = 'subscriber too slow: 16 events not delivered; resume with after_sequence';
  assert.equal(retryable(null), true);
  assert.equal(retryable({ code: status.UNAVAILABLE, details: 'the daemon is shutting down' }), true);
  // A call refused as the daemon began to shut down (apsctl_test saw it).
  assert.equal(retryable({ code: status.CANCELLED, details: 'CANCELLED' }), true);
  assert.equal(retryable({ code: status.INTERNAL, details: '' }), true);
  assert.equal(retryable({ code: status.RESOURCE_EXHAUSTED, details: cut }), true);
  assert.equal(retryable({ code: status.RESOURCE_EXHAUSTED, details: 'too many subscribers' }), false);
  assert.equal(retryable({ code: status.OUT_OF_RANGE, details: 'after_sequence 9 was pruned' }), false);
  assert.equal(retryable({ code: status.INVALID_ARGUMENT, details: '' }), false);
  assert.equal(retryable({ code: status.UNAUTHENTICATED, details: '' }), false);
});

test('closing the Client ends its event iterators', async () => {
  const c2 = new apsd.Client(d.address, { timeoutMs: 10000 });
  const it = c2.events();
  await within(10000, it.ready);
  const pending = it.next();
  c2.close();
  assert.deepEqual(await within(10000, pending), { value: undefined, done: true });
  assert.equal(it.reconnects, 0);
  assert.equal(c2._iterators.size, 0);
});

test('resumes across a daemon restart: nothing missed, nothing repeated', async () => {
  const rd = new Daemon();
  await rd.start();
  const rc = new apsd.Client(rd.address, { timeoutMs: 10000 });
  try {
    await rc.addJob(['/bin/true'], 'interval', { seconds: 1, id: 'tick' });
    const first = (await rc.getScheduler()).eventLog.lastSequence;
    const it = rc.events({ after: 0, backoffMs: 50, maxBackoffMs: 500 });
    const col = collect(it);
    await col.waitFor((evs) => evs.filter((e) => e.type === 'JOB_EXECUTED').length >= 1, 15000, 'a run');
    const before = col.events.length;
    const code = await rd.restart(); // SIGTERM, then the same port and data directory
    assert.equal(code, 0, rd.log());
    await col.waitFor((evs) => {
      const i = evs.findIndex((e) => e.type === 'SCHEDULER_STARTED' && e.sequence > first);
      return i >= 0 && evs.slice(i).some((e) => e.type === 'JOB_EXECUTED');
    }, 20000, 'events after the restart');
    it.close();
    await within(5000, col.finished);
    assert.equal(col.error, null);
    assert.ok(it.reconnects >= 1, 'it reconnected');
    assert.ok(col.events.length > before);
    const types = col.events.map((e) => e.type);
    assert.ok(types.includes('SCHEDULER_SHUTDOWN'));
    // The same range straight from the log: the iterator saw exactly these.
    const last = col.events[col.events.length - 1].sequence;
    const replay = rc.events({ after: 0, reconnect: false });
    const log = [];
    for await (const ev of replay) {
      log.push(ev.sequence);
      if (ev.sequence >= last) break;
    }
    assert.deepEqual(col.events.map((e) => e.sequence), log);
    assert.equal(new Set(log).size, log.length, 'no repeats');
  } finally {
    rc.close();
    const code = await rd.stop();
    const log = rd.log();
    rd.cleanup();
    assert.equal(code, 0, log);
  }
});
