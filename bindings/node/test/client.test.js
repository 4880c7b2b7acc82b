'use strict';
// Every Client method against the real apsd, and the errors it maps.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const apsd = require('..');
const { Daemon, setup } = require('./helpers');

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

test('addJob: cron with APScheduler options, getJob, removeJob', async () => {
  const j = await c.addJob(['/bin/echo', 'hi'], 'cron', {
    day_of_week: 'mon-fri', hour: 9, minute: '30', id: 'cron-1', name: 'morning', coalesce: false,
    maxInstances: 3, misfireGraceTime: 30, labels: { team: 'a' }, overlapPolicy: 'QUEUE_ONE', jitter: 2,
  });
  assert.equal(j.id, 'cron-1');
  assert.equal(j.name, 'morning');
  assert.equal(j.trigger.cron.dayOfWeek, 'mon-fri');
  assert.equal(j.trigger.cron.hour, '9');
  assert.equal(j.trigger.cron.timezone, 'UTC');
  assert.equal(j.trigger.jitter, 2);
  assert.deepEqual(j.target.command.argv, ['/bin/echo', 'hi']);
  assert.equal(j.coalesce, false);
  assert.equal(j.maxInstances, 3);
  assert.equal(j.misfireGraceTime, 30);
  assert.equal(j.overlapPolicy, 'QUEUE_ONE');
  assert.deepEqual(j.labels, { team: 'a' });
  assert.ok(j.nextRunTime instanceof Date);
  assert.ok(j.nextRunTime > new Date());
  assert.equal(j.paused, false);
  assert.ok(j.createTime instanceof Date);

  const g = await c.getJob('cron-1');
  assert.equal(g.id, 'cron-1');
  assert.ok(g.stats, 'GetJob returns stats by default');
  assert.equal(g.stats.runs, 0);
  const basic = await c.getJob('cron-1', { view: 'BASIC' });
  assert.equal(basic.stats, null);

  await c.removeJob('cron-1');
  assert.equal(await c.getJob('cron-1'), null, 'getJob resolves null for a missing job, as APScheduler');
  await assert.rejects(c.removeJob('cron-1'), (e) => e instanceof apsd.JobLookupError && e.code === 5 &&
    e.codeName === 'NOT_FOUND' && /cron-1/.test(e.details));
});

test('addJob: interval, date, trigger objects, defaults', async () => {
  const iv = await c.addJob(['/bin/true'], 'interval', { weeks: 1, days: 2, hours: 3, minutes: 4, seconds: 5.25,
    id: 'iv-1' });
  assert.deepEqual([iv.trigger.interval.weeks, iv.trigger.interval.days, iv.trigger.interval.hours,
    iv.trigger.interval.minutes, iv.trigger.interval.seconds, iv.trigger.interval.microseconds], [1, 2, 3, 4, 5, 250000]);
  assert.ok(iv.trigger.interval.startDate instanceof Date, 'the daemon fills in the start date');
  assert.equal(iv.misfireGraceTime, undefined, 'unset = the scheduler default');
  assert.equal(iv.coalesce, undefined);

  const when = new Date(Date.now() + 3600e3);
  const dt = await c.addJob(['/bin/true'], 'date', { run_date: when.toISOString(), id: 'date-1' });
  assert.equal(dt.trigger.date.runDate.getTime(), when.getTime());
  assert.equal(dt.nextRunTime.getTime(), when.getTime());

  const obj = await c.addJob(['/bin/true'], apsd.allOf(apsd.cron({ hour: 9 }), apsd.cron({ day: 'last fri', hour: '*' })),
                             { id: 'and-1', misfireGraceTime: null });
  assert.equal(obj.trigger.allOf.triggers.length, 2);
  assert.equal(obj.trigger.allOf.triggers[1].cron.day, 'last fri');
  assert.equal(obj.misfireGraceTime, null, 'null = unlimited');

  const ci = await c.addJob(['/bin/true'], 'calendarinterval', { months: 1, hour: 8, id: 'cal-1' });
  assert.equal(ci.trigger.calendarInterval.months, 1);

  // No trigger: a one-shot date job at nextRunTime.
  const once = await c.addJob(['/bin/true'], { id: 'once-1', nextRunTime: FAR });
  assert.ok(once.trigger.date);
  assert.equal(once.nextRunTime.getTime(), FAR.getTime());

  // nextRunTime: null = added paused (APScheduler's next_run_time=None).
  const p = await c.addJob(['/bin/true'], 'cron', { hour: 1, id: 'paused-1', nextRunTime: null });
  assert.equal(p.paused, true);
  assert.equal(p.nextRunTime, null);

  // Generated id, memory store, command options.
  const gen = await c.addJob({ command: { argv: ['/bin/true'], env: { A: '1' }, timeout: 1.5 } },
                             apsd.date(FAR), { jobstore: 'memory' });
  assert.match(gen.id, /^[0-9a-f]{44}$/); // generated: milliseconds, then 128 random bits
  assert.equal(gen.jobstore, 'memory');
  assert.deepEqual(gen.target.command.env, { A: '1' });
  assert.equal(gen.target.command.timeout, 1.5);

  // A remote task with args/kwargs goes to the workers executor.
  const r = await c.addJob('mod:func', 'date', { runDate: FAR, id: 'remote-1', args: [1, 'two', null],
    kwargs: { k: [true, { x: 1.5 }] }, queue: 'q9' });
  assert.equal(r.executor, 'workers');
  assert.deepEqual(r.target.remote, { task: 'mod:func', args: [1, 'two', null], kwargs: { k: [true, { x: 1.5 }] },
    queue: 'q9' });

  for (const id of ['iv-1', 'date-1', 'and-1', 'cal-1', 'once-1', 'paused-1', gen.id, 'remote-1']) {
    await c.removeJob(id);
  }
});

test('addJob: replaceExisting, ConflictingIdError, requestId', async () => {
  const a = await c.addJob(['/bin/true'], 'date', { runDate: FAR, id: 'dup' });
  await assert.rejects(c.addJob(['/bin/true'], 'date', { runDate: FAR, id: 'dup' }),
                       (e) => e instanceof apsd.ConflictingIdError && e.code === apsd.status.ALREADY_EXISTS &&
                         /job\.id/.test(e.details));
  const b = await c.addJob(['/bin/true'], 'date', { runDate: FAR, id: 'dup', name: 'renamed', replace_existing: true });
  assert.equal(b.name, 'renamed');
  assert.equal(b.createTime.getTime(), a.createTime.getTime());
  await c.removeJob('dup');

  const rid = crypto.randomUUID();
  const x = await c.addJob(['/bin/true'], 'date', { runDate: FAR, requestId: rid });
  const y = await c.addJob(['/bin/true'], 'date', { runDate: FAR, requestId: rid });
  assert.equal(x.id, y.id, 'a retry with the same request id returns the first job');
  await c.removeJob(x.id);
});

test('errors: INVALID_ARGUMENT names the field; local TypeErrors', async () => {
  await assert.rejects(c.addJob(['/bin/true'], 'cron', { hour: 25 }),
                       (e) => e instanceof apsd.InvalidArgumentError && e instanceof apsd.ApsdError &&
                         e.code === 3 && e.details.startsWith('job.trigger.cron.hour'));
  await assert.rejects(c.addJob(['/bin/true'], 'cron', { hour: 1, timezone: 'Mars/Olympus' }),
                       (e) => e instanceof apsd.InvalidArgumentError && /timezone/.test(e.details));
  await assert.rejects(c.addJob([], 'date', { runDate: FAR }),
                       (e) => e instanceof apsd.InvalidArgumentError && /job\.target\.command\.argv/.test(e.details));
  await assert.rejects(c.addJob(['/bin/true'], 'date', { runDate: FAR, executor: 'nope' }),
                       (e) => e instanceof apsd.InvalidArgumentError && /job\.executor/.test(e.details));
  await assert.rejects(c.addJob(['/bin/true'], 'date', { runDate: FAR, maxInstances: 0 }),
                       (e) => e instanceof apsd.InvalidArgumentError && /max_instances/.test(e.details));
  // Mistakes caught before any RPC.
  await assert.rejects(c.addJob(['/bin/true'], 'cron', { hour: 1, bogus: 2 }), TypeError);
  await assert.rejects(c.addJob(['/bin/true'], 'weekly', {}), TypeError);
  await assert.rejects(c.addJob(['/bin/true'], 'interval', { minutes: 1.5 }), TypeError);
  await assert.rejects(c.addJob(['/bin/true'], 'date', { runDate: 'not a date' }), TypeError);
  await assert.rejects(c.addJob(['/bin/true'], { cron: { hour: '1', nope: 1 } }), TypeError);
  await assert.rejects(c.addJob(['/bin/true'], 'date', { runDate: FAR, args: [1] }), TypeError);
  await assert.rejects(c.addJob(42, 'date', { runDate: FAR }), TypeError);
  for (const m of ['pauseJob', 'resumeJob', 'removeJob', 'runJobNow']) {
    await assert.rejects(c[m]('missing'), apsd.JobLookupError, m);
  }
  await assert.rejects(c.modifyJob('missing', { name: 'x' }), apsd.JobLookupError);
  await assert.rejects(c.rescheduleJob('missing', 'cron', { hour: 1 }), apsd.JobLookupError);
  // A short deadline.
  await assert.rejects(c.getScheduler({ timeoutMs: 1, signal: AbortSignal.abort() }),
                       (e) => e instanceof apsd.CancelledError || e instanceof apsd.DeadlineExceededError);
});

test('getJobs: all pages, jobstore, paused and label filters', async () => {
  const ids = [];
  for (let i = 0; i < 7; i++) {
    const id = `list-${i}`;
    ids.push(id);
    await c.addJob(['/bin/true'], 'date', { runDate: FAR, id, paused: i % 3 === 0,
      labels: { team: i % 2 ? 'a' : 'b' }, jobstore: i === 6 ? 'memory' : undefined });
  }
  const all = await c.getJobs({ labelSelector: 'team', pageSize: 2 });
  assert.deepEqual(all.map((j) => j.id), ['list-1', 'list-2', 'list-4', 'list-5', 'list-0', 'list-3', 'list-6'],
                   'every page; by next run time, paused jobs last, then by id');
  assert.equal(all[0].stats, null, 'ListJobs is BASIC by default');
  assert.deepEqual((await c.getJobs({ labelSelector: 'team=a' })).map((j) => j.id), ['list-1', 'list-5', 'list-3']);
  assert.deepEqual((await c.getJobs({ labelSelector: 'team', paused: true })).map((j) => j.id),
                   ['list-0', 'list-3', 'list-6']);
  assert.deepEqual((await c.getJobs('memory')).map((j) => j.id), ['list-6']);
  const full = await c.getJobs({ labelSelector: 'team=b', view: 'FULL' });
  assert.ok(full[0].stats);
  await assert.rejects(c.getJobs({ labelSelector: 'bad key=1' }), apsd.InvalidArgumentError);
  assert.equal(await c.removeAllJobs('memory'), 1);
  assert.equal(await c.removeAllJobs({ jobstore: 'default' }), 6);
  assert.deepEqual(await c.getJobs(), []);
});

test('modifyJob, rescheduleJob, pauseJob, resumeJob', async () => {
  await c.addJob('tasks:send', 'cron', { hour: 3, id: 'mod-1', args: [1], kwargs: { a: 1 }, queue: 'q1',
    coalesce: false });
  let j = await c.modifyJob('mod-1', { name: 'new name' });
  assert.equal(j.name, 'new name');
  assert.equal(j.coalesce, false, 'fields not named are unchanged');
  j = await c.modifyJob('mod-1', { max_instances: 4, misfireGraceTime: null, overlapPolicy: 'QUEUE_ALL',
    labels: { b: '2' }, trigger: apsd.trigger('cron', { hour: 4 }) });
  assert.equal(j.maxInstances, 4);
  assert.equal(j.misfireGraceTime, null);
  assert.equal(j.overlapPolicy, 'QUEUE_ALL');
  assert.deepEqual(j.labels, { b: '2' });
  assert.equal(j.trigger.cron.hour, '4');
  j = await c.modifyJob('mod-1', { coalesce: undefined, misfireGraceTime: 5 });
  assert.equal(j.coalesce, undefined, 'undefined resets to the default');
  assert.equal(j.misfireGraceTime, 5);
  // args alone: the task and queue are kept.
  j = await c.modifyJob('mod-1', { args: [2, 3] });
  assert.deepEqual(j.target.remote, { task: 'tasks:send', args: [2, 3], kwargs: { a: 1 }, queue: 'q1' });
  j = await c.modifyJob('mod-1', { func: 'tasks:other', kwargs: { z: true } });
  assert.deepEqual(j.target.remote, { task: 'tasks:other', args: null, kwargs: { z: true }, queue: 'default' });
  const next = new Date(Date.now() + 7200e3);
  j = await c.modifyJob('mod-1', { nextRunTime: next });
  assert.equal(j.nextRunTime.getTime(), next.getTime());
  await assert.rejects(c.modifyJob('mod-1', { id: 'x' }), TypeError);
  await assert.rejects(c.modifyJob('mod-1', {}), TypeError);
  await assert.rejects(c.modifyJob('mod-1', { trigger: undefined }),
                       (e) => e instanceof apsd.InvalidArgumentError && /trigger/.test(e.details));

  j = await c.rescheduleJob('mod-1', 'interval', { minutes: 10 });
  assert.equal(j.trigger.interval.minutes, 10);
  const soon = Date.now() + 10 * 60e3;
  assert.ok(Math.abs(j.nextRunTime.getTime() - soon) < 5000, 'recomputed from now');
  j = await c.rescheduleJob('mod-1', { cron: { minute: '*/7' } });
  assert.equal(j.trigger.cron.minute, '*/7');

  j = await c.pauseJob('mod-1');
  assert.equal(j.paused, true);
  assert.equal(j.nextRunTime, null);
  j = await c.pauseJob('mod-1');
  assert.equal(j.paused, true, 'pausing twice is fine');
  j = await c.resumeJob('mod-1');
  assert.equal(j.paused, false);
  assert.ok(j.nextRunTime > new Date());
  await c.removeJob('mod-1');
});

test('pause, resume, getScheduler, runJobNow, backfill, preview', async () => {
  const info = await c.getScheduler();
  assert.equal(info.state, 'RUNNING');
  assert.equal(info.defaultTimezone, 'UTC');
  assert.deepEqual(info.jobstores.map((s) => s.name).sort(), ['default', 'memory']);
  assert.ok(info.executors.some((e) => e.type === 'workers'));
  assert.ok(info.eventLog.lastSequence > 0);
  assert.equal(info.defaultMisfireGraceTime, 1);
  assert.equal(info.defaultCoalesce, true);
  assert.equal(info.defaultMaxInstances, 1);
  assert.ok(info.startTime instanceof Date);

  await c.addJob(['/bin/true'], 'interval', { minutes: 10, id: 'run-1' });
  let s = await c.pause();
  assert.equal(s.state, 'PAUSED');
  await assert.rejects(c.runJobNow('run-1'), apsd.FailedPreconditionError);
  s = await c.pause();
  assert.equal(s.state, 'PAUSED');
  s = await c.resume();
  assert.equal(s.state, 'RUNNING');
  const r = await c.runJob('run-1');
  assert.match(r.runId, /^[0-9a-f]+$/);
  assert.ok(r.scheduledRunTime instanceof Date);
  assert.equal(r.queued, false);

  const now = Date.now();
  const bf = await c.backfill('run-1', { startTime: new Date(now - 3600e3), endTime: new Date(now - 60e3),
    validateOnly: true });
  assert.deepEqual(bf.scheduledRunTimes, [], 'the interval starts after now');
  await assert.rejects(c.backfill('run-1', { startTime: new Date(now - 3600e3) }),
                       (e) => e instanceof apsd.InvalidArgumentError && /end_time/.test(e.details));
  await c.removeJob('run-1');

  const p = await c.preview('cron', { hour: 9, minute: 30, count: 3, startTime: '2026-01-01T00:00:00Z' });
  assert.deepEqual(p.fireTimes.map((t) => t.toISOString()),
                   ['2026-01-01T09:30:00.000Z', '2026-01-02T09:30:00.000Z', '2026-01-03T09:30:00.000Z']);
  assert.equal(p.description, "cron[hour='9', minute='30']");
  assert.equal(p.effectiveTrigger.cron.timezone, 'UTC');
  const p2 = await c.preview({ interval: { seconds: 90 } }, { count: 2, startTime: new Date('2026-01-01T00:00:00Z') });
  assert.deepEqual(p2.fireTimes.map((t) => t.toISOString()), ['2026-01-01T00:01:30.000Z', '2026-01-01T00:03:00.000Z']);
  await assert.rejects(c.preview('cron', { hour: 24 }),
                       (e) => e instanceof apsd.InvalidArgumentError && /trigger\.cron\.hour/.test(e.details));
  await assert.rejects(c.preview('cron', { hour: 1, count: 1001 }), apsd.InvalidArgumentError);
});

test('bearer tokens: UnauthenticatedError, PermissionDeniedError', async () => {
  const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
  const td = new Daemon();
  const tokens = path.join(td.dir, 'tokens');
  fs.writeFileSync(tokens, `read ${sha('reader-token')}\nwrite ${sha('writer-token')}\n`);
  td.extra = ['--token-file', tokens];
  await td.start();
  const anon = new apsd.Client(td.address);
  const wrong = new apsd.Client(td.address, { token: 'wrong' });
  const reader = new apsd.Client(td.address, { token: 'reader-token' });
  const writer = new apsd.Client(td.address, { token: 'writer-token' });
  try {
    await assert.rejects(anon.getScheduler(), (e) => e instanceof apsd.UnauthenticatedError && e.code === 16);
    await assert.rejects(wrong.getScheduler(), apsd.UnauthenticatedError);
    assert.equal((await reader.getScheduler()).state, 'RUNNING');
    await assert.rejects(reader.addJob(['/bin/true'], 'date', { runDate: FAR, id: 'sec-1' }),
                         (e) => e instanceof apsd.PermissionDeniedError && e.code === 7);
    const j = await writer.addJob(['/bin/true'], 'date', { runDate: FAR, id: 'sec-1' });
    assert.equal(j.id, 'sec-1');
    assert.equal((await reader.getJob('sec-1')).id, 'sec-1');
  } finally {
    for (const x of [anon, wrong, reader, writer]) x.close();
    const rc = await td.stop();
    const log = td.log();
    td.cleanup();
    assert.equal(rc, 0, log);
  }
});
