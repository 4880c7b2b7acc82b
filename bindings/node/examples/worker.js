'use strict';
// A worker running JS functions for jobs with a remote target, and a client
// scheduling them: one succeeds every 2 s, one throws once.
//
//   node examples/worker.js [HOST:PORT] [SECONDS]
const apsd = require('..');

async function main(address = process.env.APSD || '127.0.0.1:50051', seconds = 5) {
  const client = new apsd.Client(address);
  const worker = new apsd.Worker(client, { queue: 'reports' });
  worker.register('reports:build', async (team, { format }) => {
    const run = apsd.currentRun();
    return { team, format, scheduledFor: run.scheduledRunTimes[0] };
  });
  worker.register('reports:fail', () => {
    throw new RangeError('no data for 2026-02-30');
  });
  const done = worker.run();

  const events = client.events({ types: ['JOB_EXECUTED', 'JOB_ERROR'], jobIds: ['build', 'fail'],
    signal: AbortSignal.timeout(seconds * 1000) });
  await events.ready;
  await client.addJob('reports:build', 'interval', { seconds: 2, id: 'build', args: ['ops'],
    kwargs: { format: 'pdf' }, queue: 'reports', replaceExisting: true });
  await client.addJob('reports:fail', { id: 'fail', queue: 'reports', replaceExisting: true });
  try {
    for await (const ev of events) {
      const o = ev.outcome;
      console.log(ev.type === 'JOB_EXECUTED'
        ? `${ev.jobId}: returned ${JSON.stringify(o.returnValue)}`
        : `${ev.jobId}: ${o.error}\n${o.traceback.split('\n').slice(0, 2).join('\n')}`);
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  }
  await client.removeJob('build');
  await worker.stop();
  await done;
  client.close();
}

if (require.main === module) {
  main(process.argv[2], Number(process.argv[3] || 5)).catch((e) => { console.error(e); process.exit(1); });
}
