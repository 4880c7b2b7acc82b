'use strict';
// The promise-based client of apsd.v1.Scheduler: APScheduler's scheduler
// methods in camelCase (add_job -> addJob, ...), each one RPC.

const grpc = require('@grpc/grpc-js');
const { schema: loadSchema, snakeToCamel } = require('./proto');
const errors = require('./errors');
const { trigger: buildTrigger, isTriggerObject, isPlainObject, triggerArgNames } = require('./triggers');
const { EventIterator } = require('./events');

const DEFAULT_ADDRESS = '127.0.0.1:50051';
const DEFAULT_TIMEOUT_MS = 30000;

// Keywords of add_job that are not trigger arguments (camelCase).
const JOB_OPTIONS = new Set(['id', 'name', 'args', 'kwargs', 'queue', 'executor', 'jobstore', 'misfireGraceTime',
  'coalesce', 'maxInstances', 'overlapPolicy', 'labels', 'nextRunTime', 'paused', 'replaceExisting']);
// Options of every call.
const CALL_OPTIONS = new Set(['requestId', 'timeoutMs', 'signal']);
// modify_job's changes -> the Job fields (update_mask paths) they set.
const MODIFIABLE = {
  name: 'name',
  trigger: 'trigger',
  executor: 'executor',
  misfireGraceTime: 'misfire_grace_time',
  coalesce: 'coalesce',
  maxInstances: 'max_instances',
  overlapPolicy: 'overlap_policy',
  labels: 'labels',
  nextRunTime: 'next_run_time',
};
const TARGET_CHANGES = new Set(['func', 'target', 'args', 'kwargs', 'queue']);

function normalizeKeys(obj, where) {
  if (obj === undefined || obj === null) return {};
  if (!isPlainObject(obj)) throw new TypeError(`${where}: options must be an object`);
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    out[snakeToCamel(k)] = v;
  }
  return out;
}

function pick(obj, names) {
  const out = {};
  for (const n of names) if (n in obj) { out[n] = obj[n]; delete obj[n]; }
  return out;
}

function rejectUnknown(obj, where) {
  const keys = Object.keys(obj);
  if (keys.length) throw new TypeError(`${where}: unknown option${keys.length > 1 ? 's' : ''} ${keys.join(', ')}`);
}

/**
 * APScheduler's `func` -> an apsd.v1.Target: a string is a remote task
 * (`"module:func"`, run by a Worker), an array is a command's argv, an object
 * {command: {...}} or {remote: {...}} is a Target as is.
 */
function buildTarget(func, { args, kwargs, queue } = {}) {
  let target;
  if (typeof func === 'string') {
    target = { remote: { task: func } };
  } else if (Array.isArray(func)) {
    target = { command: { argv: func.map(String) } };
  } else if (isPlainObject(func) && (func.command || func.remote) && Object.keys(func).length === 1) {
    target = func.command ? { command: { ...func.command } } : { remote: { ...func.remote } };
  } else {
    throw new TypeError('func: expected a task name ("module:func"), an argv array, or {command: {...}} / ' +
                        '{remote: {...}}');
  }
  if (args !== undefined || kwargs !== undefined || queue !== undefined) {
    if (!target.remote) {
      throw new TypeError('args/kwargs/queue are for remote tasks; a command takes its arguments in argv');
    }
    if (args !== undefined) target.remote.args = args;
    if (kwargs !== undefined) target.remote.kwargs = kwargs;
    if (queue !== undefined) target.remote.queue = queue;
  }
  return target;
}

class Client {
  /**
   * @param {string} [address] host:port or unix:/path (default 127.0.0.1:50051)
   * @param {object} [options] token, tls, credentials, timeoutMs, channelOptions, protoDir
   */
  constructor(address = DEFAULT_ADDRESS, options = {}) {
    if (isPlainObject(address)) { options = address; address = options.address || DEFAULT_ADDRESS; }
    this.address = address;
    this.timeoutMs = options.timeoutMs || DEFAULT_TIMEOUT_MS;
    this._schema = loadSchema(options.protoDir);
    this._token = options.token || null;
    let creds = options.credentials;
    if (!creds) {
      if (options.tls) {
        const t = options.tls === true ? {} : options.tls;
        const buf = (x) => (x == null ? null : Buffer.isBuffer(x) ? x : Buffer.from(x));
        creds = grpc.credentials.createSsl(buf(t.ca), buf(t.key), buf(t.cert));
      } else {
        creds = grpc.credentials.createInsecure();
      }
    }
    const channelOptions = {
      // Reconnect quickly after a daemon restart (grpc-js' default backoff
      // starts at 1 s and grows to 120 s).
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
      ...(options.channelOptions || {}),
    };
    const Scheduler = grpc.makeGenericClientConstructor(this._schema.service('apsd.v1.Scheduler'), 'Scheduler');
    const Workers = grpc.makeGenericClientConstructor(this._schema.service('apsd.v1.Workers'), 'Workers');
    this._sched = new Scheduler(address, creds, channelOptions);
    this._workers = new Workers(address, creds, { ...channelOptions, channelOverride: this._sched.getChannel() });
    this._closed = false;
    this._iterators = new Set(); // open event iterators, ended by close()
  }

  _metadata() {
    const md = new grpc.Metadata();
    if (this._token) md.set('authorization', `Bearer ${this._token}`);
    return md;
  }

  /** Resolves once the channel is connected (or rejects after timeoutMs). */
  waitForReady(timeoutMs = this.timeoutMs) {
    return new Promise((resolve, reject) => {
      this._sched.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  }

  // One unary call: converts the request, maps errors to ApsdError classes
  // and converts the response.
  _call(stub, method, reqType, req, respType, opts = {}) {
    const callSite = new Error();
    let request;
    try {
      request = this._schema.fromJs(reqType, req, reqType.split('.').pop());
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + (opts.timeoutMs || this.timeoutMs);
      let onAbort = null;
      const call = stub[method](request, this._metadata(), { deadline }, (err, resp) => {
        if (onAbort) opts.signal.removeEventListener('abort', onAbort);
        if (err) reject(errors.fromGrpc(err, callSite));
        else resolve(this._schema.toJs(respType, resp));
      });
      if (opts.signal) {
        if (opts.signal.aborted) call.cancel();
        else {
          onAbort = () => call.cancel();
          opts.signal.addEventListener('abort', onAbort, { once: true });
        }
      }
    });
  }

  _s(method, reqType, req, respType, opts) {
    return this._call(this._sched, method, `apsd.v1.${reqType}`, req, `apsd.v1.${respType}`, opts);
  }

  /** @internal used by Worker */
  _w(method, reqType, req, respType, opts) {
    return this._call(this._workers, method, `apsd.v1.${reqType}`, req, `apsd.v1.${respType}`, opts);
  }

  // ---- jobs -------------------------------------------------------------------------------

  /**
   * APScheduler's add_job(func, trigger=None, **options):
   *   addJob(['/bin/echo', 'hi'], 'cron', {second: '*\/5', id: 'x', replaceExisting: true})
   *   addJob('myapp:cleanup', 'interval', {minutes: 5, args: [1], kwargs: {dry: true}})
   *   addJob(['/bin/true'], {cron: {hour: '9'}}, {id: 'y'})
   *   addJob(['/bin/true'], {runDate...})  -- no trigger: runs once, now (or at nextRunTime)
   * Options: id, name, args, kwargs, queue, executor, jobstore,
   * misfireGraceTime (seconds; null = unlimited), coalesce, maxInstances,
   * overlapPolicy, labels, nextRunTime (Date/ISO; null = add paused), paused,
   * replaceExisting, requestId, timeoutMs, plus the trigger's arguments.
   * Resolves to the stored Job.
   */
  async addJob(func, trigger, options) {
    if (options === undefined && isPlainObject(trigger) && !isTriggerObject(trigger)) {
      options = trigger;
      trigger = undefined;
    }
    const opts = normalizeKeys(options, 'addJob');
    const call = pick(opts, CALL_OPTIONS);
    const jobOpts = pick(opts, JOB_OPTIONS);
    let trig;
    if (typeof trigger === 'string') {
      const names = triggerArgNames(trigger);
      if (!names) buildTrigger(trigger); // throws: unknown trigger
      const targs = pick(opts, names);
      rejectUnknown(opts, 'addJob');
      trig = buildTrigger(trigger, targs);
    } else {
      rejectUnknown(opts, 'addJob');
      if (trigger !== undefined && trigger !== null) trig = buildTrigger(trigger);
    }
    const job = {
      id: jobOpts.id,
      name: jobOpts.name,
      trigger: trig,
      target: buildTarget(func, jobOpts),
      executor: jobOpts.executor,
      jobstore: jobOpts.jobstore,
      coalesce: jobOpts.coalesce,
      maxInstances: jobOpts.maxInstances,
      overlapPolicy: jobOpts.overlapPolicy,
      labels: jobOpts.labels,
      paused: jobOpts.paused,
    };
    if ('misfireGraceTime' in jobOpts) job.misfireGraceTime = jobOpts.misfireGraceTime;
    if (jobOpts.nextRunTime === null) job.paused = true; // APScheduler: next_run_time=None adds it paused
    else job.nextRunTime = jobOpts.nextRunTime;
    const req = { job, replaceExisting: jobOpts.replaceExisting, requestId: call.requestId };
    return this._s('AddJob', 'AddJobRequest', req, 'Job', call);
  }

  /**
   * APScheduler's get_job(job_id): the Job, or null if there is none.
   * options.view: 'FULL' (default, with stats) or 'BASIC'.
   */
  async getJob(jobId, options = {}) {
    const opts = normalizeKeys(options, 'getJob');
    const call = pick(opts, CALL_OPTIONS);
    const { view } = pick(opts, ['view']);
    rejectUnknown(opts, 'getJob');
    try {
      return await this._s('GetJob', 'GetJobRequest', { jobId, view }, 'Job', call);
    } catch (e) {
      if (e instanceof errors.JobLookupError) return null;
      throw e;
    }
  }

  /**
   * APScheduler's get_jobs(jobstore=None): every job (all pages), in
   * APScheduler's order: by next run time, paused jobs last, then by id. options: jobstore, paused (true/false filter), labelSelector, view
   * ('BASIC' default, 'FULL' with stats). A string argument is the jobstore.
   */
  async getJobs(options = {}) {
    if (typeof options === 'string') options = { jobstore: options };
    const opts = normalizeKeys(options, 'getJobs');
    const call = pick(opts, CALL_OPTIONS);
    const filt = pick(opts, ['jobstore', 'paused', 'labelSelector', 'view', 'pageSize']);
    rejectUnknown(opts, 'getJobs');
    const jobs = [];
    let pageToken = '';
    const seen = new Set();
    for (let page = 0; page < 100000; page++) {
      const r = await this._s('ListJobs', 'ListJobsRequest', { pageSize: 1000, ...filt, pageToken },
                              'ListJobsResponse', call);
      jobs.push(...r.jobs);
      pageToken = r.nextPageToken;
      if (!pageToken || seen.has(pageToken)) break;
      seen.add(pageToken);
    }
    // APScheduler's order (as the Python binding): by next run time, paused
    // jobs last, then by id.
    const key = (j) => (j.nextRunTime ? j.nextRunTime.getTime() : Infinity);
    return jobs.sort((a, b) => key(a) - key(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * APScheduler's modify_job(job_id, **changes): changes among name,
   * trigger (a trigger object, e.g. trigger('cron', {...})), func/target,
   * args, kwargs, queue, executor, misfireGraceTime, coalesce, maxInstances,
   * overlapPolicy, labels, nextRunTime; plus requestId, timeoutMs. A change
   * given as undefined resets the field to its default. Changing only
   * args/kwargs/queue keeps the job's task. Resolves to the modified Job.
   */
  async modifyJob(jobId, changes = {}) {
    if (!isPlainObject(changes)) throw new TypeError('modifyJob: changes must be an object');
    const ch = {};
    for (const [k, v] of Object.entries(changes)) ch[snakeToCamel(k)] = v; // keeps keys set to undefined
    const call = pick(ch, CALL_OPTIONS);
    const targetCh = pick(ch, TARGET_CHANGES);
    const job = { id: jobId };
    const paths = [];
    for (const [k, v] of Object.entries(ch)) {
      const p = MODIFIABLE[k];
      if (!p) throw new TypeError(`modifyJob: cannot change ${JSON.stringify(k)} (${Object.keys(MODIFIABLE)
        .concat([...TARGET_CHANGES]).join(', ')})`);
      paths.push(p);
      if (v === undefined) continue;
      if (k === 'trigger') job.trigger = buildTrigger(v);
      else if (k === 'nextRunTime' && v === null) {
        throw new TypeError('modifyJob: nextRunTime null would pause the job; use pauseJob');
      } else job[k] = v;
    }
    if (Object.keys(targetCh).length) {
      let func = targetCh.func !== undefined ? targetCh.func : targetCh.target;
      if (func === undefined) {
        const cur = await this._s('GetJob', 'GetJobRequest', { jobId, view: 'BASIC' }, 'Job', call);
        if (!cur.target || !cur.target.remote) {
          throw new TypeError('modifyJob: args/kwargs/queue apply to remote tasks only');
        }
        const r = cur.target.remote;
        func = { remote: { task: r.task, args: r.args, kwargs: r.kwargs, queue: r.queue } };
      }
      job.target = buildTarget(func, targetCh);
      paths.push('target');
    }
    if (!paths.length) throw new TypeError('modifyJob: no changes given');
    return this._s('ModifyJob', 'ModifyJobRequest', { job, updateMask: paths, requestId: call.requestId }, 'Job',
                   call);
  }

  /**
   * APScheduler's reschedule_job(job_id, trigger, **trigger_args): a new
   * trigger, next run time recomputed from now.
   *   rescheduleJob('x', 'interval', {seconds: 10})
   *   rescheduleJob('x', {cron: {hour: '4'}})
   */
  async rescheduleJob(jobId, trigger, args = {}) {
    const opts = normalizeKeys(args, 'rescheduleJob');
    const call = pick(opts, CALL_OPTIONS);
    let trig;
    if (typeof trigger === 'string') {
      const names = triggerArgNames(trigger);
      if (!names) buildTrigger(trigger);
      const targs = pick(opts, names);
      rejectUnknown(opts, 'rescheduleJob');
      trig = buildTrigger(trigger, targs);
    } else {
      rejectUnknown(opts, 'rescheduleJob');
      if (!trigger) throw new TypeError('rescheduleJob: a trigger is required');
      trig = buildTrigger(trigger);
    }
    return this._s('RescheduleJob', 'RescheduleJobRequest', { jobId, trigger: trig, requestId: call.requestId },
                   'Job', call);
  }

  _jobCall(method, jobId, options, respType = 'Job') {
    const opts = normalizeKeys(options, method);
    const call = pick(opts, CALL_OPTIONS);
    rejectUnknown(opts, method);
    return this._s(method, `${method}Request`, { jobId, requestId: call.requestId }, respType, call);
  }

  /** APScheduler's pause_job(job_id). Resolves to the Job (nextRunTime null). */
  pauseJob(jobId, options) { return this._jobCall('PauseJob', jobId, options); }

  /** APScheduler's resume_job(job_id). Resolves to the Job. */
  resumeJob(jobId, options) { return this._jobCall('ResumeJob', jobId, options); }

  /** One extra run now, schedule unchanged (APScheduler 4's run_job): {runId, scheduledRunTime, queued}. */
  runJob(jobId, options) { return this._jobCall('RunJobNow', jobId, options, 'RunJobNowResponse'); }

  /** runJob under the RPC's name. */
  runJobNow(jobId, options) { return this.runJob(jobId, options); }

  /** APScheduler's remove_job(job_id). */
  async removeJob(jobId, options) {
    await this._jobCall('RemoveJob', jobId, options, 'RemoveJobResponse');
  }

  /** APScheduler's remove_all_jobs(jobstore=None). Resolves to the number removed. */
  async removeAllJobs(jobstore, options) {
    if (isPlainObject(jobstore) && options === undefined) { options = jobstore; jobstore = undefined; }
    const opts = normalizeKeys(options, 'removeAllJobs');
    const call = pick(opts, CALL_OPTIONS);
    if (jobstore === undefined && 'jobstore' in opts) jobstore = pick(opts, ['jobstore']).jobstore;
    rejectUnknown(opts, 'removeAllJobs');
    const r = await this._s('RemoveAllJobs', 'RemoveAllJobsRequest', { jobstore, requestId: call.requestId },
                            'RemoveAllJobsResponse', call);
    return r.removedCount;
  }

  /**
   * The next fire times of a trigger, without adding a job:
   *   preview('cron', {hour: 9, count: 3, startTime: new Date(...)})
   *   preview({interval: {seconds: 3}}, {count: 5})
   * Resolves to {fireTimes: Date[], effectiveTrigger, description}.
   */
  async preview(trigger, options = {}) {
    const opts = normalizeKeys(options, 'preview');
    const call = pick(opts, CALL_OPTIONS);
    const { count, startTime } = pick(opts, ['count', 'startTime']);
    let trig;
    if (typeof trigger === 'string') {
      const names = triggerArgNames(trigger);
      if (!names) buildTrigger(trigger);
      trig = buildTrigger(trigger, pick(opts, names));
    } else {
      trig = buildTrigger(trigger);
    }
    rejectUnknown(opts, 'preview');
    return this._s('PreviewTrigger', 'PreviewTriggerRequest', { trigger: trig, count, startTime },
                   'PreviewTriggerResponse', call);
  }

  /**
   * Runs a job for each of its fire times in [startTime, endTime): options
   * startTime, endTime, maxRuns, validateOnly, requestId.
   * Resolves to {scheduledRunTimes, runIds, truncated}.
   */
  async backfill(jobId, options = {}) {
    const opts = normalizeKeys(options, 'backfill');
    const call = pick(opts, CALL_OPTIONS);
    const b = pick(opts, ['startTime', 'endTime', 'maxRuns', 'validateOnly']);
    rejectUnknown(opts, 'backfill');
    return this._s('Backfill', 'BackfillRequest', { jobId, ...b, requestId: call.requestId }, 'BackfillResponse',
                   call);
  }

  // ---- the scheduler ----------------------------------------------------------------------

  /** State, version, time zone, stores, executors, event log bounds. */
  getScheduler(options) {
    const call = pick(normalizeKeys(options, 'getScheduler'), CALL_OPTIONS);
    return this._s('GetScheduler', 'GetSchedulerRequest', {}, 'SchedulerInfo', call);
  }

  /** APScheduler's pause(): no job fires until resume(). Resolves to the SchedulerInfo. */
  pause(options) {
    const call = pick(normalizeKeys(options, 'pause'), CALL_OPTIONS);
    return this._s('PauseScheduler', 'PauseSchedulerRequest', { requestId: call.requestId }, 'SchedulerInfo', call);
  }

  /** APScheduler's resume(). Resolves to the SchedulerInfo. */
  resume(options) {
    const call = pick(normalizeKeys(options, 'resume'), CALL_OPTIONS);
    return this._s('ResumeScheduler', 'ResumeSchedulerRequest', { requestId: call.requestId }, 'SchedulerInfo',
                   call);
  }

  // ---- events and workers -----------------------------------------------------------------

  /**
   * An async iterator of events (APScheduler's add_listener, as a stream):
   *   for await (const ev of client.events({types: ['JOB_EXECUTED'], jobIds: ['x']})) ...
   * It reconnects by itself (UNAVAILABLE, stream end, daemon restart) and
   * resumes after the last sequence it saw, so nothing is missed or repeated.
   * options: types, jobIds, after (a sequence: replay from the log after it),
   * continueAfterGap, onGap, reconnect (default true), backoffMs, maxBackoffMs,
   * highWaterMark, signal (AbortSignal).
   */
  events(options = {}) {
    return new EventIterator(this, normalizeKeys(options, 'events'));
  }

  /** A Worker for remote tasks on this client's channel (see Worker). */
  worker(options = {}) {
    const { Worker } = require('./worker');
    return new Worker(this, options);
  }

  /**
   * Closes the channel. Its event iterators end (a pending next() resolves
   * done); grpc-js lets other calls in progress finish. Stop workers first.
   */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const it of [...this._iterators]) it.close();
    this._sched.close();
  }
}

module.exports = { Client, buildTarget, DEFAULT_ADDRESS };
