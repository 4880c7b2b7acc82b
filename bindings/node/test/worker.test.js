'use strict';
// Worker: runs registered JS functions for remote-target jobs and reports
// results and errors through apsd.v1.Workers.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const apsd = require('..');
const { Daemon, setup, within, waitFor, sleep } = require('./helpers');

let d;
let c;

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

/** The first JOB_EXECUTED/JOB_ERROR event of a job since `after`. */
async function outcomeOf(jobId, after, client = c, timeoutMs = 15000) {
  const it = client.events({ after, jobIds: [jobId], types: ['JOB_EXECUTED', 'JOB_ERROR'] });
  try {
    const r = await within(timeoutMs, it.next(), `the outcome of ${jobId}`);
    return r.value;
  } finally {
    it.close();
  }
}

// RunOutcome.error_type and worker_id are in the API, but the daemon does not
// fill them yet: it reports a remote error as "Type: message" in `error`.
function errorOf(outcome) {
  if (outcome.errorType) return { type: outcome.errorType, message: outcome.error };
  const m = /^([A-Za-z_$][\w$.]*): ([\s\S]*)$/.exec(outcome.error);
  return m ? { type: m[1], message: m[2] } : { type: '', message: outcome.error };
}

function assertWorker(outcome, w) {
  assert.ok(outcome.workerId === w.workerId || outcome.workerId === '', outcome.workerId);
}

const lastSeq = async () => (await c.getScheduler()).eventLog.lastSequence;

test('a worker runs a function and reports its return value', async () => {
  const w = new apsd.Worker(c, { queue: 'q-math' });
  const seen = [];
  w.register('math:add', function add(a, b, kwargs) {
    const run = apsd.currentRun();
    seen.push({ runId: run.runId, jobId: run.jobId, self: this.runId, signal: run.signal instanceof AbortSignal });
    return { sum: (a + b) * kwargs.scale, list: [a, b, null], ok: true };
  });
  const running = w.run();
  try {
    const start = await lastSeq();
    await c.addJob('math:add', { id: 'add-1', args: [2, 3], kwargs: { scale: 10 }, queue: 'q-math' });
    const ev = await outcomeOf('add-1', start);
    assert.equal(ev.type, 'JOB_EXECUTED', JSON.stringify(ev.outcome));
    assert.equal(ev.outcome.status, 'SUCCEEDED');
    assert.deepEqual(ev.outcome.returnValue, { sum: 50, list: [2, 3, null], ok: true });
    assertWorker(ev.outcome, w);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].jobId, 'add-1');
    assert.equal(seen[0].runId, ev.runId);
    assert.equal(seen[0].self, ev.runId, 'this is the run context');
    assert.ok(seen[0].signal);
    // (ExecutorInfo.connected_workers is not filled in by the daemon yet.)
  } finally {
    await w.stop();
  }
  await within(5000, running, 'run() after stop()');
  assert.equal(w.running, false);
});

test('a throwing function: JOB_ERROR with its type, message and stack', async () => {
  const w = new apsd.Worker(c, { queue: 'q-err', tasks: {
    'jobs:boom': async function boom(what) {
      await sleep(10);
      throw new TypeError(`bad ${what}`);
    },
    'jobs:reject-string': () => Promise.reject('just a string'),
    'jobs:bad-return': () => () => 1,
  } });
  w.start();
  try {
    let start = await lastSeq();
    await c.addJob('jobs:boom', { id: 'boom-1', args: ['input'], queue: 'q-err' });
    let ev = await outcomeOf('boom-1', start);
    assert.equal(ev.type, 'JOB_ERROR');
    assert.equal(ev.outcome.status, 'FAILED');
    assert.deepEqual(errorOf(ev.outcome), { type: 'TypeError', message: 'bad input' });
    assert.match(ev.outcome.traceback, /^TypeError: bad input\n\s+at (async )?(Object\.)?boom /);
    assert.doesNotMatch(ev.outcome.traceback, /lib[\\/]worker\.js/, 'the worker\'s own frames are cut');
    assertWorker(ev.outcome, w);

    start = await lastSeq();
    await c.addJob('jobs:reject-string', { id: 'boom-2', queue: 'q-err' });
    ev = await outcomeOf('boom-2', start);
    assert.equal(ev.type, 'JOB_ERROR');
    assert.deepEqual(errorOf(ev.outcome), { type: 'String', message: 'just a string' });

    start = await lastSeq();
    await c.addJob('jobs:bad-return', { id: 'boom-3', queue: 'q-err' });
    ev = await outcomeOf('boom-3', start);
    assert.equal(ev.type, 'JOB_ERROR');
    assert.equal(errorOf(ev.outcome).type, 'TypeError');
    assert.match(ev.outcome.error, /not JSON-representable/);

    const g = await c.getJob('boom-1');
    assert.equal(g, null, 'a one-shot job is removed after its run');
  } finally {
    await w.stop();
  }
});

test('a long task keeps its lease alive; stop() waits for it', async () => {
  const w = new apsd.Worker(c, { queue: 'q-long', leaseDuration: 1, maxInFlight: 2 });
  const deadlines = [];
  w.register('slow:task', async (ms) => {
    const run = apsd.currentRun();
    deadlines.push(run.leaseDeadline.getTime());
    await sleep(ms);
    deadlines.push(run.leaseDeadline.getTime());
    return ms;
  });
  w.start();
  try {
    const start = await lastSeq();
    await c.addJob('slow:task', { id: 'slow-1', args: [2500], queue: 'q-long' });
    const ev = await outcomeOf('slow-1', start);
    assert.equal(ev.type, 'JOB_EXECUTED', JSON.stringify(ev.outcome));
    assert.equal(ev.outcome.returnValue, 2500);
    assert.ok(ev.outcome.duration >= 2.4, `ran ${ev.outcome.duration} s with a 1 s lease`);
    assert.ok(deadlines[1] - deadlines[0] >= 1500, 'the lease was extended');

    // stop() while a run is in progress: it finishes and is reported.
    const s2 = await lastSeq();
    const dispatched = new Promise((r) => w.once('dispatch', r));
    await c.addJob('slow:task', { id: 'slow-2', args: [800], queue: 'q-long' });
    await within(10000, dispatched, 'dispatch');
    await within(10000, w.stop());
    const ev2 = await outcomeOf('slow-2', s2);
    assert.equal(ev2.type, 'JOB_EXECUTED');
    assert.equal(ev2.outcome.returnValue, 800);
  } finally {
    await w.stop();
  }
});

test('stop() with a deadline aborts a stuck task and reports it', async () => {
  const w = new apsd.Worker(d.address, { queue: 'q-stuck', stopTimeoutMs: 300 });
  let aborted = null;
  w.register('stuck:forever', () => new Promise((resolve) => {
    apsd.currentRun().signal.addEventListener('abort', (e) => { aborted = e.target.reason.name; resolve('late'); });
  }));
  const running = w.run();
  const start = await lastSeq();
  const dispatched = new Promise((r) => w.once('dispatch', r));
  await c.addJob('stuck:forever', { id: 'stuck-1', queue: 'q-stuck' });
  await within(10000, dispatched, 'dispatch');
  await within(10000, w.stop());
  await within(5000, running);
  assert.equal(aborted, 'WorkerStopped');
  const ev = await outcomeOf('stuck-1', start);
  assert.equal(ev.type, 'JOB_ERROR');
  assert.equal(errorOf(ev.outcome).type, 'WorkerStopped');
});

test('overlap policy CANCEL_RUNNING: the running task\'s signal fires', async () => {
  const w = new apsd.Worker(c, { queue: 'q-cancel', maxInFlight: 2 });
  const reasons = [];
  w.register('cancel:wait', () => new Promise((resolve) => {
    const { signal } = apsd.currentRun();
    const t = setTimeout(() => resolve('timeout'), 8000);
    signal.addEventListener('abort', () => { clearTimeout(t); reasons.push(signal.reason.message); resolve('x'); });
  }));
  w.start();
  try {
    const start = await lastSeq();
    // Every second a new run cancels the one still running.
    await c.addJob('cancel:wait', 'interval', { seconds: 1, id: 'cancel-1', queue: 'q-cancel',
      overlapPolicy: 'CANCEL_RUNNING' });
    await waitFor(() => reasons.length >= 1, { what: 'a cancel', timeoutMs: 10000 });
    await c.pauseJob('cancel-1');
    assert.match(reasons[0], /cancelled/);
    const ev = await outcomeOf('cancel-1', start);
    assert.equal(ev.type, 'JOB_ERROR');
    assert.equal(ev.outcome.status, 'CANCELLED');
    await c.removeJob('cancel-1');
  } finally {
    await w.stop({ timeoutMs: 200 });
  }
});

test('a worker reconnects after a daemon restart', async () => {
  const rd = new Daemon();
  await rd.start();
  const rc = new apsd.Client(rd.address, { timeoutMs: 10000 });
  const w = new apsd.Worker(rc, { queue: 'q-r', backoffMs: 50, maxBackoffMs: 500, tasks: { 'echo:back': (x) => x } });
  let reconnects = 0;
  w.on('reconnecting', () => { reconnects++; });
  const running = w.run();
  try {
    let s = (await rc.getScheduler()).eventLog.lastSequence;
    await rc.addJob('echo:back', { id: 'e-1', args: ['before'], queue: 'q-r' });
    assert.equal((await outcomeOf('e-1', s, rc)).outcome.returnValue, 'before');
    assert.equal(await rd.restart(), 0, rd.log());
    s = (await rc.getScheduler()).eventLog.lastSequence;
    await rc.addJob('echo:back', { id: 'e-2', args: ['after'], queue: 'q-r' });
    const ev = await outcomeOf('e-2', s, rc);
    assert.equal(ev.type, 'JOB_EXECUTED');
    assert.equal(ev.outcome.returnValue, 'after');
    assert.ok(reconnects >= 1);
  } finally {
    await w.stop({ timeoutMs: 1000 });
    await within(5000, running);
    rc.close();
    const code = await rd.stop();
    const log = rd.log();
    rd.cleanup();
    assert.equal(code, 0, log);
  }
});

test('refusals: no task registered; a bad worker option rejects run()', async () => {
  await assert.rejects(new apsd.Worker(c).run(), TypeError);
  const w = new apsd.Worker(c, { queue: 'bad queue name!', tasks: { x: () => 1 } });
  await assert.rejects(within(10000, w.run()), apsd.InvalidArgumentError);
  assert.equal(w.running, false);
});
