'use strict';
// Worker: runs JS functions for jobs with a `remote` target. It holds an
// apsd.v1.Workers/Acquire stream for one queue (asking only for the tasks it
// has registered), calls the registered function of each dispatch with the
// job's args (and kwargs as a last argument when there are any), keeps the
// lease alive with ExtendLease while the function runs, and reports the
// return value or the thrown error (type, message, stack) with Complete.

const os = require('os');
const crypto = require('crypto');
const { EventEmitter } = require('events');
const { AsyncLocalStorage } = require('async_hooks');
const { status } = require('@grpc/grpc-js');
const errors = require('./errors');
const { jsToValue } = require('./proto');

const runStorage = new AsyncLocalStorage();

/** The run the calling task function is executing (null outside a task). */
function currentRun() {
  return runStorage.getStore() || null;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The stack as the task's author wants to see it: the frames of this
// package and below (the gRPC stream that delivered the dispatch) are cut.
function taskStack(stack) {
  const lines = String(stack || '').split('\n');
  const cut = lines.findIndex((l, i) => i > 0 && l.includes(__dirname));
  return (cut > 0 ? lines.slice(0, cut) : lines).join('\n');
}

function describeError(e) {
  if (e instanceof Error) {
    let type = e.name || 'Error';
    if (type === 'Error' && e.constructor && e.constructor.name && e.constructor.name !== 'Error') {
      type = e.constructor.name;
    }
    return { type, message: String(e.message), traceback: taskStack(e.stack) };
  }
  const type = e === null ? 'null' : (e && e.constructor && e.constructor.name) || typeof e;
  let message;
  try { message = typeof e === 'string' ? e : JSON.stringify(e); } catch (_) { message = String(e); }
  return { type, message: String(message), traceback: '' };
}

function isRetryableStreamEnd(err) {
  if (err === null) return true;
  return err.code === status.UNAVAILABLE || err.code === status.INTERNAL || err.code === status.UNKNOWN;
}

class Worker extends EventEmitter {
  /**
   * @param {Client|string} [client] a Client, or an address for a channel of its own
   * @param {object} [options] client (Client options, with an address), queue ('default'), workerId (unique per Worker by
   *   default), maxInFlight (4), leaseDuration (seconds; the daemon's default
   *   when unset), tasks ({name: fn}), stopTimeoutMs (30000), backoffMs,
   *   maxBackoffMs
   */
  constructor(client, options = {}) {
    super();
    if (client === undefined || client === null || typeof client === 'string') {
      // An address: the worker has its own channel and closes it when stopped.
      const { Client } = require('./client');
      client = new Client(client || undefined, options.client || {});
      this._ownClient = true;
    }
    this.client = client;
    this.queue = options.queue || 'default';
    this.workerId = options.workerId ||
      `${os.hostname()}/pid-${process.pid}/${crypto.randomBytes(3).toString('hex')}`;
    this.maxInFlight = options.maxInFlight || 4;
    this.leaseDuration = options.leaseDuration; // seconds
    this.stopTimeoutMs = options.stopTimeoutMs ?? 30000;
    this._backoffMs = options.backoffMs ?? 200;
    this._maxBackoffMs = options.maxBackoffMs ?? 5000;
    this._tasks = new Map();
    for (const [name, fn] of Object.entries(options.tasks || {})) this.register(name, fn);
    this._runs = new Map(); // runId -> {controller, promise}
    this._call = null;
    this._timer = null;
    this._state = 'idle'; // idle | running | stopping | stopped
    this._attempt = 0;
    this._done = null;
    this._resolveDone = null;
    this._rejectDone = null;
  }

  /** Registers `fn` as the function of task `name` (e.g. "myapp.jobs:cleanup"). */
  register(name, fn) {
    if (typeof name !== 'string' || !name) throw new TypeError('register: the task name must be a non-empty string');
    if (typeof fn !== 'function') throw new TypeError(`register: the function of ${name} is not a function`);
    this._tasks.set(name, fn);
    if (this._state === 'running' && this._call) this._call.cancel(); // reconnects with the new task list
    return this;
  }

  /** The names of the registered tasks. */
  get tasks() { return [...this._tasks.keys()]; }

  /** Runs being executed now. */
  get inFlight() { return this._runs.size; }

  get running() { return this._state === 'running'; }

  /**
   * Starts taking runs. Returns a promise that resolves when stop() has
   * finished, or rejects if the daemon refuses the worker (e.g. ABORTED:
   * another worker with the same id; INVALID_ARGUMENT).
   */
  run() {
    if (this._state === 'running' || this._state === 'stopping') return this._done;
    if (this._tasks.size === 0) return Promise.reject(new TypeError('Worker: register at least one task first'));
    this._state = 'running';
    this._done = new Promise((resolve, reject) => { this._resolveDone = resolve; this._rejectDone = reject; });
    this._connect();
    return this._done;
  }

  /** start() = run() without waiting; errors are emitted as 'fatal'. */
  start() {
    this.run().catch((e) => this.emit('fatal', e));
    return this;
  }

  _connect() {
    this._timer = null;
    if (this._state !== 'running') return;
    const s = this.client._schema;
    const req = { queue: this.queue, workerId: this.workerId, maxInFlight: this.maxInFlight, tasks: this.tasks };
    if (this.leaseDuration) req.leaseDuration = this.leaseDuration;
    let request;
    try {
      request = s.fromJs('apsd.v1.AcquireRequest', req);
    } catch (e) {
      this._fatal(e);
      return;
    }
    let call;
    try {
      call = this.client._workers.Acquire(request, this.client._metadata(), {});
    } catch (e) { // e.g. the client was closed
      this._fatal(e);
      return;
    }
    this._call = call;
    let ended = false;
    const end = (err) => {
      if (ended) return;
      ended = true;
      if (this._call === call) this._call = null;
      this._onStreamEnd(err);
    };
    call.on('data', (resp) => {
      this._attempt = 0;
      if (resp.item === 'dispatch') this._execute(s.toJs('apsd.v1.Dispatch', resp.dispatch));
      else if (resp.item === 'cancel') this._cancel(s.toJs('apsd.v1.CancelRun', resp.cancel));
    });
    call.on('error', (err) => end(err));
    call.on('status', (st) => { if (st.code === status.OK) end(null); });
    call.on('end', () => setImmediate(() => end(null)));
  }

  _onStreamEnd(err) {
    if (this._state !== 'running') return;
    if (err && err.code === status.CANCELLED) err = null; // our own cancel (a new task was registered)
    if (isRetryableStreamEnd(err)) {
      const base = Math.min(this._maxBackoffMs, this._backoffMs * 2 ** Math.min(this._attempt, 20));
      const delay = Math.round(base / 2 + Math.random() * base / 2);
      this._attempt++;
      this.emit('reconnecting', err ? errors.fromGrpc(err) : null, delay);
      this._timer = setTimeout(() => this._connect(), delay);
      return;
    }
    this._fatal(errors.fromGrpc(err));
  }

  _fatal(err) {
    const reject = this._rejectDone;
    this._rejectDone = null;
    this._resolveDone = null;
    this.stop().then(() => reject && reject(err), () => reject && reject(err));
  }

  _cancel(c) {
    const r = this._runs.get(c.runId);
    if (!r) return;
    r.cancelled = true;
    const reason = new Error(`run ${c.runId} cancelled: ${c.reason}`);
    reason.name = 'RunCancelled';
    r.controller.abort(reason);
    this.emit('cancel', c);
  }

  _execute(d) {
    const controller = new AbortController();
    const entry = { controller, cancelled: false, dispatch: d, promise: null };
    this._runs.set(d.runId, entry);
    entry.promise = this._executeRun(d, entry).finally(() => this._runs.delete(d.runId));
  }

  async _executeRun(d, entry) {
    this.emit('dispatch', d);
    const fn = this._tasks.get(d.task);
    const leaseSec = d.leaseDuration || 30;
    let leaseDeadline = d.leaseDeadline;
    const ctx = {
      runId: d.runId,
      jobId: d.jobId,
      jobName: d.jobName,
      task: d.task,
      queue: d.queue,
      scheduledRunTimes: d.scheduledRunTimes,
      get leaseDeadline() { return leaseDeadline; },
      signal: entry.controller.signal,
      worker: this,
      /** Extends the lease now (it is also extended every third of its length). */
      extendLease: async (seconds) => {
        const r = await this.client._w('ExtendLease', 'ExtendLeaseRequest',
          { runId: d.runId, leaseToken: d.leaseToken, leaseDuration: seconds }, 'ExtendLeaseResponse');
        leaseDeadline = r.leaseDeadline;
        return r;
      },
    };
    // Heartbeat: a third of the lease, so two may fail before it expires.
    const heartbeat = setInterval(() => {
      ctx.extendLease().catch((e) => {
        if (e instanceof errors.FailedPreconditionError || e instanceof errors.JobLookupError) {
          // The run is over for the daemon (lease expired, cancelled): stop it.
          entry.cancelled = true;
          const reason = new Error(`run ${d.runId} lost its lease: ${e.details}`);
          reason.name = 'LeaseLost';
          entry.controller.abort(reason);
        }
      });
    }, Math.max(100, (leaseSec * 1000) / 3));
    let result;
    try {
      if (!fn) {
        const e = new Error(`no function registered for task ${JSON.stringify(d.task)} on worker ${this.workerId}`);
        e.name = 'LookupError';
        throw e;
      }
      const args = Array.isArray(d.args) ? d.args : [];
      const kw = d.kwargs && Object.keys(d.kwargs).length ? [d.kwargs] : [];
      const value = await runStorage.run(ctx, () => fn.apply(ctx, [...args, ...kw]));
      if (value === undefined) result = {};
      else {
        try {
          result = { returnValue: jsToValue(value, 'return value') };
        } catch (e) {
          e.message = `the task returned a value that is not JSON-representable: ${e.message}`;
          throw e;
        }
      }
      this.emit('success', { dispatch: d, value });
    } catch (e) {
      result = { error: describeError(e) };
      this.emit('failure', { dispatch: d, error: e });
    } finally {
      clearInterval(heartbeat);
    }
    if (entry.cancelled) return; // the daemon already ended the run
    await this._complete(d, result);
  }

  // Complete, retried while the daemon is unreachable (the lease outlives the
  // stream, and repeating a Complete that succeeded is harmless).
  async _complete(d, result) {
    const s = this.client._schema;
    const req = { runId: d.runId, leaseToken: d.leaseToken };
    const msg = s.fromJs('apsd.v1.CompleteRequest', req);
    if (result.returnValue) msg.returnValue = result.returnValue;
    if (result.error) msg.error = result.error;
    const until = Date.now() + Math.max(5000, (d.leaseDuration || 30) * 1000);
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise((resolve, reject) => {
          this.client._workers.Complete(msg, this.client._metadata(), { deadline: Date.now() + this.client.timeoutMs },
                                        (err) => (err ? reject(err) : resolve()));
        });
        this.emit('complete', { dispatch: d, result });
        return;
      } catch (err) {
        const e = errors.fromGrpc(err);
        if (e.code !== status.UNAVAILABLE || Date.now() > until) {
          this.emit('completeError', { dispatch: d, error: e });
          return;
        }
        await sleep(Math.min(2000, 100 * 2 ** attempt));
      }
    }
  }

  /**
   * Stops: no new runs are taken; runs in progress may finish for
   * timeoutMs (default stopTimeoutMs), then the rest are aborted (their
   * signal fires) and reported as errors. Resolves when done.
   */
  async stop({ timeoutMs = this.stopTimeoutMs } = {}) {
    if (this._state === 'stopped' || this._state === 'idle') { this._state = 'stopped'; return; }
    if (this._state === 'stopping') { await this._stopping; return; }
    this._state = 'stopping';
    this._stopping = (async () => {
      if (this._timer) { clearTimeout(this._timer); this._timer = null; }
      if (this._call) { const c = this._call; this._call = null; c.cancel(); }
      const pending = () => [...this._runs.values()].map((r) => r.promise);
      let timer;
      const timeout = new Promise((r) => { timer = setTimeout(r, timeoutMs); });
      await Promise.race([Promise.allSettled(pending()), timeout]);
      clearTimeout(timer);
      if (this._runs.size) {
        // Abandoned runs: report them now instead of letting their leases expire.
        const left = [...this._runs.values()];
        await Promise.allSettled(left.map(async (r) => {
          r.cancelled = true;
          const reason = new Error('the worker stopped before the task finished');
          reason.name = 'WorkerStopped';
          r.controller.abort(reason);
          await this._complete(r.dispatch, { error: describeError(reason) });
        }));
      }
      this._state = 'stopped';
      if (this._ownClient) this.client.close();
      this.emit('stopped');
      if (this._resolveDone) { this._resolveDone(); this._resolveDone = null; this._rejectDone = null; }
    })();
    await this._stopping;
  }
}

module.exports = { Worker, currentRun };
