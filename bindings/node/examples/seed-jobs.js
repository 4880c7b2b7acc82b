'use strict';
// The seed's three jobs (tools/grpcurl/add-seed-jobs), each running a command:
//   seed-cron      cron second=*/5        echo 定时任务
//   seed-once      a date 12 s from now   echo 一次性任务
//   seed-interval  interval of 3 s        echo 循环任务
// then prints what the runs wrote, from the event stream.
//
//   node examples/seed-jobs.js [HOST:PORT] [SECONDS]
const apsd = require('..');

async function addSeedJobs(client, { onceAfterSeconds = 12 } = {}) {
  return [
    await client.addJob(['/bin/echo', '定时任务'], 'cron', { second: '*/5', id: 'seed-cron', replaceExisting: true }),
    await client.addJob(['/bin/echo', '一次性任务'], 'date', {
      runDate: new Date(Date.now() + onceAfterSeconds * 1000), id: 'seed-once', replaceExisting: true }),
    await client.addJob(['/bin/echo', '循环任务'], 'interval', { seconds: 3, id: 'seed-interval',
      replaceExisting: true }),
  ];
}

async function main(address = process.env.APSD || '127.0.0.1:50051', seconds = 14) {
  const client = new apsd.Client(address);
  const events = client.events({ types: ['JOB_EXECUTED', 'JOB_ERROR'],
    jobIds: ['seed-cron', 'seed-once', 'seed-interval'], signal: AbortSignal.timeout(seconds * 1000) });
  await events.ready;
  for (const job of await addSeedJobs(client)) {
    console.log(`added ${job.id.padEnd(13)} next run ${job.nextRunTime.toISOString()}`);
  }
  try {
    for await (const ev of events) {
      console.log(`${ev.time.toISOString()}  ${ev.jobId.padEnd(13)} ${ev.type}  ` +
                  `${ev.outcome.stdoutTail.toString().trim()}`);
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  } finally {
    client.close();
  }
}

module.exports = { addSeedJobs };

if (require.main === module) {
  main(process.argv[2], Number(process.argv[3] || 14)).catch((e) => { console.error(e); process.exit(1); });
}
