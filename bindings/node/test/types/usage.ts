// Compiled by test/types.test.js with `tsc -p test/types` (no emit): checks
// that index.d.ts describes the API the tests and README use.
import * as apsd from 'apsd';
import { Client, Worker, Job, Event, EventIterator, JobLookupError, ApsdError, currentRun } from 'apsd';

async function usage(): Promise<void> {
  const client = new Client('127.0.0.1:50051', { token: 't', timeoutMs: 5000 });
  const c2 = apsd.connect();
  const c3 = new Client({ address: 'unix:/run/apsd.sock', tls: { ca: 'pem' } });
  await client.waitForReady(1000);

  const a: Job = await client.addJob(['/bin/echo', 'hi'], 'cron', { second: '*/5', id: 'x', replaceExisting: true });
  const b: Job = await client.addJob('mod:fn', 'interval', { seconds: 1.5, args: [1, 'a', null], kwargs: { k: [true] } });
  await client.addJob(['/bin/true'], 'date', { runDate: new Date(), misfireGraceTime: null });
  await client.addJob(['/bin/true'], { cron: { hour: '9' }, jitter: 2 }, { coalesce: false, maxInstances: 2 });
  await client.addJob(['/bin/true'], apsd.allOf(apsd.cron({ hour: 9 }), apsd.interval({ minutes: 5 })));
  await client.addJob({ command: { argv: ['/bin/true'], timeout: 3 } }, { id: 'y', nextRunTime: null });
  await client.addJob(['/bin/true'], 'calendarinterval', { months: 1, hour: 8, overlapPolicy: 'QUEUE_ALL' });
  // @ts-expect-error: a cron trigger has no `seconds`
  await client.addJob(['/bin/true'], 'cron', { seconds: 5 });
  // @ts-expect-error: not a trigger type
  await client.addJob(['/bin/true'], 'weekly', {});

  const next: Date | null = a.nextRunTime;
  const mgt: number | null | undefined = b.misfireGraceTime;
  const j: Job | null = await client.getJob('x', { view: 'BASIC' });
  if (j && j.stats) { const runs: number = j.stats.runs; void runs; }
  const jobs: Job[] = await client.getJobs({ labelSelector: 'team=a', paused: false });
  await client.getJobs('memory');
  await client.modifyJob('x', { name: 'n', trigger: apsd.trigger('cron', { hour: 4 }), coalesce: undefined });
  await client.rescheduleJob('x', 'interval', { minutes: 10 });
  await client.rescheduleJob('x', { cron: { minute: '*/7' } });
  const p: Job = await client.pauseJob('x', { requestId: 'r1' });
  await client.resumeJob('x');
  const run = await client.runJob('x');
  await client.runJobNow('x');
  const runId: string = run.runId;
  await client.removeJob('x');
  const n: number = await client.removeAllJobs('memory');
  await client.removeAllJobs();
  const pv = await client.preview('cron', { hour: 9, count: 3, startTime: '2026-01-01T00:00:00Z' });
  const times: Date[] = pv.fireTimes;
  await client.preview({ interval: { seconds: 90 } }, { count: 2 });
  const bf = await client.backfill('x', { startTime: new Date(0), endTime: new Date(), validateOnly: true });
  const info = await client.getScheduler();
  const state: apsd.SchedulerState = info.state;
  await client.pause();
  await client.resume();

  const it: EventIterator = client.events({ types: ['JOB_EXECUTED', apsd.EventType.JOB_ERROR], jobIds: ['x'], after: 0 });
  await it.ready;
  for await (const ev of it) {
    const e: Event = ev;
    if (e.type === 'JOB_EXECUTED' && e.outcome) {
      const out: string = e.outcome.stdoutTail.toString();
      const rv: apsd.JsonValue = e.outcome.returnValue;
      void out; void rv;
    }
    break;
  }
  const seq: number | null = it.lastSequence;
  it.close();
  const ac = new AbortController();
  client.events({ signal: ac.signal, continueAfterGap: true, onGap: (g) => void g.firstAvailableSequence });

  const w = new Worker(client, { queue: 'q', maxInFlight: 2, leaseDuration: 10 });
  w.register('mod:fn', async function (this: apsd.RunContext, x: number, kw: { k: boolean[] }) {
    const ctx = currentRun();
    if (ctx) await ctx.extendLease(20);
    return { x, k: kw.k, run: this.runId, aborted: this.signal.aborted };
  });
  w.on('failure', ({ dispatch, error }) => void [dispatch.runId, error]);
  const done: Promise<void> = w.run();
  await w.stop({ timeoutMs: 100 });
  await done;
  const w2 = client.worker({ tasks: { t: () => 1 } }).start();
  const w3 = new Worker('127.0.0.1:50051', { client: { token: 't' }, tasks: { t: () => 1 } });
  void [w2, w3];

  try {
    await client.removeJob('missing');
  } catch (e) {
    if (e instanceof JobLookupError) { const code: number = e.code; const d: string = e.details; void [code, d]; }
    if (e instanceof ApsdError && e.code === apsd.status.ALREADY_EXISTS) throw e;
  }
  void [next, mgt, jobs, p, runId, n, times, bf, state, seq, c2, c3];
  client.close();
}

void usage;
