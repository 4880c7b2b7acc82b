"""Client: apsd's Scheduler RPCs as APScheduler's scheduler methods."""
import datetime as _dt
import threading
import time

import grpc

from . import _time, _values, events as _events, triggers as _triggers
from ._pb import field_mask_pb2, pb, pb_grpc, wpb_grpc
from .errors import JobLookupError, UnavailableError, call
from .job import Command, Job
from .util import get_callable_name, obj_to_ref, undefined

# Reconnect quickly after a daemon restart (gRPC's default backoff grows to
# two minutes).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_READS = {"GetJob", "ListJobs", "GetScheduler", "PreviewTrigger"}

_OVERLAP = {"skip": 1, "queue_one": 2, "queue_all": 3, "cancel_running": 4}

STATE_STOPPED, STATE_RUNNING, STATE_PAUSED = 0, 1, 2  # APScheduler's values
_STATES = {pb.SCHEDULER_STATE_STOPPED: STATE_STOPPED, pb.SCHEDULER_STATE_RUNNING: STATE_RUNNING,
           pb.SCHEDULER_STATE_PAUSED: STATE_PAUSED}


def _overlap(v):
    if v is None or isinstance(v, int):
        return v or 0
    try:
        return _OVERLAP[v.lower()]
    except KeyError:
        raise ValueError("overlap_policy must be one of %s" % ", ".join(_OVERLAP)) from None


def _selector(labels):
    if labels is None or isinstance(labels, str):
        return labels or ""
    return ",".join("%s=%s" % kv for kv in sorted(labels.items()))


class Client:
    """A connection to one apsd daemon.

    Client("127.0.0.1:50051")                       plaintext (loopback)
    Client("host:50051", token="...", root_certificates=open("ca.pem","rb").read())

    `timeout` is every RPC's deadline in seconds. `timezone` (IANA name or
    tzinfo) plays APScheduler's scheduler `timezone=`: triggers without a
    zone get it, and naive datetimes are read in it; unset, triggers use the
    daemon's default zone and naive datetimes are local time.
    """

    def __init__(self, target="127.0.0.1:50051", *, token=None, root_certificates=None,
                 private_key=None, certificate_chain=None, credentials=None, channel=None,
                 timeout=10.0, timezone=None, options=None):
        self.target = target
        self.timeout = timeout
        self.timezone = _time.tz_name(timezone)
        self._metadata = (("authorization", "Bearer " + token),) if token else None
        opts = _CHANNEL_OPTIONS + list(options or [])
        if channel is not None:
            self.channel = channel
        elif credentials is not None or root_certificates is not None or certificate_chain:
            creds = credentials or grpc.ssl_channel_credentials(
                root_certificates=root_certificates, private_key=private_key,
                certificate_chain=certificate_chain)
            self.channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(target, options=opts)
        self._own_channel = channel is None
        self._sched = pb_grpc.SchedulerStub(self.channel)
        self._workers = wpb_grpc.WorkersStub(self.channel)
        self._defaults = None
        self._lock = threading.Lock()

    # ---- plumbing ---------------------------------------------------------------

    @property
    def stub(self):
        """The generated apsd.v1.Scheduler stub, for anything not wrapped."""
        return self._sched

    @property
    def workers_stub(self):
        """The generated apsd.v1.Workers stub."""
        return self._workers

    def _rpc(self, name, req, job_id=None, timeout=None):
        # UNAVAILABLE (the daemon restarting, a connection attempt that
        # failed) is retried briefly when repeating the call is harmless:
        # reads, and writes that carry a request_id (the daemon answers a
        # repeated request_id with the first result).
        retry = name in _READS or bool(getattr(req, "request_id", ""))
        deadline = time.monotonic() + (timeout or self.timeout)
        delay = 0.1
        while True:
            try:
                return call(getattr(self._sched, name), req,
                            timeout=max(0.1, deadline - time.monotonic()),
                            metadata=self._metadata, job_id=job_id)
            except UnavailableError:
                if not retry or time.monotonic() + delay >= deadline or delay > 1.0:
                    raise
                time.sleep(delay)
                delay *= 2

    def close(self):
        if self._own_channel:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout=10.0):
        """Waits until the daemon accepts connections (grpc.FutureTimeoutError
        otherwise)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        return self

    def _job(self, msg, func=None):
        return Job(self, msg, func, self._job_defaults())

    def _job_defaults(self):
        """The daemon's job_defaults, fetched once, for jobs that leave them
        unset."""
        if self._defaults is None:
            d = {"misfire_grace_time": 1, "coalesce": True, "max_instances": 1}
            try:
                info = self._rpc("GetScheduler", pb.GetSchedulerRequest())
                m = info.default_misfire_grace_time
                if m.WhichOneof("limit") == "unlimited":
                    d["misfire_grace_time"] = None
                elif m.WhichOneof("limit") == "duration":
                    d["misfire_grace_time"] = _time.from_duration(m.duration)
                d["coalesce"] = info.default_coalesce
                d["max_instances"] = info.default_max_instances
            except Exception:  # noqa: BLE001 - defaults are cosmetic; keep APScheduler's
                return d
            self._defaults = d
        return self._defaults

    # ---- building requests ------------------------------------------------------

    def _target(self, func, args, kwargs, queue, command):
        if command is not None:
            if func is not None:
                raise TypeError("give either func or command, not both")
            func = command if isinstance(command, Command) else Command(command)
        if isinstance(func, Command):
            if args or kwargs:
                raise TypeError("a command target takes no args/kwargs (put them in argv)")
            return func.to_proto(), None
        if isinstance(func, str):
            ref, name = func, None
        elif callable(func):
            ref, name = obj_to_ref(func), get_callable_name(func)
        else:
            raise TypeError("func must be a callable, a 'module:func' reference or a Command")
        if not ref:
            raise ValueError("func must not be empty")
        r = pb.RemoteTarget(task=ref, queue=queue or "")
        if args:
            if isinstance(args, (str, bytes)):
                raise TypeError("args must be a non-string iterable")
            r.args.CopyFrom(_values.to_list(args, "args"))
        if kwargs:
            r.kwargs.CopyFrom(_values.to_struct(kwargs, "kwargs"))
        return pb.Target(remote=r), name

    def _fill_options(self, job, paths, misfire_grace_time=undefined, coalesce=undefined,
                      max_instances=undefined, next_run_time=undefined, tz=None):
        if misfire_grace_time is not undefined:
            paths.append("misfire_grace_time")
            if misfire_grace_time is None:
                job.misfire_grace_time.unlimited = True
            else:
                job.misfire_grace_time.duration.CopyFrom(
                    _time.to_duration(misfire_grace_time, "misfire_grace_time"))
        if coalesce is not undefined:
            paths.append("coalesce")
            job.coalesce = bool(coalesce)
        if max_instances is not undefined:
            paths.append("max_instances")
            job.max_instances = max_instances
        if next_run_time is not undefined and next_run_time is not None:
            paths.append("next_run_time")
            job.next_run_time.CopyFrom(_time.to_timestamp(next_run_time, tz, "next_run_time"))

    def _trigger_proto(self, trigger, trigger_args):
        t = _triggers.make_trigger(trigger, trigger_args)
        return _triggers.trigger_to_proto(t, self.timezone)

    # ---- jobs ---------------------------------------------------------------------

    def add_job(self, func=None, trigger=None, args=None, kwargs=None, id=None, name=None,
                misfire_grace_time=undefined, coalesce=undefined, max_instances=undefined,
                next_run_time=undefined, jobstore=None, executor=None, replace_existing=False,
                *, queue=None, command=None, labels=None, overlap_policy=None, request_id=None,
                **trigger_args):
        """APScheduler's add_job: `add_job(func, 'cron', second='*/5')`,
        `add_job(func, 'interval', seconds=3)`, `add_job(func, 'date',
        run_date=dt)`, `add_job(func, next_run_time=dt)`. Returns the stored Job.

        func: "module:func" or a callable (sent as its "module:qualname"): a
        remote task, run by a Worker on `queue` (default 'default'); or a
        Command / `command=[argv]`: a program the daemon runs. args/kwargs
        must be JSON values. next_run_time=None adds the job paused.
        misfire_grace_time=None means no limit. Unset options take the
        daemon's job_defaults. Beyond APScheduler: labels (dict),
        overlap_policy ('skip', 'queue_one', 'queue_all', 'cancel_running'),
        request_id (idempotent retries).
        Raises ConflictingIdError, InvalidArgumentError (`.field` names the
        bad field), PermissionDeniedError...
        """
        target, default_name = self._target(func, args, kwargs, queue, command)
        job = pb.Job(id=id or "", name=name or default_name or "", target=target,
                     jobstore=jobstore or "", labels=dict(labels or {}),
                     overlap_policy=_overlap(overlap_policy))
        if executor and not (executor == "default" and target.WhichOneof("kind") == "remote"):
            job.executor = executor  # APScheduler's executor='default' = the daemon's choice
        t = self._trigger_proto(trigger, trigger_args)
        if t is not None:
            job.trigger.CopyFrom(t)
        if next_run_time is None:
            job.paused = True
        self._fill_options(job, [], misfire_grace_time, coalesce, max_instances, next_run_time,
                           self.timezone)
        msg = self._rpc("AddJob", pb.AddJobRequest(job=job, replace_existing=replace_existing,
                                                   request_id=request_id or ""), job_id=id)
        return self._job(msg, func if callable(func) and not isinstance(func, Command) else None)

    def get_job(self, job_id, jobstore=None):
        """The Job, or None if there is none (APScheduler's get_job)."""
        try:
            msg = self._rpc("GetJob", pb.GetJobRequest(job_id=job_id), job_id=job_id)
        except JobLookupError:
            return None
        if jobstore and msg.jobstore != jobstore:
            return None
        return self._job(msg)

    def get_jobs(self, jobstore=None, pending=None, *, paused=None, labels=None, stats=False):
        """Every job (of `jobstore`), ordered by id. Beyond APScheduler:
        paused=True/False filters, labels= a selector ('team=a,env!=prod' or
        a dict), stats=True includes run statistics. Ordered as APScheduler's
        job stores return them: by next run time, paused jobs last."""
        jobs, token = [], ""
        while True:
            req = pb.ListJobsRequest(page_size=1000, page_token=token, jobstore=jobstore or "",
                                     label_selector=_selector(labels),
                                     view=pb.JOB_VIEW_FULL if stats else pb.JOB_VIEW_BASIC)
            if paused is not None:
                req.paused = paused
            r = self._rpc("ListJobs", req)
            jobs += [self._job(m) for m in r.jobs]
            token = r.next_page_token
            if not token:
                return sort_jobs(jobs)

    def modify_job(self, job_id, jobstore=None, *, request_id=None, **changes):
        """APScheduler's modify_job: name, trigger (a trigger object), func,
        args, kwargs, executor, misfire_grace_time, coalesce, max_instances,
        next_run_time (None pauses the job), plus queue, labels,
        overlap_policy. Raises JobLookupError."""
        job = pb.Job(id=job_id)
        paths = []
        pause = "next_run_time" in changes and changes["next_run_time"] is None
        if pause:
            del changes["next_run_time"]
        if "name" in changes:
            job.name = changes.pop("name") or ""
            paths.append("name")
        if "trigger" in changes:
            t = changes.pop("trigger")
            if isinstance(t, str):
                raise TypeError("modify_job(trigger=...) takes a trigger object; use "
                                "reschedule_job(job_id, 'cron', ...) for keywords")
            job.trigger.CopyFrom(_triggers.trigger_to_proto(_triggers.as_trigger(t),
                                                            self.timezone))
            paths.append("trigger")
        target_keys = {"func", "args", "kwargs", "queue", "command"} & set(changes)
        func = None
        if target_keys:
            cur = self._rpc("GetJob", pb.GetJobRequest(job_id=job_id, view=pb.JOB_VIEW_BASIC),
                            job_id=job_id)
            old = Job(self, cur)
            func = changes.pop("func", None)
            command = changes.pop("command", None)
            if func is None and command is None:
                func = old.func
            target, _ = self._target(
                func, changes.pop("args", old.args if not isinstance(func, Command) else None),
                changes.pop("kwargs", old.kwargs if not isinstance(func, Command) else None),
                changes.pop("queue", old.queue), command)
            job.target.CopyFrom(target)
            paths.append("target")
        if "executor" in changes:
            job.executor = changes.pop("executor") or ""
            paths.append("executor")
        if "labels" in changes:
            job.labels.update(changes.pop("labels") or {})
            paths.append("labels")
        if "overlap_policy" in changes:
            job.overlap_policy = _overlap(changes.pop("overlap_policy"))
            paths.append("overlap_policy")
        opts = {k: changes.pop(k) for k in ("misfire_grace_time", "coalesce", "max_instances",
                                            "next_run_time") if k in changes}
        if changes:
            raise AttributeError("The following are not modifiable attributes of Job: %s"
                                 % ", ".join(changes))
        self._fill_options(job, paths, tz=self.timezone, **opts)
        msg = None
        if paths:
            msg = self._rpc("ModifyJob", pb.ModifyJobRequest(
                job=job, update_mask=field_mask_pb2.FieldMask(paths=paths),
                request_id=request_id or ""), job_id=job_id)
        if pause or msg is None:
            msg = self._rpc("PauseJob", pb.PauseJobRequest(job_id=job_id), job_id=job_id) \
                if pause else self._rpc("GetJob", pb.GetJobRequest(job_id=job_id), job_id=job_id)
        return self._job(msg, func if callable(func) and not isinstance(func, Command) else None)

    def reschedule_job(self, job_id, jobstore=None, trigger=None, *, request_id=None,
                       **trigger_args):
        """Replaces the trigger (APScheduler's keywords) and recomputes the
        next run time from now. Raises JobLookupError."""
        t = self._trigger_proto(trigger or "date", trigger_args)
        msg = self._rpc("RescheduleJob", pb.RescheduleJobRequest(
            job_id=job_id, trigger=t, request_id=request_id or ""), job_id=job_id)
        return self._job(msg)

    def pause_job(self, job_id, jobstore=None, *, request_id=None):
        """Pauses a job (next_run_time becomes None)."""
        msg = self._rpc("PauseJob", pb.PauseJobRequest(job_id=job_id, request_id=request_id or ""),
                        job_id=job_id)
        return self._job(msg)

    def resume_job(self, job_id, jobstore=None, *, request_id=None):
        """Resumes a job; returns None if its trigger has no further fire time
        (the job is then removed), as APScheduler."""
        msg = self._rpc("ResumeJob", pb.ResumeJobRequest(job_id=job_id,
                                                         request_id=request_id or ""),
                        job_id=job_id)
        if not msg.HasField("next_run_time"):
            return None
        return self._job(msg)

    def remove_job(self, job_id, jobstore=None, *, request_id=None):
        """Removes a job. Raises JobLookupError if there is none."""
        self._rpc("RemoveJob", pb.RemoveJobRequest(job_id=job_id, request_id=request_id or ""),
                  job_id=job_id)

    def remove_all_jobs(self, jobstore=None, *, request_id=None):
        """Removes every job (of `jobstore`); returns how many."""
        return self._rpc("RemoveAllJobs", pb.RemoveAllJobsRequest(
            jobstore=jobstore or "", request_id=request_id or "")).removed_count

    def run_job(self, job_id, *, request_id=None):
        """Starts one extra run now, schedule unchanged (APScheduler 4's
        run_job); returns the run id."""
        return self._rpc("RunJobNow", pb.RunJobNowRequest(job_id=job_id,
                                                          request_id=request_id or ""),
                         job_id=job_id).run_id

    def backfill(self, job_id, start_time, end_time, max_runs=0, validate_only=False, *,
                 request_id=None):
        """Runs the job for each of its fire times in [start_time, end_time);
        returns those times (aware, UTC)."""
        r = self._rpc("Backfill", pb.BackfillRequest(
            job_id=job_id, start_time=_time.to_timestamp(start_time, self.timezone, "start_time"),
            end_time=_time.to_timestamp(end_time, self.timezone, "end_time"), max_runs=max_runs,
            validate_only=validate_only, request_id=request_id or ""), job_id=job_id)
        return [_time.from_timestamp(t) for t in r.scheduled_run_times]

    def preview(self, trigger=None, count=10, start_time=None, **trigger_args):
        """The next `count` fire times of a trigger (APScheduler's keywords or
        a trigger object), from start_time (default now), as aware datetimes
        in the trigger's zone. Nothing is added."""
        t = self._trigger_proto(trigger, trigger_args)
        if t is None:
            raise TypeError("preview() needs a trigger")
        req = pb.PreviewTriggerRequest(trigger=t, count=count)
        if start_time is not None:
            req.start_time.CopyFrom(_time.to_timestamp(start_time, self.timezone, "start_time"))
        r = self._rpc("PreviewTrigger", req)
        from .job import _zone_of
        tz = _zone_of(r.effective_trigger)
        return [_time.from_timestamp(ts, tz) for ts in r.fire_times]

    def describe_trigger(self, trigger=None, **trigger_args):
        """The daemon's str() of a trigger, e.g. "cron[second='*/5']"."""
        t = self._trigger_proto(trigger, trigger_args)
        return self._rpc("PreviewTrigger", pb.PreviewTriggerRequest(trigger=t, count=1)).description

    # ---- the scheduler --------------------------------------------------------------

    def info(self):
        """The daemon's SchedulerInfo message (state, version, default zone,
        stores, executors, event log bounds, job defaults)."""
        return self._rpc("GetScheduler", pb.GetSchedulerRequest())

    @property
    def state(self):
        """APScheduler's STATE_STOPPED (0), STATE_RUNNING (1), STATE_PAUSED (2)."""
        return _STATES.get(self.info().state, STATE_STOPPED)

    def pause(self, *, request_id=None):
        """Pauses job processing in the daemon (every job, every client)."""
        self._rpc("PauseScheduler", pb.PauseSchedulerRequest(request_id=request_id or ""))

    def resume(self, *, request_id=None):
        """Resumes job processing."""
        self._rpc("ResumeScheduler", pb.ResumeSchedulerRequest(request_id=request_id or ""))

    # ---- events ------------------------------------------------------------------------

    def events(self, types=None, job_ids=None, after=None, *, continue_after_gap=False,
               reconnect=True, retry_timeout=None):
        """An iterator of events (apsd.events classes, APScheduler's codes).

        types: None (all), an APScheduler mask (EVENT_JOB_EXECUTED |
        EVENT_JOB_ERROR) or a list of codes/names. job_ids: only JOB_*
        events of these jobs. after: a sequence number: replay every retained
        event after it, then live ones (0 = from the oldest); None = live only.
        It reconnects by itself and resumes after the last event seen (its
        `last_sequence`); retry_timeout bounds how long it keeps trying
        (None = forever). A gap (events pruned from the log) raises
        EventGapError unless continue_after_gap. Stop it with close()."""
        return _events.EventStream(self, types, job_ids, after, continue_after_gap, reconnect,
                                   retry_timeout)

    def last_sequence(self):
        """The newest event's sequence (a starting point for events(after=))."""
        return self.info().event_log.last_sequence

    def worker(self, queue="default", **kw):
        """A Worker on this client's connection (see apsd.Worker)."""
        from .worker import Worker
        return Worker(self, queue, **kw)


def sort_jobs(jobs):
    """APScheduler's order: by next run time, paused jobs last, then by id."""
    far = _dt.datetime.max.replace(tzinfo=_dt.timezone.utc)
    return sorted(jobs, key=lambda j: (j.next_run_time or far, j.id))


def now():
    """Now, aware, in UTC."""
    return _dt.datetime.now(_dt.timezone.utc)
