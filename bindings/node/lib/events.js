'use strict';
// client.events(): SubscribeEvents as an async iterator that survives
// disconnects. It always asks for bookmarks, so it knows the newest sequence
// the daemon examined for it even when its filters let few events through;
// after UNAVAILABLE, a stream that ended, a slow-subscriber cut or a daemon
// restart it reconnects with backoff and after_sequence = that sequence, so
// it neither misses nor repeats an event.

const { status } = require('@grpc/grpc-js');
const errors = require('./errors');

function abortError(signal) {
  const e = new Error('The operation was aborted');
  e.name = 'AbortError';
  e.code = 'ABORT_ERR';
  if (signal && signal.reason !== undefined) e.cause = signal.reason;
  return e;
}

function retryable(err) {
  if (err === null) return true; // the stream ended without an error (the daemon closed it)
  switch (err.code) {
    case status.UNAVAILABLE: // daemon down or shutting down
    // Not ours (_onEnd ignores the end of a closed iterator): a call that
    // reached the daemon as it began to shut down.
    case status.CANCELLED:
    case status.INTERNAL:
    case status.UNKNOWN:
      return true;
    case status.RESOURCE_EXHAUSTED: // cut as a slow subscriber: resume where we are
      return /after_sequence/.test(err.details || '');
    default:
      return false;
  }
}

class EventIterator {
  constructor(client, opts) {
    this._client = client;
    const s = client._schema;
    const known = new Set(['types', 'jobIds', 'after', 'continueAfterGap', 'onGap', 'reconnect', 'backoffMs',
      'maxBackoffMs', 'highWaterMark', 'signal']);
    for (const k of Object.keys(opts)) {
      if (!known.has(k)) throw new TypeError(`events: unknown option ${k} (${[...known].join(', ')})`);
    }
    this._types = (opts.types || []).map((t, i) => s.enumIn('apsd.v1.EventType', t, `events.types[${i}]`));
    this._jobIds = (opts.jobIds || []).map(String);
    this._continueAfterGap = !!opts.continueAfterGap;
    this._onGap = opts.onGap || null;
    this._reconnect = opts.reconnect !== false;
    this._backoffMs = opts.backoffMs ?? 100;
    this._maxBackoffMs = opts.maxBackoffMs ?? 5000;
    this._highWaterMark = opts.highWaterMark ?? 256;
    // null = not known yet: the first connection asks for live events only and
    // learns the position from its first bookmark.
    this._lastSeq = null;
    if (opts.after !== undefined && opts.after !== null) {
      const n = Number(opts.after);
      if (!Number.isSafeInteger(n) || n < 0) throw new TypeError('events: after must be a sequence number >= 0');
      this._lastSeq = n;
    }
    this._queue = [];
    this._waiters = [];
    this._error = null;
    this._closed = false;
    this._call = null;
    this._paused = false;
    this._timer = null;
    this._attempt = 0;
    this._gapError = null;
    /** Number of times the iterator reconnected. */
    this.reconnects = 0;
    this._readyResolve = null;
    /** Resolves once the daemon has replayed what `after` asked for and live events follow. */
    this.ready = new Promise((resolve) => { this._readyResolve = resolve; });
    this.ready.catch(() => {});
    this._signal = opts.signal || null;
    this._onAbort = null;
    if (this._signal) {
      if (this._signal.aborted) { this._fail(abortError(this._signal)); return; }
      this._onAbort = () => this._fail(abortError(this._signal));
      this._signal.addEventListener('abort', this._onAbort, { once: true });
    }
    client._iterators.add(this);
    this._connect();
  }

  /** The sequence of the newest event delivered or examined (null before the first). */
  get lastSequence() { return this._lastSeq; }

  [Symbol.asyncIterator]() { return this; }

  _connect() {
    this._timer = null;
    if (this._closed) return;
    const req = { types: this._types, jobIds: this._jobIds, sendBookmarks: true,
      continueAfterGap: this._continueAfterGap };
    if (this._lastSeq !== null) req.afterSequence = this._lastSeq;
    const s = this._client._schema;
    let call;
    try {
      call = this._client._sched.SubscribeEvents(s.fromJs('apsd.v1.SubscribeEventsRequest', req),
                                                 this._client._metadata(), {});
    } catch (e) { // e.g. the client was closed
      this._fail(e);
      return;
    }
    this._call = call;
    this._paused = false;
    let ended = false;
    const end = (err) => {
      if (ended) return;
      ended = true;
      if (this._call === call) this._call = null;
      this._onEnd(err);
    };
    call.on('data', (resp) => this._onItem(resp));
    call.on('error', (err) => end(err));
    call.on('status', (st) => { if (st.code === status.OK) end(null); });
    call.on('end', () => setImmediate(() => end(null))); // after a possible 'error'
  }

  _onItem(resp) {
    if (this._closed) return;
    const s = this._client._schema;
    this._attempt = 0;
    if (resp.item === 'event') {
      const ev = s.toJs('apsd.v1.Event', resp.event);
      if (this._lastSeq !== null && ev.sequence <= this._lastSeq) return; // already delivered
      this._lastSeq = ev.sequence;
      this._push(ev);
    } else if (resp.item === 'bookmark') {
      const b = s.toJs('apsd.v1.Bookmark', resp.bookmark);
      if (this._lastSeq === null || b.sequence > this._lastSeq) this._lastSeq = b.sequence;
      if (b.caughtUp && this._readyResolve) { this._readyResolve(); this._readyResolve = null; }
    } else if (resp.item === 'gap') {
      const g = s.toJs('apsd.v1.EventGap', resp.gap);
      if (this._continueAfterGap) {
        if (g.firstAvailableSequence > 0) this._lastSeq = g.firstAvailableSequence - 1;
        if (this._onGap) {
          try { this._onGap(g); } catch (e) { this._fail(e); }
        }
      } else {
        this._gapError = new errors.EventGapError(g);
      }
    }
  }

  _push(ev) {
    const w = this._waiters.shift();
    if (w) { w.resolve({ value: ev, done: false }); return; }
    this._queue.push(ev);
    if (this._queue.length >= this._highWaterMark && this._call && !this._paused) {
      this._paused = true;
      this._call.pause();
    }
  }

  _onEnd(err) {
    if (this._closed) return;
    if (this._gapError) {
      const e = this._gapError;
      if (err && err.details) e.details = err.details;
      this._fail(e);
      return;
    }
    if (this._reconnect && retryable(err)) {
      const base = Math.min(this._maxBackoffMs, this._backoffMs * 2 ** Math.min(this._attempt, 20));
      const delay = Math.round(base / 2 + Math.random() * base / 2);
      this._attempt++;
      this.reconnects++;
      this._timer = setTimeout(() => this._connect(), delay);
      return;
    }
    if (err === null) this._finish(); // reconnect: false and the stream ended
    else this._fail(errors.fromGrpc(err));
  }

  _fail(err) {
    if (this._closed) return;
    this._error = err;
    this._stop();
    if (this._readyResolve) { this._readyResolve(); this._readyResolve = null; }
    // Queued events are delivered first; the error comes after them.
    if (this._queue.length === 0) {
      const w = this._waiters.shift();
      if (w) { this._error = null; w.reject(err); }
      for (const x of this._waiters.splice(0)) x.resolve({ value: undefined, done: true });
    }
  }

  _finish() {
    this._stop();
    if (this._readyResolve) { this._readyResolve(); this._readyResolve = null; }
    if (this._queue.length === 0) {
      for (const x of this._waiters.splice(0)) x.resolve({ value: undefined, done: true });
    }
  }

  _stop() {
    this._closed = true;
    this._client._iterators.delete(this);
    if (this._timer) { clearTimeout(this._timer); this._timer = null; }
    if (this._call) { const c = this._call; this._call = null; c.cancel(); }
    if (this._signal && this._onAbort) { this._signal.removeEventListener('abort', this._onAbort); this._onAbort = null; }
  }

  next() {
    if (this._queue.length) {
      const value = this._queue.shift();
      if (this._paused && this._call && this._queue.length <= this._highWaterMark / 2) {
        this._paused = false;
        this._call.resume();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this._error) {
      const e = this._error;
      this._error = null;
      return Promise.reject(e);
    }
    if (this._closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Ends the iteration (what `break` in for-await calls): cancels the stream. */
  return() {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(err) {
    this.close();
    return Promise.reject(err);
  }

  /** Stops the stream; pending and later next() calls resolve done. */
  close() {
    this._queue = [];
    this._error = null;
    this._stop();
    for (const x of this._waiters.splice(0)) x.resolve({ value: undefined, done: true });
  }
}

module.exports = { EventIterator, retryable };
