"""Worker: runs the Python functions of `remote` jobs.

    worker = Worker(client, "default")

    @worker.task
    def cleanup(days):
        ...

    worker.run()          # blocks; or worker.start() for a background thread

It attaches to Workers.Acquire on its queue, calls the function each
dispatch names ("module:func", resolved like APScheduler's textual
references, or one registered with @worker.task), extends each run's lease
while it runs, and reports the return value or the exception with its
traceback (Workers.Complete). It reconnects by itself when the daemon
restarts.
"""
import asyncio
import concurrent.futures
import inspect
import logging
import os
import socket
import threading
import time
import traceback
import uuid

import grpc

from . import _time, _values
from ._pb import wpb
from .errors import from_rpc_error
from .util import obj_to_ref, ref_to_obj

log = logging.getLogger("apsd.worker")

_local = threading.local()

# Acquire ends after which the worker keeps trying: the daemon restarting
# or unreachable, too many workers for now, an internal hiccup.
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
          grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
          grpc.StatusCode.DEADLINE_EXCEEDED}


class RunContext:
    """The run a worker thread is executing (apsd.current_run()): job_id,
    job_name, run_id, task, queue, scheduled_run_times (aware datetimes),
    and `cancelled`, a threading.Event set when the daemon cancels the run
    (overlap policy CANCEL_RUNNING, shutdown) or its lease is lost: a long
    task should check it and return early."""

    def __init__(self, d, worker):
        self.run_id = d.run_id
        self.job_id = d.job_id
        self.job_name = d.job_name
        self.task = d.task
        self.queue = d.queue
        self.scheduled_run_times = [_time.from_timestamp(t) for t in d.scheduled_run_times]
        self.cancelled = threading.Event()
        self.worker = worker
        self._dispatch = d
        self._token = d.lease_token
        lease = _time.from_duration(d.lease_duration) if d.HasField("lease_duration") else 30
        self._lease = max(float(lease), 0.3)
        self._next_extend = time.monotonic() + self._lease / 3


def current_run():
    """The RunContext of the remote run executing in this thread, or None."""
    return getattr(_local, "run", None)


def _task_name(f):
    """"module:qualname", also for functions no other process could import
    (nested ones: this worker has them registered)."""
    try:
        return obj_to_ref(f)
    except ValueError:
        return "%s:%s" % (getattr(f, "__module__", "?"), getattr(f, "__qualname__", repr(f)))


def _exc_type_name(e):
    t = type(e)
    return t.__qualname__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)


class Worker:
    """Runs remote tasks of one queue.

    client: an apsd.Client, or a target ("127.0.0.1:50051") plus Client
    keywords (token=..., root_certificates=...). queue: the queue to take
    runs from (RemoteTarget.queue). max_workers: runs at once (threads).
    lease_duration: seconds of each lease (extended at a third of it while
    the function runs). import_tasks: resolve unregistered "module:func"
    tasks by importing them; default: only if no task was registered with
    @task (then Acquire asks only for the registered ones).
    """

    def __init__(self, client="127.0.0.1:50051", queue="default", *, worker_id=None,
                 max_workers=10, lease_duration=30, import_tasks=None, **client_kw):
        if isinstance(client, str):
            from .client import Client
            client = Client(client, **client_kw)
        self.client = client
        self.queue = queue or "default"
        self.worker_id = worker_id or "%s/pid-%d/%s" % (socket.gethostname()[:100], os.getpid(),
                                                         uuid.uuid4().hex[:8])
        self.max_workers = max_workers
        self.lease_duration = lease_duration
        self.import_tasks = import_tasks
        self.runs = 0  #: runs completed (reported) by this worker
        self.failures = 0  #: of which raised
        self._tasks = {}
        self._lock = threading.Lock()
        self._inflight = {}
        self._stream = None
        self._stopping = threading.Event()
        self._reopen = False
        self._thread = None
        self._idle = threading.Event()
        self._idle.set()
        self._run_thread = None
        self._connected = threading.Event()

    # ---- tasks ----------------------------------------------------------------------

    def task(self, func=None, *, name=None):
        """Decorator registering a function as a task: `@worker.task` (task
        name "module:qualname", what Client.add_job(func) sends) or
        `@worker.task(name="cleanup")`. Returns the function unchanged."""
        def register(f):
            self.register(name or _task_name(f), f)
            return f
        return register(func) if func is not None else register

    def register(self, name, func):
        """Registers `func` under task name `name`."""
        with self._lock:
            self._tasks[name] = func
            stream = self._stream
            if stream is not None and not self._imports():
                self._reopen = True  # Acquire filters by task names: ask again
        if stream is not None and self._reopen:
            stream.cancel()

    @property
    def tasks(self):
        return dict(self._tasks)

    def _imports(self):
        return self.import_tasks if self.import_tasks is not None else not self._tasks

    def resolve(self, task):
        """The callable for a task name: a registered one, else (if imports
        are allowed) the object the "module:func" reference names."""
        with self._lock:
            f = self._tasks.get(task)
        if f is not None:
            return f
        if not self._imports():
            raise LookupError("task %r is not registered with this worker" % task)
        return ref_to_obj(task)

    # ---- running ----------------------------------------------------------------------

    @property
    def connected(self):
        """True while an Acquire stream is open."""
        return self._connected.is_set()

    def wait_connected(self, timeout=10.0):
        """Waits until the worker's Acquire stream is open (True) or timeout."""
        return self._connected.wait(timeout)

    def start(self):
        """run() in a background (daemon) thread; returns self."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("worker already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run_logged, name="apsd-worker-" + self.queue,
                                        daemon=True)
        self._thread.start()
        return self

    def _run_logged(self):
        try:
            self.run()
        except Exception:  # noqa: BLE001 - a background thread has no caller to raise to
            log.exception("apsd worker %s stopped", self.worker_id)

    def stop(self, wait=True, timeout=30.0):
        """Stops taking runs; with wait, waits (up to timeout) until the
        running ones have finished and reported."""
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.cancel()
        if wait and threading.current_thread() not in (self._thread, self._run_thread):
            self._idle.wait(timeout)

    def run(self):
        """Takes and runs dispatches until stop() (blocking). Reconnects with
        backoff when the daemon is unreachable; raises ApsdError for final
        errors (bad queue, authentication, another worker with this id)."""
        if threading.current_thread() is not self._thread:
            self._stopping.clear()  # called directly (start() clears it for its thread)
        self._idle.clear()
        self._run_thread = threading.current_thread()
        pool = concurrent.futures.ThreadPoolExecutor(self.max_workers,
                                                     thread_name_prefix="apsd-task")
        hb = threading.Thread(target=self._heartbeat, name="apsd-lease", daemon=True)
        hb.start()
        backoff = 0.05
        try:
            while not self._stopping.is_set():
                with self._lock:
                    names = [] if self._imports() else sorted(self._tasks)
                    self._reopen = False
                req = wpb.AcquireRequest(queue=self.queue, worker_id=self.worker_id,
                                         max_in_flight=self.max_workers, tasks=names)
                if self.lease_duration:
                    req.lease_duration.CopyFrom(_time.to_duration(self.lease_duration))
                stream = self.client._workers.Acquire(req, metadata=self.client._metadata)
                with self._lock:
                    self._stream = stream
                if self._stopping.is_set():
                    stream.cancel()
                try:
                    # The stream is open once the daemon accepted it; there is
                    # no first message to wait for, so poll its state.
                    threading.Thread(target=self._mark_connected, args=(stream,),
                                     daemon=True).start()
                    for item in stream:
                        backoff = 0.05
                        kind = item.WhichOneof("item")
                        if kind == "dispatch":
                            ctx = RunContext(item.dispatch, self)
                            with self._lock:
                                self._inflight[ctx.run_id] = ctx
                            pool.submit(self._execute, ctx)
                        elif kind == "cancel":
                            with self._lock:
                                ctx = self._inflight.get(item.cancel.run_id)
                            if ctx is not None:
                                log.info("run %s of job %s cancelled: %s", ctx.run_id, ctx.job_id,
                                         item.cancel.reason)
                                ctx.cancelled.set()
                    code = None
                except grpc.RpcError as e:
                    code = e.code()
                    if self._stopping.is_set():
                        break
                    if code == grpc.StatusCode.CANCELLED and self._reopen:
                        continue
                    if code not in _RETRY:
                        raise from_rpc_error(e) from None
                    log.info("apsd worker %s: Acquire ended (%s), reconnecting", self.worker_id,
                             code.name)
                finally:
                    self._connected.clear()
                    with self._lock:
                        self._stream = None
                if self._stopping.wait(backoff):
                    break
                backoff = min(backoff * 2, 2.0)
        finally:
            self._stopping.set()
            pool.shutdown(wait=True)
            hb.join(5)
            self._run_thread = None
            self._idle.set()

    def _mark_connected(self, stream):
        # Acquire sends nothing until the first dispatch: the stream counts as
        # open once the channel is READY and the call has not ended.
        try:
            grpc.channel_ready_future(self.client.channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            return
        time.sleep(0.05)  # the daemon registers the stream right after accepting it
        if not stream.done():
            self._connected.set()

    def _execute(self, ctx):
        _local.run = ctx
        d = ctx._dispatch
        req = wpb.CompleteRequest(run_id=ctx.run_id, lease_token=ctx._token)
        failed = False
        try:
            func = self.resolve(ctx.task)
            rv = func(*_values.from_list(d.args), **_values.from_struct(d.kwargs))
            if inspect.isawaitable(rv):
                rv = asyncio.run(_await(rv))
            try:
                value = _values.to_value(rv, "return value")
            except TypeError:
                value = _values.to_value(repr(rv))  # not JSON: report its repr()
            req.return_value.CopyFrom(value)
        except Exception as e:  # noqa: BLE001 - the task's exception is the run's result
            failed = True
            req.error.CopyFrom(wpb.TaskError(type=_exc_type_name(e), message=str(e),
                                             traceback=traceback.format_exc()))
            log.debug("task %s of job %s raised", ctx.task, ctx.job_id, exc_info=True)
        finally:
            _local.run = None
        if ctx.cancelled.is_set():
            # For the daemon the run is over (cancelled, or the lease was
            # lost): a Complete would only be refused.
            log.info("run %s of job %s ended after its cancellation", ctx.run_id, ctx.job_id)
        else:
            self._complete(ctx, req)
        with self._lock:
            self._inflight.pop(ctx.run_id, None)
            self.runs += 1
            self.failures += failed

    def _complete(self, ctx, req):
        # Complete is idempotent (same token and result): retry transport
        # failures until the lease would have expired anyway.
        end = time.monotonic() + ctx._lease
        delay = 0.05
        while True:
            try:
                self.client._workers.Complete(req, timeout=self.client.timeout,
                                              metadata=self.client._metadata)
                return
            except grpc.RpcError as e:
                code = e.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                        and time.monotonic() + delay < end:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                # FAILED_PRECONDITION: the run ended meanwhile (lease expired,
                # cancelled): nothing to report any more.
                lvl = logging.INFO if code == grpc.StatusCode.FAILED_PRECONDITION else logging.WARNING
                log.log(lvl, "run %s of job %s: Complete failed: %s: %s", ctx.run_id, ctx.job_id,
                        code.name, e.details())
                return

    def _heartbeat(self):
        while not (self._stopping.is_set() and not self._inflight):
            now = time.monotonic()
            with self._lock:
                due = [c for c in self._inflight.values() if c._next_extend <= now]
            for ctx in due:
                try:
                    self.client._workers.ExtendLease(
                        wpb.ExtendLeaseRequest(run_id=ctx.run_id, lease_token=ctx._token),
                        timeout=self.client.timeout, metadata=self.client._metadata)
                    ctx._next_extend = time.monotonic() + ctx._lease / 3
                except grpc.RpcError as e:
                    if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                        ctx.cancelled.set()  # the run is over for the daemon
                        ctx._next_extend = float("inf")
                    else:
                        ctx._next_extend = time.monotonic() + min(1.0, ctx._lease / 10)
            time.sleep(0.1)


async def _await(aw):
    return await aw
