'use strict';
// Events as an async iterator: a replay of the log, then live events, and
// resuming after the last sequence seen.
//   node examples/events.js [HOST:PORT] [JOB_ID]
const apsd = require('..');

async function main(address = process.env.APSD || '127.0.0.1:50051', jobId = 'seed-interval') {
  const client = new apsd.Client(address);
  // From the oldest logged event (after: 0), then live; filters combine with AND.
  const events = client.events({ after: 0, types: ['JOB_EXECUTED', 'JOB_ERROR'], jobIds: [jobId] });
  let n = 0;
  for await (const ev of events) {
    console.log(ev.sequence, ev.type, ev.time.toISOString(), ev.outcome.stdoutTail.toString().trim());
    if (++n === 3) break; // break (or events.close()) cancels the stream
  }
  // Later, or in another process: carry on right after the last one seen. If
  // the daemon restarts meanwhile, the iterator reconnects and resumes by itself.
  const more = client.events({ after: events.lastSequence, types: ['JOB_EXECUTED'], jobIds: [jobId],
    signal: AbortSignal.timeout(4000) });
  try {
    for await (const ev of more) console.log(ev.sequence, ev.type, ev.time.toISOString(), '(resumed)');
  } catch (e) {
    if (e.name !== 'AbortError') throw e; // the signal ended it
  }
  client.close();
}

if (require.main === module) main(process.argv[2], process.argv[3]).catch((e) => { console.error(e); process.exit(1); });
