'use strict';
// APScheduler's trigger keywords -> apsd.v1.Trigger (the JS form that
// proto.js converts). `trigger('cron', {second: '*/5'})` is
// `{cron: {second: '*/5'}}`; `jitter` goes to the outer Trigger.

const { snakeToCamel } = require('./proto');

const KINDS = {
  cron: 'cron',
  interval: 'interval',
  date: 'date',
  calendarinterval: 'calendarInterval',
  calendar_interval: 'calendarInterval',
  calendarInterval: 'calendarInterval',
};

const FIELDS = {
  cron: ['year', 'month', 'day', 'week', 'dayOfWeek', 'hour', 'minute', 'second', 'crontab',
    'startDate', 'endDate', 'timezone'],
  interval: ['weeks', 'days', 'hours', 'minutes', 'seconds', 'microseconds', 'startDate', 'endDate', 'timezone'],
  date: ['runDate', 'timezone'],
  calendarInterval: ['years', 'months', 'weeks', 'days', 'hour', 'minute', 'second', 'startDate', 'endDate',
    'timezone'],
};

const TRIGGER_OBJECT_KEYS = new Set(['cron', 'interval', 'date', 'calendarInterval', 'calendar_interval', 'allOf',
  'all_of', 'anyOf', 'any_of', 'jitter']);
const KIND_KEYS = new Set([...TRIGGER_OBJECT_KEYS].filter((k) => k !== 'jitter'));

function isPlainObject(x) {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Date);
}

/** True if `x` looks like an apsd.v1.Trigger object ({cron: {...}} etc.). */
function isTriggerObject(x) {
  if (!isPlainObject(x)) return false;
  const keys = Object.keys(x);
  return keys.length > 0 && keys.every((k) => TRIGGER_OBJECT_KEYS.has(k)) && keys.some((k) => KIND_KEYS.has(k));
}

/** Which of `args`' keys are trigger arguments of `type` (camelCase) or jitter. */
function triggerArgNames(type) {
  const kind = KINDS[type];
  if (!kind) return null;
  return new Set([...FIELDS[kind], 'jitter']);
}

/**
 * Builds a Trigger from APScheduler's `trigger=` name and keywords:
 * trigger('cron', {dayOfWeek: 'mon-fri', hour: 9}), trigger('interval',
 * {seconds: 3}), trigger('date', {runDate: new Date(...)}),
 * trigger('calendarinterval', {months: 1, hour: 8}). snake_case keys work too.
 */
function trigger(type, args = {}) {
  if (isTriggerObject(type)) {
    if (args && Object.keys(args).length) throw new TypeError('trigger: arguments given with a trigger object');
    return type;
  }
  const kind = KINDS[type];
  if (!kind) {
    throw new TypeError(`trigger: unknown trigger ${JSON.stringify(type)} (cron, interval, date, calendarinterval, ` +
                        'or a trigger object such as {cron: {...}})');
  }
  if (!isPlainObject(args)) throw new TypeError('trigger: the arguments must be an object');
  const allowed = new Set(FIELDS[kind]);
  const fields = {};
  let jitter;
  for (const [rawKey, v] of Object.entries(args)) {
    if (v === undefined) continue;
    const key = snakeToCamel(rawKey);
    if (key === 'jitter') { jitter = v; continue; }
    if (!allowed.has(key)) {
      throw new TypeError(`trigger: unknown ${type} argument ${JSON.stringify(rawKey)} ` +
                          `(${FIELDS[kind].join(', ')}, jitter)`);
    }
    fields[key] = v;
  }
  if (kind === 'cron') {
    // APScheduler takes ints or expressions; the API takes expression strings.
    for (const k of FIELDS.cron.slice(0, 9)) {
      if (typeof fields[k] === 'number') fields[k] = String(fields[k]);
    }
  } else if (kind === 'interval') {
    // APScheduler accepts fractional seconds; the API has microseconds.
    if (typeof fields.seconds === 'number' && !Number.isInteger(fields.seconds)) {
      const us = Math.round(fields.seconds * 1e6);
      fields.seconds = Math.floor(us / 1e6);
      fields.microseconds = (fields.microseconds || 0) + (us - fields.seconds * 1e6);
    }
    for (const k of ['weeks', 'days', 'hours', 'minutes']) {
      if (fields[k] !== undefined && !Number.isInteger(fields[k])) {
        throw new TypeError(`trigger: interval ${k} must be an integer (fractions only for seconds)`);
      }
    }
  }
  const t = { [kind]: fields };
  if (jitter !== undefined && jitter !== null) t.jitter = jitter;
  return t;
}

const cron = (args) => trigger('cron', args);
const interval = (args) => trigger('interval', args);
const date = (runDate, args = {}) => trigger('date', isPlainObject(runDate) ? runDate : { ...args, runDate });
const calendarInterval = (args) => trigger('calendarinterval', args);
/** APScheduler's AndTrigger. */
const allOf = (...triggers) => ({ allOf: { triggers: triggers.flat() } });
/** APScheduler's OrTrigger. */
const anyOf = (...triggers) => ({ anyOf: { triggers: triggers.flat() } });

module.exports = {
  trigger, cron, interval, date, calendarInterval, allOf, anyOf, isTriggerObject, isPlainObject, triggerArgNames,
};
