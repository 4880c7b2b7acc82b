'use strict';
// Connect, look at the scheduler, see how errors look.
//   node examples/connect.js [HOST:PORT]
const apsd = require('..');

async function main(address = process.env.APSD || '127.0.0.1:50051') {
  const client = new apsd.Client(address); // options: {token, tls: {ca, cert, key}, timeoutMs}
  const info = await client.getScheduler();
  console.log(info.state, info.version, info.defaultTimezone,
              info.jobstores.map((s) => `${s.name}:${s.type}`).join(' '));
  console.log(await client.getJob('no-such-job')); // null, as APScheduler's get_job
  try {
    await client.removeJob('no-such-job');
  } catch (e) {
    console.log(e instanceof apsd.JobLookupError, e.code, e.codeName, e.details);
  }
  try {
    await client.addJob(['/bin/true'], 'cron', { hour: 25 });
  } catch (e) {
    console.log(e.name, e.details);
  }
  client.close();
}

if (require.main === module) main(process.argv[2]).catch((e) => { console.error(e); process.exit(1); });
