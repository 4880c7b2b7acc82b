'use strict';
// The seed's three jobs (examples/seed-jobs.js, as tools/grpcurl/add-seed-jobs):
// a cron job every 5 s, a one-shot date job, an interval of 3 s; each runs.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { addSeedJobs } = require('../examples/seed-jobs');
const { setup, collect, within } = require('./helpers');

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

test('the seed\'s three jobs run', async () => {
  const start = (await c.getScheduler()).eventLog.lastSequence;
  const t0 = Date.now();
  const jobs = await addSeedJobs(c, { onceAfterSeconds: 2 });
  assert.deepEqual(jobs.map((j) => j.id), ['seed-cron', 'seed-once', 'seed-interval']);
  assert.equal(jobs[0].trigger.cron.second, '*/5');
  assert.equal(jobs[0].nextRunTime.getUTCSeconds() % 5, 0);
  assert.ok(jobs[1].trigger.date);
  assert.equal(jobs[2].trigger.interval.seconds, 3);
  assert.deepEqual((await c.getJobs()).map((j) => j.id).sort(), ['seed-cron', 'seed-interval', 'seed-once']);

  const it = c.events({ after: start, types: ['JOB_EXECUTED', 'JOB_ERROR'] });
  const col = collect(it);
  try {
    const out = (id) => col.events.filter((e) => e.jobId === id).map((e) => e.outcome.stdoutTail.toString());
    await col.waitFor(() => out('seed-cron').length >= 1 && out('seed-once').length >= 1 &&
      out('seed-interval').length >= 1, 12000, 'a run of each seed job');
    assert.ok(col.events.every((e) => e.type === 'JOB_EXECUTED'), JSON.stringify(col.events));
    assert.equal(out('seed-cron')[0], '定时任务\n');
    assert.deepEqual(out('seed-once'), ['一次性任务\n']);
    assert.equal(out('seed-interval')[0], '循环任务\n');
    const once = col.events.find((e) => e.jobId === 'seed-once');
    assert.ok(once.scheduledRunTimes[0].getTime() - t0 >= 1500, 'the date job ran at its time');
    assert.equal(await c.getJob('seed-once'), null, 'a date job is removed after its run');
    assert.deepEqual((await c.getJobs()).map((j) => j.id).sort(), ['seed-cron', 'seed-interval']);
  } finally {
    it.close();
    await within(5000, col.finished);
  }
  assert.equal(await c.removeAllJobs(), 2);
});
