'use strict';
// Test helpers: the real apsd on a free 127.0.0.1 port with a temporary data
// directory (the pattern of tests/e2e/test_service.py). Every wait is bounded.

const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const apsd = require('..');

function findApsd() {
  const cands = [];
  if (process.env.APSD) cands.push(process.env.APSD);
  cands.push(path.resolve(__dirname, '..', '..', '..', 'bazel-bin', 'service', 'apsd'));
  for (const c of cands) {
    if (fs.existsSync(c)) return c;
  }
  throw new Error(`apsd not found (set APSD; looked in ${cands.join(', ')}); build it: bazel build //service:apsd`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
async function waitFor(fn, { timeoutMs = 15000, intervalMs = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Resolves `p`, or rejects after `ms` (so no test waits forever). */
function within(ms, p, what = 'operation') {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms); }),
  ]);
}

// Daemons still running when the test process ends (a crash, a timeout's
// SIGTERM) are killed, so no apsd outlives its test.
const live = new Set();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.once(sig, () => {
    for (const p of live) p.kill('SIGKILL');
    process.exit(128 + (sig === 'SIGTERM' ? 15 : 2));
  });
}

class Daemon {
  constructor({ extra = [], dataDir } = {}) {
    this.bin = findApsd();
    this.extra = extra;
    this.tmp = dataDir ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'apsd-node-'));
    this.dir = dataDir || this.tmp;
    this.port = null;
    this.proc = null;
    this.logPath = path.join(this.dir, 'apsd.log');
  }

  get address() { return `127.0.0.1:${this.port}`; }

  /** Starts apsd (on a new free port, or on `port` to restart in place). */
  async start(port) {
    for (let attempt = 0; attempt < 5; attempt++) {
      this.port = port || await freePort();
      const log = fs.openSync(this.logPath, 'a');
      const proc = spawn(this.bin, ['--listen', this.address, '--data-dir', path.join(this.dir, 'store'),
        ...this.extra], { stdio: ['ignore', log, log] });
      fs.closeSync(log);
      this.proc = proc;
      live.add(proc);
      this.exited = new Promise((resolve) => proc.on('exit', (code, sig) => {
        live.delete(proc);
        resolve(code === null ? sig : code);
      }));
      const probe = new apsd.Client(this.address, { timeoutMs: 2000 });
      try {
        const end = Date.now() + 15000;
        for (;;) {
          if (proc.exitCode !== null || proc.signalCode !== null) break;
          try {
            await probe.getScheduler({ timeoutMs: 1000 });
            return this;
          } catch (e) {
            if (e instanceof apsd.UnauthenticatedError) return this; // up, with --token-file
            if (Date.now() > end) throw new Error(`apsd did not answer in 15 s:\n${this.log()}`);
            await sleep(50);
          }
        }
      } finally {
        probe.close();
      }
      if (port) break; // a fixed port: do not try another
    }
    throw new Error(`apsd did not start:\n${this.log()}`);
  }

  log() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch (_) { return ''; }
  }

  /** SIGTERM, then SIGKILL after timeoutMs; resolves to the exit code. */
  async stop(timeoutMs = 20000) {
    const proc = this.proc;
    if (!proc) return null;
    this.proc = null;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    let t;
    const rc = await Promise.race([this.exited, new Promise((r) => { t = setTimeout(() => r('timeout'), timeoutMs); })]);
    clearTimeout(t);
    if (rc === 'timeout') {
      proc.kill('SIGKILL');
      await this.exited;
    }
    return rc;
  }

  async restart() {
    const rc = await this.stop();
    await this.start(this.port);
    return rc;
  }

  cleanup() {
    if (this.proc) this.proc.kill('SIGKILL');
    if (this.tmp) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** Starts a daemon and a client for one test file; `after` stops both. */
async function setup(t, opts) {
  const d = new Daemon(opts);
  await d.start();
  const client = new apsd.Client(d.address, { timeoutMs: 10000 });
  return { d, client };
}

/** Collects events from an iterator in the background. */
function collect(iter) {
  const c = { events: [], error: null, done: false };
  c.finished = (async () => {
    try {
      for await (const ev of iter) c.events.push(ev);
    } catch (e) {
      c.error = e;
    } finally {
      c.done = true;
    }
  })();
  c.waitFor = (pred, timeoutMs = 15000, what = 'events') =>
    waitFor(() => c.error ? Promise.reject(c.error) : pred(c.events), { timeoutMs, what });
  return c;
}

module.exports = { Daemon, setup, freePort, sleep, waitFor, within, collect, findApsd };
