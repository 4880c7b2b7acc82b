"""Events: APScheduler's EVENT_* constants (the same bit values, so masks
built from apscheduler.events work here too), its event classes, and the
resumable event stream returned by Client.events().

apsd's EventType n is APScheduler's code 2**(n-1)."""
import random
import re
import threading
import time

import grpc

from . import _time, _values
from ._pb import pb
from .errors import EventGapError, RemoteJobError, from_rpc_error

EVENT_SCHEDULER_STARTED = EVENT_SCHEDULER_START = 2 ** 0
EVENT_SCHEDULER_SHUTDOWN = 2 ** 1
EVENT_SCHEDULER_PAUSED = 2 ** 2
EVENT_SCHEDULER_RESUMED = 2 ** 3
EVENT_EXECUTOR_ADDED = 2 ** 4
EVENT_EXECUTOR_REMOVED = 2 ** 5
EVENT_JOBSTORE_ADDED = 2 ** 6
EVENT_JOBSTORE_REMOVED = 2 ** 7
EVENT_ALL_JOBS_REMOVED = 2 ** 8
EVENT_JOB_ADDED = 2 ** 9
EVENT_JOB_REMOVED = 2 ** 10
EVENT_JOB_MODIFIED = 2 ** 11
EVENT_JOB_EXECUTED = 2 ** 12
EVENT_JOB_ERROR = 2 ** 13
EVENT_JOB_MISSED = 2 ** 14
EVENT_JOB_SUBMITTED = 2 ** 15
EVENT_JOB_MAX_INSTANCES = 2 ** 16
EVENT_ALL = 2 ** 17 - 1

__all__ = [n for n in dir() if n.startswith("EVENT_")] + [
    "SchedulerEvent", "JobEvent", "JobSubmissionEvent", "JobExecutionEvent", "EventStream",
    "code_of", "name_of", "types_of"]


def code_of(event_type):
    """APScheduler's code for an apsd.v1.EventType value."""
    return 1 << (event_type - 1)


def name_of(code):
    """'JOB_EXECUTED' for EVENT_JOB_EXECUTED."""
    return pb.EventType.Name(code.bit_length())[len("EVENT_TYPE_"):]


def types_of(types):
    """apsd.v1.EventType values for a filter: None or EVENT_ALL = all (an
    empty list); an int = an APScheduler mask; an iterable of codes, masks or
    names ('JOB_EXECUTED', 'EVENT_JOB_EXECUTED')."""
    if types is None:
        return []
    if isinstance(types, (str, int)):
        types = [types]
    mask = 0
    for t in types:
        if isinstance(t, str):
            n = t.upper()
            n = n[len("EVENT_"):] if n.startswith("EVENT_") and not n.startswith("EVENT_TYPE_") else n
            n = n if n.startswith("EVENT_TYPE_") else "EVENT_TYPE_" + n
            mask |= code_of(pb.EventType.Value(n))
        elif isinstance(t, int) and not isinstance(t, bool) and 0 < t <= EVENT_ALL:
            mask |= t
        else:
            raise ValueError("not an event type or mask: %r" % (t,))
    if mask == EVENT_ALL:
        return []
    return [i + 1 for i in range(17) if mask & (1 << i)]


class SchedulerEvent:
    """APScheduler's SchedulerEvent: `code` (EVENT_*), `alias` (the job store
    or executor concerned). apsd adds `sequence` (position in the daemon's
    event log: resume with Client.events(after=sequence)), `time`, `type`
    ('JOB_EXECUTED'...), `message` and `proto` (the apsd.v1.Event)."""

    def __init__(self, code, alias=None):
        self.code = code
        self.alias = alias
        self.sequence = None
        self.time = None
        self.message = ""
        self.proto = None

    @property
    def type(self):
        return name_of(self.code)

    def __repr__(self):
        return "<%s (code=%d)>" % (self.__class__.__name__, self.code)


class JobEvent(SchedulerEvent):
    """APScheduler's JobEvent: `job_id`, `jobstore`."""

    def __init__(self, code, job_id, jobstore):
        super().__init__(code)
        self.job_id = job_id
        self.jobstore = jobstore

    def __repr__(self):
        return "<%s (code=%d job_id=%s seq=%s)>" % (self.__class__.__name__, self.code,
                                                      self.job_id, self.sequence)


class JobSubmissionEvent(JobEvent):
    """APScheduler's JobSubmissionEvent: `scheduled_run_times` (aware
    datetimes, oldest first). apsd adds `run_id`, `executor`."""

    def __init__(self, code, job_id, jobstore, scheduled_run_times):
        super().__init__(code, job_id, jobstore)
        self.scheduled_run_times = scheduled_run_times
        self.run_id = None
        self.executor = None


class JobExecutionEvent(JobEvent):
    """APScheduler's JobExecutionEvent: `scheduled_run_time`, `retval` (the
    remote function's return value), `exception` (a RemoteJobError for
    JOB_ERROR), `traceback` (the worker's formatted traceback text). apsd
    adds `scheduled_run_times` (several when coalesced; scheduled_run_time
    is the latest), `run_id`, `executor`, `status` ('SUCCEEDED', 'FAILED',
    'TIMED_OUT', 'CANCELLED', 'LEASE_EXPIRED', 'START_FAILED'), `exit_code`,
    `signal`, `stdout`, `stderr` (a command's output tails, bytes),
    `worker_id`, `outcome` (the RunOutcome message)."""

    def __init__(self, code, job_id, jobstore, scheduled_run_time, retval=None, exception=None,
                 traceback=None):
        super().__init__(code, job_id, jobstore)
        self.scheduled_run_time = scheduled_run_time
        self.retval = retval
        self.exception = exception
        self.traceback = traceback
        self.scheduled_run_times = [scheduled_run_time] if scheduled_run_time else []
        self.run_id = None
        self.executor = None
        self.status = None
        self.exit_code = None
        self.signal = None
        self.stdout = b""
        self.stderr = b""
        self.worker_id = None
        self.outcome = None


_JOB = {EVENT_JOB_ADDED, EVENT_JOB_REMOVED, EVENT_JOB_MODIFIED}
_SUBMISSION = {EVENT_JOB_SUBMITTED, EVENT_JOB_MAX_INSTANCES}
_EXECUTION = {EVENT_JOB_EXECUTED, EVENT_JOB_ERROR, EVENT_JOB_MISSED}


_TYPE_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*): ")


def from_proto(e):
    """The event object for an apsd.v1.Event."""
    code = code_of(e.type)
    times = [_time.from_timestamp(t) for t in e.scheduled_run_times]
    if code in _JOB:
        ev = JobEvent(code, e.job_id, e.jobstore)
    elif code in _SUBMISSION:
        ev = JobSubmissionEvent(code, e.job_id, e.jobstore, times)
        ev.run_id = e.run_id or None
        ev.executor = e.executor or None
    elif code in _EXECUTION:
        ev = JobExecutionEvent(code, e.job_id, e.jobstore, times[-1] if times else None)
        ev.scheduled_run_times = times
        ev.run_id = e.run_id or None
        ev.executor = e.executor or None
        if e.HasField("outcome"):
            o = e.outcome
            ev.outcome = o
            ev.status = pb.RunStatus.Name(o.status)[len("RUN_STATUS_"):] if o.status else None
            term = o.WhichOneof("termination")
            ev.exit_code = o.exit_code if term == "exit_code" else None
            ev.signal = o.signal if term == "signal" else None
            ev.stdout, ev.stderr = o.stdout_tail, o.stderr_tail
            ev.worker_id = o.worker_id or None
            ev.traceback = o.traceback or None
            if o.HasField("return_value"):
                ev.retval = _values.from_value(o.return_value)
            if code == EVENT_JOB_ERROR:
                message, type_name = o.error, o.error_type
                if not type_name and o.traceback:
                    # apsd 0.1 stores a remote exception as "Type: message" in
                    # `error` and leaves error_type unset: split it back.
                    m = _TYPE_PREFIX.match(message)
                    if m:
                        type_name, message = m.group(1), message[m.end():]
                ev.exception = RemoteJobError(message or ev.status or "error", type_name,
                                              ev.status or "", ev.traceback, ev.exit_code, ev.signal)
    else:
        ev = SchedulerEvent(code, e.executor or e.jobstore or None)
    ev.sequence = e.sequence
    ev.time = _time.opt_timestamp(e, "time")
    ev.message = e.message
    ev.proto = e
    return ev


# Stream ends after which reconnecting and resuming makes sense, as the C
# and Node clients decide: the daemon restarting or unreachable
# (UNAVAILABLE), a call it refused as it began to shut down (CANCELLED), a
# connection broken mid-frame (INTERNAL, UNKNOWN), and a slow subscriber cut
# off (RESOURCE_EXHAUSTED whose details name after_sequence). Others are
# final: a refused request (INVALID_ARGUMENT, OUT_OF_RANGE, auth), and the
# other RESOURCE_EXHAUSTED, "too many subscribers" above all, which retrying
# would only hide.
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
          grpc.StatusCode.UNKNOWN}


def resumable(code, details):
    """Whether a stream that ended with status `code` and message `details`
    is reopened by EventStream (after the last sequence it saw)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "after_sequence" in (details or "")
    return code in _RETRY


class EventStream:
    """An iterator of events (Client.events()). It reconnects by itself when
    the stream breaks (daemon restart, network, slow-subscriber cut) and
    resumes after the last sequence it saw, so no event is lost or repeated
    while the daemon's log retains them. `last_sequence` is that position;
    close() (from any thread) ends the iteration. Also a context manager."""

    def __init__(self, client, types=None, job_ids=None, after=None, continue_after_gap=False,
                 reconnect=True, retry_timeout=None, max_backoff=2.0):
        self._client = client
        self._types = types_of(types)
        self._job_ids = list(job_ids or ())
        self.last_sequence = after
        self.continue_after_gap = continue_after_gap
        self.reconnect = reconnect
        self.retry_timeout = retry_timeout
        self.max_backoff = max_backoff
        self.reconnects = 0  #: how many times the stream was reopened
        self.gaps = []  #: (requested, first_available) of gaps skipped
        self._call = None
        self._closed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._failing_since = None
        self._backoff = 0.05

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self._lock:
            self._closed = True
            call = self._call
        self._wake.set()
        if call is not None:
            call.cancel()

    @property
    def closed(self):
        return self._closed

    def _open(self):
        req = pb.SubscribeEventsRequest(types=self._types, job_ids=self._job_ids,
                                        continue_after_gap=self.continue_after_gap,
                                        send_bookmarks=True)
        if self.last_sequence is not None:
            req.after_sequence = self.last_sequence
        call = self._client._sched.SubscribeEvents(req, metadata=self._client._metadata)
        with self._lock:
            if self._closed:
                call.cancel()
                raise StopIteration
            self._call = call
        return call

    def _retry_or_raise(self, err):
        if self._closed:
            raise StopIteration
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else None
        if not self.reconnect or not resumable(code, details):
            raise from_rpc_error(err) from None
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif self.retry_timeout is not None and now - self._failing_since > self.retry_timeout:
            raise from_rpc_error(err) from None
        self._wake.wait(self._backoff * (0.5 + random.random() / 2))
        self._backoff = min(self._backoff * 2, self.max_backoff)
        self.reconnects += 1

    def __next__(self):
        while True:
            if self._closed:
                raise StopIteration
            call = self._call
            try:
                if call is None:
                    call = self._open()
                item = next(call)
            except StopIteration:  # the daemon ended the stream with OK: reopen
                with self._lock:
                    self._call = None
                if self._closed or not self.reconnect:
                    raise
                self._wake.wait(0.05)
                continue
            except grpc.RpcError as e:
                with self._lock:
                    self._call = None
                self._retry_or_raise(e)
                continue
            self._failing_since = None
            self._backoff = 0.05
            kind = item.WhichOneof("item")
            if kind == "bookmark":
                if self.last_sequence is None or item.bookmark.sequence > self.last_sequence:
                    self.last_sequence = item.bookmark.sequence
                continue
            if kind == "gap":
                g = item.gap
                if not self.continue_after_gap:
                    self.close()
                    raise EventGapError(g.requested_sequence, g.first_available_sequence)
                self.gaps.append((g.requested_sequence, g.first_available_sequence))
                self.last_sequence = g.first_available_sequence - 1
                continue
            self.last_sequence = item.event.sequence
            return from_proto(item.event)
