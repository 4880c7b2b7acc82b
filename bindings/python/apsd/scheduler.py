"""RemoteScheduler: APScheduler's BackgroundScheduler surface backed by apsd.

    from apsd import RemoteScheduler as BackgroundScheduler

    scheduler = BackgroundScheduler()            # apsd at $APSD_TARGET or 127.0.0.1:50051
    scheduler.add_job(func=aps_test, args=('定时任务',), trigger='cron', second='*/5')
    scheduler.start()

Jobs are stored and fired by the daemon; `func` runs in this process, in
the scheduler's Worker thread pool, dispatched through a worker queue. By
default the queue is private to this scheduler (jobs live as long as it, like
APScheduler's default MemoryJobStore: shutdown() removes them). With
`queue='name'` jobs persist in the daemon after shutdown and the next
RemoteScheduler on that queue runs them again (its worker resolves the
"module:func" references by import), like a persistent job store.
"""
import atexit
import logging
import os
import re
import sys
import threading
import time
import uuid
import weakref

from . import events as _ev
from . import triggers as _triggers
from .client import Client
from .errors import (ApsdError, JobLookupError, SchedulerAlreadyRunningError,
                     SchedulerNotRunningError)
from .util import get_callable_name, obj_to_ref, ref_to_obj, undefined
from .worker import Worker

log = logging.getLogger("apsd.scheduler")

STATE_STOPPED, STATE_RUNNING, STATE_PAUSED = 0, 1, 2  # APScheduler's values
LABEL = "apsd.python/queue"
_SCHEDULER_LIFECYCLE = _ev.EVENT_SCHEDULER_STARTED | _ev.EVENT_SCHEDULER_SHUTDOWN


def new_job_id():
    """A job id as the daemon generates them: 12 hex digits of the wall
    clock's milliseconds, then 128 random bits (44 hex digits). Ids made
    later sort after, so the daemon's store appends a batch of adds instead
    of writing a page per add (APScheduler's uuid4 ids land anywhere)."""
    return "%012x%s" % (time.time_ns() // 1000000 & 0xFFFFFFFFFFFF, os.urandom(16).hex())


class PendingJob:
    """A job added before start(): APScheduler's pending Job (it is sent to
    the daemon by start())."""

    def __init__(self, kw, func):
        self.kw = kw
        self.id = kw["id"]
        self.func = func
        self.name = kw["name"] or (get_callable_name(func) if callable(func) else func)
        self.args = tuple(kw["args"] or ())
        self.kwargs = dict(kw["kwargs"] or {})
        trig = dict(kw["trigger_args"])
        self.trigger = _triggers.make_trigger(kw["trigger"], trig)
        self.next_run_time = None

    @property
    def pending(self):
        return True

    def __repr__(self):
        return "<Job (id=%s name=%s)>" % (self.id, self.name)

    def __str__(self):
        return "%s (trigger: %s, pending)" % (self.name, self.trigger or "date[now]")


class RemoteScheduler:
    """APScheduler's BackgroundScheduler, backed by apsd.

    Options (keywords or an APScheduler-style gconfig dict with the
    'apscheduler.' prefix): target ('host:port'; default $APSD_TARGET or
    127.0.0.1:50051), client (an apsd.Client to use instead), token,
    root_certificates, timezone, job_defaults (coalesce, max_instances,
    misfire_grace_time), queue (see the module doc), max_workers (threads
    running functions; default the 'default' executor's max_workers, else 10),
    listen ('own': listeners get the events of this scheduler's jobs and the
    daemon's pause/resume; 'all': every event of the daemon). `jobstores`
    and `executors` are accepted for compatibility: apsd's own stores
    ('default' persistent, 'memory') and executors are used.
    """

    def __init__(self, gconfig={}, **options):  # noqa: B006 - APScheduler's signature
        self.state = STATE_STOPPED
        self._listeners = []
        self._listeners_lock = threading.Lock()
        self._pending = []
        self._job_ids = set()
        self._ids_lock = threading.Lock()
        self._paused_by_us = []
        self._events = None
        self._events_thread = None
        self._delivered = 0
        self._delivered_cv = threading.Condition()
        self._registry = {}
        self.configure(gconfig, **options)

    def configure(self, gconfig={}, prefix="apscheduler.", **options):  # noqa: B006
        """Sets options (only while stopped), as APScheduler's configure."""
        if self.state != STATE_STOPPED:
            raise SchedulerAlreadyRunningError
        config = {}
        for k, v in dict(gconfig).items():
            if k.startswith(prefix):
                config[k[len(prefix):]] = v
        config.update(options)
        client = config.pop("client", None)
        target = config.pop("target", None) or os.environ.get("APSD_TARGET", "127.0.0.1:50051")
        self.timezone = config.pop("timezone", None)
        self._job_defaults = dict(config.pop("job_defaults", None) or {})
        queue = config.pop("queue", None)
        self._private = queue is None
        self.queue = queue or "py-" + uuid.uuid4().hex[:16]
        self._listen = config.pop("listen", "own")
        self._daemon = bool(config.pop("daemon", True))
        executors = config.pop("executors", None) or {}
        jobstores = config.pop("jobstores", None)
        max_workers = config.pop("max_workers", None) or _pool_size(executors.get("default"))
        if jobstores:
            log.info("RemoteScheduler: jobstores %s are apsd's own stores", sorted(jobstores))
        client_kw = {k: config.pop(k) for k in ("token", "root_certificates", "private_key",
                                                  "certificate_chain", "credentials")
                     if k in config}
        config.pop("logger", None)
        if config:
            raise TypeError("unknown RemoteScheduler options: %s" % ", ".join(sorted(config)))
        self._client = client or Client(target, timezone=self.timezone, **client_kw)
        if client is not None and self.timezone is not None:
            self._client.timezone = _triggers._time.tz_name(self.timezone)
        self._worker = Worker(self._client, self.queue, max_workers=max_workers or 10,
                              import_tasks=True)
        for task, func in self._registry.items():
            self._worker.register(task, func)

    # ---- properties ----------------------------------------------------------------

    @property
    def client(self):
        """The apsd.Client this scheduler talks through."""
        return self._client

    @property
    def worker(self):
        """The Worker running this scheduler's functions."""
        return self._worker

    @property
    def running(self):
        return self.state != STATE_STOPPED

    # ---- lifecycle -------------------------------------------------------------------

    def start(self, paused=False):
        """Sends pending jobs to the daemon, starts the worker thread pool and
        the event listener thread. paused=True: jobs stay paused until
        resume()."""
        if self.state != STATE_STOPPED:
            raise SchedulerAlreadyRunningError
        after = self._client.last_sequence()  # also: fails fast if apsd is unreachable
        self._worker.start()
        self._worker.wait_connected(5.0)
        if not self._private:
            for job in self._client.get_jobs(labels={LABEL: _label(self.queue)}):
                self._remember(job.id)
        self._events = self._client.events(after=after)
        self._events_thread = threading.Thread(target=self._event_loop, name="apsd-events",
                                               daemon=self._daemon)
        self._events_thread.start()
        self.state = STATE_RUNNING
        pending, self._pending = self._pending, []
        for p in pending:
            self._real_add_job(p.kw, p.func)
        if self._private:
            _live.add(self)
        self._dispatch(_ev.SchedulerEvent(_ev.EVENT_SCHEDULER_STARTED))
        if paused:
            self.pause()

    def shutdown(self, wait=True):
        """Stops the worker (with wait: after running functions finish and
        their events reach the listeners) and the listener thread. With the
        private queue, this scheduler's jobs are removed from the daemon."""
        if self.state == STATE_STOPPED:
            raise SchedulerNotRunningError
        self.state = STATE_STOPPED
        _live.discard(self)
        if self._private:
            self._remove_own_jobs()
        self._worker.stop(wait=wait)
        if wait:
            try:  # let the events of the last runs reach the listeners
                self._wait_delivered(self._client.last_sequence(), 5.0)
            except ApsdError:
                pass
        if self._events is not None:
            self._events.close()
        if self._events_thread is not None and self._events_thread is not threading.current_thread():
            self._events_thread.join(10)
        self._dispatch(_ev.SchedulerEvent(_ev.EVENT_SCHEDULER_SHUTDOWN))

    def pause(self):
        """Pauses this scheduler's jobs (not the whole daemon: use
        client.pause() for that) until resume()."""
        if self.state == STATE_STOPPED:
            raise SchedulerNotRunningError
        if self.state == STATE_RUNNING:
            self._paused_by_us = [j.id for j in self.get_jobs() if not j.paused]
            for jid in self._paused_by_us:
                try:
                    self._client.pause_job(jid)
                except JobLookupError:
                    pass
            self.state = STATE_PAUSED
            self._dispatch(_ev.SchedulerEvent(_ev.EVENT_SCHEDULER_PAUSED))

    def resume(self):
        """Resumes the jobs pause() paused."""
        if self.state == STATE_STOPPED:
            raise SchedulerNotRunningError
        if self.state == STATE_PAUSED:
            for jid in self._paused_by_us:
                try:
                    self._client.resume_job(jid)
                except JobLookupError:
                    pass
            self._paused_by_us = []
            self.state = STATE_RUNNING
            self._dispatch(_ev.SchedulerEvent(_ev.EVENT_SCHEDULER_RESUMED))

    def wakeup(self):
        """Nothing to do: the daemon schedules."""

    # ---- jobs ----------------------------------------------------------------------------

    def add_job(self, func, trigger=None, args=None, kwargs=None, id=None, name=None,
                misfire_grace_time=undefined, coalesce=undefined, max_instances=undefined,
                next_run_time=undefined, jobstore="default", executor="default",
                replace_existing=False, **trigger_args):
        """APScheduler's add_job. `func` (a callable or "module:func") runs in
        this process's worker. Before start() the job is pending."""
        if isinstance(func, str):
            ref_to_obj(func)  # fail now on a bad reference, as APScheduler
        elif not callable(func):
            raise TypeError("func must be a callable or a textual reference to one")
        kw = dict(trigger=trigger, args=args, kwargs=kwargs, id=id or new_job_id(), name=name,
                  misfire_grace_time=misfire_grace_time, coalesce=coalesce,
                  max_instances=max_instances, next_run_time=next_run_time, jobstore=jobstore,
                  executor=executor, replace_existing=replace_existing,
                  trigger_args=dict(trigger_args))
        for k, v in self._job_defaults.items():
            if k in ("misfire_grace_time", "coalesce", "max_instances") and kw[k] is undefined:
                kw[k] = v
        if self.state == STATE_STOPPED:
            p = PendingJob(kw, func)
            self._pending = [q for q in self._pending if q.id != p.id or not replace_existing]
            self._pending.append(p)
            log.info("Adding job tentatively -- it will be properly scheduled when the "
                     "scheduler starts")
            return p
        return self._real_add_job(kw, func)

    def _real_add_job(self, kw, func):
        if callable(func):
            task = self._task_name(func)
            self._worker.register(task, func)
            self._registry[task] = func
            ref = task
        else:
            ref, func = func, None
        kw = dict(kw)
        trigger_args = kw.pop("trigger_args")
        name = kw.pop("name") or (get_callable_name(func) if func is not None else None)
        self._remember(kw["id"])
        job = self._client.add_job(ref, name=name, queue=self.queue,
                                   labels={LABEL: _label(self.queue)}, **kw, **trigger_args)
        if self.state == STATE_PAUSED and not job.paused:
            # A paused scheduler processes no job, new ones included.
            job = self._client.pause_job(job.id)
            self._paused_by_us.append(job.id)
        if func is not None:
            job.func = func
        return job

    def _task_name(self, func):
        try:
            ref = obj_to_ref(func)
            if ref_to_obj(ref) is func:
                return ref
        except (ValueError, LookupError, TypeError):
            pass
        # Lambdas, nested functions, bound methods: only this process can
        # run them, under a name unique to the object.
        return "apsd.local:%s#%x" % (get_callable_name(func), id(func))

    def scheduled_job(self, trigger, args=None, kwargs=None, id=None, name=None,
                      misfire_grace_time=undefined, coalesce=undefined, max_instances=undefined,
                      next_run_time=undefined, jobstore="default", executor="default",
                      **trigger_args):
        """A decorator version of add_job (with replace_existing=True)."""
        def inner(func):
            self.add_job(func, trigger, args, kwargs, id, name, misfire_grace_time, coalesce,
                         max_instances, next_run_time, jobstore, executor, True, **trigger_args)
            return func
        return inner

    def _attach(self, job):
        if job is not None and isinstance(job.func, str):
            f = self._registry.get(job.func)
            if f is not None:
                job.func = f
        return job

    def get_jobs(self, jobstore=None, pending=None):
        """This scheduler's jobs (pending ones before start())."""
        if self.state == STATE_STOPPED:
            return [p for p in self._pending if jobstore in (None, p.kw["jobstore"])]
        return [self._attach(j) for j in
                self._client.get_jobs(jobstore, labels={LABEL: _label(self.queue)})]

    def get_job(self, job_id, jobstore=None):
        if self.state == STATE_STOPPED:
            return next((p for p in self._pending if p.id == job_id), None)
        return self._attach(self._client.get_job(job_id, jobstore))

    def modify_job(self, job_id, jobstore=None, **changes):
        if "func" in changes and callable(changes["func"]):
            f = changes["func"]
            task = self._task_name(f)
            self._worker.register(task, f)
            self._registry[task] = f
            changes["func"] = task
        return self._attach(self._client.modify_job(job_id, jobstore, **changes))

    def reschedule_job(self, job_id, jobstore=None, trigger=None, **trigger_args):
        return self._attach(self._client.reschedule_job(job_id, jobstore, trigger, **trigger_args))

    def pause_job(self, job_id, jobstore=None):
        return self._attach(self._client.pause_job(job_id, jobstore))

    def resume_job(self, job_id, jobstore=None):
        return self._attach(self._client.resume_job(job_id, jobstore))

    def remove_job(self, job_id, jobstore=None):
        if self.state == STATE_STOPPED:
            n = len(self._pending)
            self._pending = [p for p in self._pending if p.id != job_id]
            if len(self._pending) == n:
                raise JobLookupError("No job by the id of %s was found" % job_id, job_id=job_id)
            return
        self._client.remove_job(job_id, jobstore)

    def remove_all_jobs(self, jobstore=None):
        """Removes this scheduler's jobs (of `jobstore`)."""
        if self.state == STATE_STOPPED:
            self._pending = [p for p in self._pending
                             if jobstore is not None and p.kw["jobstore"] != jobstore]
            return
        for job in self._client.get_jobs(jobstore, labels={LABEL: _label(self.queue)}):
            try:
                self._client.remove_job(job.id)
            except JobLookupError:
                pass

    def print_jobs(self, jobstore=None, out=None):
        """Prints the jobs as APScheduler does."""
        out = out or sys.stdout
        if self.state == STATE_STOPPED:
            print("Pending jobs:", file=out)
            jobs = [p for p in self._pending if jobstore in (None, p.kw["jobstore"])]
            for p in jobs:
                print("    %s" % p, file=out)
            if not jobs:
                print("    No pending jobs", file=out)
            return
        by_store = {}
        for job in self.get_jobs(jobstore):
            by_store.setdefault(job.jobstore, []).append(job)
        stores = sorted(set(by_store) | ({jobstore} if jobstore else {"default"}))
        for alias in stores:
            print("Jobstore %s:" % alias, file=out)
            jobs = by_store.get(alias, [])
            for job in jobs:
                print("    %s" % job, file=out)
            if not jobs:
                print("    No scheduled jobs", file=out)

    def _remember(self, job_id):
        with self._ids_lock:
            self._job_ids.add(job_id)

    def _remove_own_jobs(self):
        try:
            for job in self._client.get_jobs(labels={LABEL: _label(self.queue)}):
                try:
                    self._client.remove_job(job.id)
                except JobLookupError:
                    pass
        except ApsdError as e:
            log.warning("RemoteScheduler: could not remove the jobs of queue %s: %s",
                        self.queue, e)

    # ---- listeners ---------------------------------------------------------------------

    def add_listener(self, callback, mask=_ev.EVENT_ALL):
        """Calls `callback(event)` for events matching `mask` (APScheduler's
        EVENT_* bits, from apsd.events or apscheduler.events), on the
        scheduler's event thread."""
        with self._listeners_lock:
            self._listeners.append((callback, mask))

    def remove_listener(self, callback):
        with self._listeners_lock:
            self._listeners = [(cb, m) for cb, m in self._listeners if cb != callback]

    def _dispatch(self, event):
        with self._listeners_lock:
            listeners = list(self._listeners)
        for cb, mask in listeners:
            if event.code & mask:
                try:
                    cb(event)
                except Exception:  # noqa: BLE001 - as APScheduler: log and go on
                    log.exception("Error notifying listener")

    def _wanted(self, event):
        if self._listen == "all":
            return True
        if event.code & _SCHEDULER_LIFECYCLE:
            return False  # the daemon's own start/stop; ours are dispatched locally
        job_id = getattr(event, "job_id", None)
        if job_id is None:
            return True
        with self._ids_lock:
            return job_id in self._job_ids

    def _event_loop(self):
        stream = self._events
        try:
            for event in stream:
                if self._wanted(event):
                    self._dispatch(event)
                with self._delivered_cv:
                    self._delivered = event.sequence
                    self._delivered_cv.notify_all()
        except Exception:  # noqa: BLE001 - a background thread: log it
            if not stream.closed:
                log.exception("RemoteScheduler: event stream failed")

    def _wait_delivered(self, seq, timeout):
        with self._delivered_cv:
            self._delivered_cv.wait_for(lambda: self._delivered >= seq, timeout)


def _pool_size(executor):
    """max_workers of an APScheduler ThreadPoolExecutor/ProcessPoolExecutor."""
    pool = getattr(executor, "_pool", None)
    n = getattr(pool, "_max_workers", None)
    return n if isinstance(n, int) and n > 0 else None


def _label(queue):
    """The queue as a label value (at most 63 of [A-Za-z0-9._-])."""
    v = re.sub(r"[^A-Za-z0-9._-]", "_", queue)[:63]
    return v if v and v[0].isalnum() else "q" + v[:62]


# Schedulers with a private queue still running at interpreter exit: remove
# their jobs, which no other process could run.
_live = weakref.WeakSet()


@atexit.register
def _cleanup():
    for s in list(_live):
        try:
            s._remove_own_jobs()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
