// Type declarations of the `apsd` package (lib/*.js, hand-written).
//
// Field names are camelCase (proto-loader's keepCase: false): `next_run_time`
// is `nextRunTime`. Inputs also accept the snake_case names at run time.
// Timestamps are Date (input: Date, ISO 8601 string or ms since the epoch),
// durations are numbers of seconds, enums are their value names without the
// type prefix (`JOB_EXECUTED`, `SUCCEEDED`, `QUEUE_ALL`).

/// <reference types="node" />

import type { ChannelCredentials, ChannelOptions, Metadata } from '@grpc/grpc-js';
import type { EventEmitter } from 'events';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
/** A point in time as input: a Date, an ISO 8601 string or milliseconds since the epoch. */
export type DateInput = Date | string | number;

// ---- enums ------------------------------------------------------------------------------------

export type EventTypeName =
  | 'SCHEDULER_STARTED' | 'SCHEDULER_SHUTDOWN' | 'SCHEDULER_PAUSED' | 'SCHEDULER_RESUMED'
  | 'EXECUTOR_ADDED' | 'EXECUTOR_REMOVED' | 'JOBSTORE_ADDED' | 'JOBSTORE_REMOVED' | 'ALL_JOBS_REMOVED'
  | 'JOB_ADDED' | 'JOB_REMOVED' | 'JOB_MODIFIED' | 'JOB_EXECUTED' | 'JOB_ERROR' | 'JOB_MISSED'
  | 'JOB_SUBMITTED' | 'JOB_MAX_INSTANCES';
export type OverlapPolicy = 'UNSPECIFIED' | 'SKIP' | 'QUEUE_ONE' | 'QUEUE_ALL' | 'CANCEL_RUNNING';
export type RunStatus =
  | 'UNSPECIFIED' | 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'CANCELLED' | 'LEASE_EXPIRED' | 'START_FAILED';
export type SchedulerState = 'UNSPECIFIED' | 'STOPPED' | 'RUNNING' | 'PAUSED';
export type JobView = 'UNSPECIFIED' | 'BASIC' | 'FULL';

/** APScheduler's EVENT_* names, as Event.type reports them. */
export const EventType: { readonly [K in EventTypeName]: K };

// ---- triggers ---------------------------------------------------------------------------------

/** APScheduler's CronTrigger fields: expression strings (numbers are accepted on input). */
export interface CronTrigger {
  year?: string | number;
  month?: string | number;
  day?: string | number;
  week?: string | number;
  dayOfWeek?: string | number;
  hour?: string | number;
  minute?: string | number;
  second?: string | number;
  /** A 5-field crontab line instead of the fields above. */
  crontab?: string;
  startDate?: DateInput | null;
  endDate?: DateInput | null;
  timezone?: string;
}
export interface IntervalTrigger {
  weeks?: number;
  days?: number;
  hours?: number;
  minutes?: number;
  /** Fractions are allowed (sent as seconds + microseconds). */
  seconds?: number;
  microseconds?: number;
  startDate?: DateInput | null;
  endDate?: DateInput | null;
  timezone?: string;
}
export interface DateTrigger {
  runDate?: DateInput | null;
  timezone?: string;
}
export interface CalendarIntervalTrigger {
  years?: number;
  months?: number;
  weeks?: number;
  days?: number;
  hour?: number;
  minute?: number;
  second?: number;
  startDate?: DateInput | null;
  endDate?: DateInput | null;
  timezone?: string;
}
/** An apsd.v1.Trigger as input: exactly one kind, plus an optional jitter (seconds). */
export interface TriggerInput {
  cron?: CronTrigger;
  interval?: IntervalTrigger;
  date?: DateTrigger;
  calendarInterval?: CalendarIntervalTrigger;
  allOf?: { triggers: TriggerInput[] };
  anyOf?: { triggers: TriggerInput[] };
  jitter?: number | null;
}
/** A trigger as the daemon returns it (with defaults filled in; '' = field not given). */
export interface Trigger {
  cron?: Required<{ [K in keyof CronTrigger]: K extends 'startDate' | 'endDate' ? Date | null : string }>;
  interval?: {
    weeks: number; days: number; hours: number; minutes: number; seconds: number; microseconds: number;
    startDate: Date | null; endDate: Date | null; timezone: string;
  };
  date?: { runDate: Date | null; timezone: string };
  calendarInterval?: {
    years: number; months: number; weeks: number; days: number; hour: number; minute: number; second: number;
    startDate: Date | null; endDate: Date | null; timezone: string;
  };
  allOf?: { triggers: Trigger[] };
  anyOf?: { triggers: Trigger[] };
  /** Seconds; null = no jitter. */
  jitter: number | null;
}

export type TriggerType = 'cron' | 'interval' | 'date' | 'calendarinterval' | 'calendar_interval' | 'calendarInterval';
export interface TriggerArgs {
  cron: CronTrigger & { jitter?: number };
  interval: IntervalTrigger & { jitter?: number };
  date: DateTrigger & { jitter?: number };
  calendarinterval: CalendarIntervalTrigger & { jitter?: number };
  calendar_interval: CalendarIntervalTrigger & { jitter?: number };
  calendarInterval: CalendarIntervalTrigger & { jitter?: number };
}

/** APScheduler's trigger name and keywords -> a trigger object. */
export function trigger<T extends TriggerType>(type: T, args?: TriggerArgs[T]): TriggerInput;
export function trigger(type: TriggerInput): TriggerInput;
export function cron(args: CronTrigger & { jitter?: number }): TriggerInput;
export function interval(args: IntervalTrigger & { jitter?: number }): TriggerInput;
export function date(runDate: DateInput, args?: { timezone?: string }): TriggerInput;
export function date(args: DateTrigger): TriggerInput;
export function calendarInterval(args: CalendarIntervalTrigger & { jitter?: number }): TriggerInput;
/** APScheduler's AndTrigger. */
export function allOf(...triggers: Array<TriggerInput | TriggerInput[]>): TriggerInput;
/** APScheduler's OrTrigger. */
export function anyOf(...triggers: Array<TriggerInput | TriggerInput[]>): TriggerInput;

// ---- targets and jobs -------------------------------------------------------------------------

export interface CommandTargetInput {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Seconds. */
  timeout?: number | null;
  maxOutputBytes?: number;
}
export interface RemoteTargetInput {
  task: string;
  args?: JsonValue[];
  kwargs?: { [key: string]: JsonValue };
  queue?: string;
}
/**
 * APScheduler's `func`: a task name ("module:func", run by a Worker), a
 * command's argv, or a target object.
 */
export type Func = string | string[] | { command: CommandTargetInput } | { remote: RemoteTargetInput };

export interface Target {
  command?: {
    argv: string[]; env: Record<string, string>; cwd: string; timeout: number | null; maxOutputBytes: number;
  };
  remote?: { task: string; args: JsonValue[] | null; kwargs: { [key: string]: JsonValue } | null; queue: string };
}

export interface RunOutcome {
  status: RunStatus;
  /** Set when a command exited. */
  exitCode?: number;
  /** Set when a command was killed by a signal. */
  signal?: number;
  stdoutTail: Buffer;
  stderrTail: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  startTime: Date | null;
  endTime: Date | null;
  /** Seconds. */
  duration: number | null;
  error: string;
  errorType: string;
  traceback: string;
  /** A remote task's return value (null when it returned nothing). */
  returnValue: JsonValue;
  workerId: string;
}

export interface JobStats {
  runs: number;
  failures: number;
  misses: number;
  maxInstanceSkips: number;
  coalesced: number;
  lastRunId: string;
  lastRunTime: Date | null;
  lastOutcome: RunOutcome | null;
  latenessP50: number | null;
  latenessP90: number | null;
  latenessP99: number | null;
  latenessMax: number | null;
  latenessSamples: number;
}

export interface Job {
  id: string;
  name: string;
  trigger: Trigger | null;
  target: Target | null;
  executor: string;
  jobstore: string;
  /** Seconds; null = unlimited; undefined = the scheduler's default. */
  misfireGraceTime?: number | null;
  /** undefined = the scheduler's default. */
  coalesce?: boolean;
  /** undefined = the scheduler's default. */
  maxInstances?: number;
  overlapPolicy: OverlapPolicy;
  labels: Record<string, string>;
  /** null = paused. */
  nextRunTime: Date | null;
  paused: boolean;
  runningInstances: number;
  queuedRuns: number;
  createTime: Date | null;
  updateTime: Date | null;
  /** Only with view 'FULL' (getJob's default). */
  stats: JobStats | null;
}

export interface CallOptions {
  /** Deadline of the call in ms (default: the client's timeoutMs). */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}
export interface MutationOptions extends CallOptions {
  /** Idempotency key: a retry with it is not applied twice. */
  requestId?: string;
}

export interface JobOptions extends MutationOptions {
  id?: string;
  name?: string;
  /** Positional arguments of a remote task. */
  args?: JsonValue[];
  /** Keyword arguments of a remote task. */
  kwargs?: { [key: string]: JsonValue };
  /** Worker queue of a remote task. */
  queue?: string;
  executor?: string;
  jobstore?: string;
  /** Seconds; null = unlimited (APScheduler's misfire_grace_time=None). */
  misfireGraceTime?: number | null;
  coalesce?: boolean;
  maxInstances?: number;
  overlapPolicy?: OverlapPolicy;
  labels?: Record<string, string>;
  /** The first run's time; null = add the job paused (APScheduler's next_run_time=None). */
  nextRunTime?: DateInput | null;
  paused?: boolean;
  replaceExisting?: boolean;
}

export interface JobChanges extends MutationOptions {
  name?: string;
  trigger?: TriggerInput;
  func?: Func;
  target?: Func;
  args?: JsonValue[];
  kwargs?: { [key: string]: JsonValue };
  queue?: string;
  executor?: string;
  misfireGraceTime?: number | null;
  coalesce?: boolean;
  maxInstances?: number;
  overlapPolicy?: OverlapPolicy;
  labels?: Record<string, string>;
  nextRunTime?: DateInput;
}

export interface GetJobsOptions extends CallOptions {
  jobstore?: string;
  /** true = only paused jobs, false = only unpaused ones. */
  paused?: boolean;
  /** Kubernetes-style: `team=a,env!=prod,tier in (a,b)`. */
  labelSelector?: string;
  view?: JobView;
  /** Jobs per RPC (the daemon caps it at 1000). */
  pageSize?: number;
}

export interface PreviewResult {
  fireTimes: Date[];
  effectiveTrigger: Trigger | null;
  description: string;
}
export interface PreviewOptions extends CallOptions {
  /** 1-1000; default 10. */
  count?: number;
  startTime?: DateInput;
}

export interface RunJobNowResult {
  runId: string;
  scheduledRunTime: Date | null;
  queued: boolean;
}

export interface BackfillOptions extends MutationOptions {
  startTime: DateInput;
  endTime: DateInput;
  maxRuns?: number;
  validateOnly?: boolean;
}
export interface BackfillResult {
  scheduledRunTimes: Date[];
  runIds: string[];
  truncated: boolean;
}

export interface SchedulerInfo {
  state: SchedulerState;
  version: string;
  defaultTimezone: string;
  jobstores: Array<{
    name: string;
    type: string;
    jobCount: number;
    pausedJobCount: number;
    /** Its disk filled up and its reserve was given back: new jobs are refused. */
    lowSpace: boolean;
  }>;
  executors: Array<{
    name: string; type: string; maxWorkers: number; running: number; pending: number; connectedWorkers: number;
  }>;
  eventLog: { firstSequence: number; lastSequence: number; maxEvents: number; maxAge: number | null } | null;
  startTime: Date | null;
  currentTime: Date | null;
  nextWakeupTime: Date | null;
  /** Seconds; null = unlimited. */
  defaultMisfireGraceTime?: number | null;
  defaultCoalesce: boolean;
  defaultMaxInstances: number;
}

// ---- events -----------------------------------------------------------------------------------

export interface Event {
  sequence: number;
  type: EventTypeName;
  time: Date | null;
  jobId: string;
  jobstore: string;
  executor: string;
  scheduledRunTimes: Date[];
  runId: string;
  outcome: RunOutcome | null;
  message: string;
}

export interface EventGap {
  requestedSequence: number;
  firstAvailableSequence: number;
}

export interface EventsOptions {
  /** Only these types (short or full names). */
  types?: Array<EventTypeName | string>;
  /** Only JOB_* events of these jobs. */
  jobIds?: string[];
  /** Start with the logged events after this sequence (0 = all retained); unset = live only. */
  after?: number | bigint | string;
  /** After pruned events: continue (calling onGap) instead of failing with EventGapError. */
  continueAfterGap?: boolean;
  onGap?: (gap: EventGap) => void;
  /** Reconnect and resume after UNAVAILABLE / stream end / restart (default true). */
  reconnect?: boolean;
  /** First reconnect delay in ms (default 100), doubled up to maxBackoffMs (default 5000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Buffered events before the stream is paused (default 256). */
  highWaterMark?: number;
  /** Aborting ends the iteration with an AbortError. */
  signal?: AbortSignal;
}

export class EventIterator implements AsyncIterableIterator<Event> {
  private constructor();
  /** Resolves once the subscription is established and caught up with `after`. */
  readonly ready: Promise<void>;
  /** The newest sequence delivered or examined; null before the first. */
  readonly lastSequence: number | null;
  /** How many times it reconnected. */
  readonly reconnects: number;
  next(): Promise<IteratorResult<Event, undefined>>;
  return(): Promise<IteratorResult<Event, undefined>>;
  throw(err?: unknown): Promise<IteratorResult<Event, undefined>>;
  close(): void;
  [Symbol.asyncIterator](): EventIterator;
}

// ---- the client -------------------------------------------------------------------------------

export interface TlsOptions {
  /** PEM of the CA to trust (default: the system's roots). */
  ca?: string | Buffer;
  /** Client certificate and key (PEM), for mTLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface ClientOptions {
  address?: string;
  /** Bearer token (sent as `authorization: Bearer TOKEN`). */
  token?: string;
  tls?: boolean | TlsOptions;
  /** Overrides tls. */
  credentials?: ChannelCredentials;
  /** Default deadline of unary calls in ms (30000). */
  timeoutMs?: number;
  channelOptions?: ChannelOptions;
  /** Where proto/apsd/v1/*.proto are (default: the repository's proto/, or $APSD_PROTO_DIR). */
  protoDir?: string;
}

export const DEFAULT_ADDRESS: string;

export class Client {
  constructor(address?: string, options?: ClientOptions);
  constructor(options: ClientOptions);
  readonly address: string;
  readonly timeoutMs: number;
  /** Resolves once connected; rejects after timeoutMs. */
  waitForReady(timeoutMs?: number): Promise<void>;

  addJob<T extends TriggerType>(func: Func, trigger: T, options?: JobOptions & TriggerArgs[T]): Promise<Job>;
  addJob(func: Func, trigger?: TriggerInput | null, options?: JobOptions): Promise<Job>;
  addJob(func: Func, options: JobOptions): Promise<Job>;
  /** The job, or null if there is none (APScheduler's get_job). */
  getJob(jobId: string, options?: CallOptions & { view?: JobView }): Promise<Job | null>;
  /** Every job, by next run time, paused jobs last, then by id (APScheduler's order). */
  getJobs(options?: GetJobsOptions | string): Promise<Job[]>;
  modifyJob(jobId: string, changes: JobChanges): Promise<Job>;
  rescheduleJob<T extends TriggerType>(jobId: string, trigger: T, args?: TriggerArgs[T] & MutationOptions): Promise<Job>;
  rescheduleJob(jobId: string, trigger: TriggerInput, options?: MutationOptions): Promise<Job>;
  pauseJob(jobId: string, options?: MutationOptions): Promise<Job>;
  resumeJob(jobId: string, options?: MutationOptions): Promise<Job>;
  /** One extra run now, schedule unchanged (APScheduler 4's run_job). */
  runJob(jobId: string, options?: MutationOptions): Promise<RunJobNowResult>;
  /** runJob under the RPC's name. */
  runJobNow(jobId: string, options?: MutationOptions): Promise<RunJobNowResult>;
  removeJob(jobId: string, options?: MutationOptions): Promise<void>;
  /** Resolves to the number of jobs removed. */
  removeAllJobs(jobstore?: string, options?: MutationOptions): Promise<number>;
  removeAllJobs(options: MutationOptions & { jobstore?: string }): Promise<number>;
  preview<T extends TriggerType>(trigger: T, options?: TriggerArgs[T] & PreviewOptions): Promise<PreviewResult>;
  preview(trigger: TriggerInput, options?: PreviewOptions): Promise<PreviewResult>;
  backfill(jobId: string, options: BackfillOptions): Promise<BackfillResult>;
  getScheduler(options?: CallOptions): Promise<SchedulerInfo>;
  /** APScheduler's pause(). */
  pause(options?: MutationOptions): Promise<SchedulerInfo>;
  /** APScheduler's resume(). */
  resume(options?: MutationOptions): Promise<SchedulerInfo>;
  events(options?: EventsOptions): EventIterator;
  worker(options?: WorkerOptions): Worker;
  /** Closes the channel; its event iterators end (stop workers first). */
  close(): void;
}

/** new Client(address, options). */
export function connect(address?: string, options?: ClientOptions): Client;

// ---- workers ----------------------------------------------------------------------------------

export interface Dispatch {
  runId: string;
  jobId: string;
  jobName: string;
  task: string;
  args: JsonValue[] | null;
  kwargs: { [key: string]: JsonValue } | null;
  scheduledRunTimes: Date[];
  queue: string;
  leaseToken: string;
  leaseDeadline: Date | null;
  leaseDuration: number | null;
}

/** What a task function gets as `this`, and what currentRun() returns inside it. */
export interface RunContext {
  readonly runId: string;
  readonly jobId: string;
  readonly jobName: string;
  readonly task: string;
  readonly queue: string;
  readonly scheduledRunTimes: Date[];
  readonly leaseDeadline: Date | null;
  /** Fires when the daemon cancels the run, its lease is lost, or the worker stops. */
  readonly signal: AbortSignal;
  readonly worker: Worker;
  /** Extends the lease now (seconds; default: as granted). It is also extended automatically. */
  extendLease(seconds?: number): Promise<{ leaseDeadline: Date | null; leaseDuration: number | null }>;
}

/** A task function: called with the job's args, then its kwargs (if any) as one more argument. */
export type TaskFunction = (this: RunContext, ...args: any[]) => unknown;

export interface WorkerOptions {
  /** Client options when the Worker is given an address (or nothing). */
  client?: ClientOptions;
  /** The queue (RemoteTarget.queue); default 'default'. */
  queue?: string;
  /** Unique per Worker by default (host/pid/random). */
  workerId?: string;
  /** Runs at once (default 4). */
  maxInFlight?: number;
  /** Seconds; default: the daemon's (30). */
  leaseDuration?: number;
  tasks?: Record<string, TaskFunction>;
  /** How long stop() lets running tasks finish (default 30000 ms). */
  stopTimeoutMs?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
}

export class Worker extends EventEmitter {
  constructor(client?: Client | string, options?: WorkerOptions);
  readonly client: Client;
  readonly queue: string;
  readonly workerId: string;
  readonly maxInFlight: number;
  /** The registered task names. */
  readonly tasks: string[];
  /** Runs executing now. */
  readonly inFlight: number;
  readonly running: boolean;
  register(name: string, fn: TaskFunction): this;
  /** Takes runs until stop(); rejects if the daemon refuses the worker. */
  run(): Promise<void>;
  /** run() without waiting; a refusal is emitted as 'fatal'. */
  start(): this;
  stop(options?: { timeoutMs?: number }): Promise<void>;

  on(event: 'dispatch', listener: (dispatch: Dispatch) => void): this;
  on(event: 'success', listener: (info: { dispatch: Dispatch; value: unknown }) => void): this;
  on(event: 'failure', listener: (info: { dispatch: Dispatch; error: unknown }) => void): this;
  on(event: 'complete', listener: (info: { dispatch: Dispatch; result: object }) => void): this;
  on(event: 'completeError', listener: (info: { dispatch: Dispatch; error: ApsdError }) => void): this;
  on(event: 'cancel', listener: (cancel: { runId: string; reason: string }) => void): this;
  on(event: 'reconnecting', listener: (error: ApsdError | null, delayMs: number) => void): this;
  on(event: 'fatal', listener: (error: Error) => void): this;
  on(event: 'stopped', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** Inside a task function: its run (null elsewhere). */
export function currentRun(): RunContext | null;

// ---- errors -----------------------------------------------------------------------------------

/** A gRPC status from the daemon. */
export class ApsdError extends Error {
  /** Numeric gRPC status code. */
  readonly code: number;
  /** e.g. 'NOT_FOUND'. */
  readonly codeName: string;
  /** The daemon's message, starting with the offending field's path. */
  details: string;
  readonly metadata?: Metadata;
  constructor(code: number, details: string, metadata?: Metadata);
}
export class CancelledError extends ApsdError {}
export class UnknownError extends ApsdError {}
export class InvalidArgumentError extends ApsdError {}
export class DeadlineExceededError extends ApsdError {}
/** NOT_FOUND (APScheduler's JobLookupError). */
export class JobLookupError extends ApsdError {}
/** ALREADY_EXISTS (APScheduler's ConflictingIdError). */
export class ConflictingIdError extends ApsdError {}
export class PermissionDeniedError extends ApsdError {}
export class ResourceExhaustedError extends ApsdError {}
export class FailedPreconditionError extends ApsdError {}
export class AbortedError extends ApsdError {}
export class OutOfRangeError extends ApsdError {}
export class UnimplementedError extends ApsdError {}
export class InternalError extends ApsdError {}
export class UnavailableError extends ApsdError {}
export class DataLossError extends ApsdError {}
export class UnauthenticatedError extends ApsdError {}
/** The events the iterator needed were pruned from the event log. */
export class EventGapError extends OutOfRangeError {
  readonly requestedSequence: number;
  readonly firstAvailableSequence: number;
  constructor(gap: EventGap, details?: string);
}

/** grpc-js' status codes. */
export { status } from '@grpc/grpc-js';
