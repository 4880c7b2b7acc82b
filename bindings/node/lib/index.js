'use strict';
// apsd: the Node.js client of apsd (APScheduler rebuilt as a C daemon).

const { Client, DEFAULT_ADDRESS } = require('./client');
const { Worker, currentRun } = require('./worker');
const { EventIterator } = require('./events');
const triggers = require('./triggers');
const errors = require('./errors');

/** APScheduler's EVENT_* names as apsd reports them in Event.type. */
const EventType = Object.freeze(Object.fromEntries([
  'SCHEDULER_STARTED', 'SCHEDULER_SHUTDOWN', 'SCHEDULER_PAUSED', 'SCHEDULER_RESUMED', 'EXECUTOR_ADDED',
  'EXECUTOR_REMOVED', 'JOBSTORE_ADDED', 'JOBSTORE_REMOVED', 'ALL_JOBS_REMOVED', 'JOB_ADDED', 'JOB_REMOVED',
  'JOB_MODIFIED', 'JOB_EXECUTED', 'JOB_ERROR', 'JOB_MISSED', 'JOB_SUBMITTED', 'JOB_MAX_INSTANCES',
].map((n) => [n, n])));

/** A Client for `address` (default 127.0.0.1:50051). */
function connect(address, options) {
  return new Client(address, options);
}

module.exports = {
  Client,
  Worker,
  EventIterator,
  connect,
  currentRun,
  EventType,
  DEFAULT_ADDRESS,
  trigger: triggers.trigger,
  cron: triggers.cron,
  interval: triggers.interval,
  date: triggers.date,
  calendarInterval: triggers.calendarInterval,
  allOf: triggers.allOf,
  anyOf: triggers.anyOf,
  ...Object.fromEntries(Object.entries(errors).filter(([k]) => k !== 'fromGrpc')),
};
