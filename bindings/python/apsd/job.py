"""Job: a stored job as APScheduler's Job object, plus Command targets."""
from . import _time, _values, triggers as _triggers
from ._pb import pb
from .util import undefined


class Command:
    """A program the daemon runs itself (a `command` target), no shell:
    `Command(["/bin/echo", "hello"], env={"K": "v"}, cwd="/tmp", timeout=30)`."""

    def __init__(self, argv, env=None, cwd=None, timeout=None, max_output_bytes=0):
        if isinstance(argv, str):
            raise TypeError("argv must be a list of strings, not a string")
        self.argv = list(argv)
        self.env = dict(env or {})
        self.cwd = cwd
        self.timeout = timeout
        self.max_output_bytes = max_output_bytes

    def to_proto(self):
        c = pb.CommandTarget(argv=self.argv, env=self.env, cwd=self.cwd or "",
                             max_output_bytes=self.max_output_bytes)
        if self.timeout:
            c.timeout.CopyFrom(_time.to_duration(self.timeout, "timeout"))
        return pb.Target(command=c)

    @classmethod
    def from_proto(cls, c):
        return cls(list(c.argv), dict(c.env), c.cwd or None,
                   _time.from_duration(c.timeout) if c.HasField("timeout") else None,
                   c.max_output_bytes)

    def __eq__(self, other):
        return isinstance(other, Command) and self.to_proto() == other.to_proto()

    def __repr__(self):
        return "Command(%r)" % (self.argv,)

    def __str__(self):
        return " ".join(self.argv)


def _overlap_name(v):
    return pb.OverlapPolicy.Name(v)[len("OVERLAP_POLICY_"):].lower() if v else None


class Job:
    """A job stored in apsd, with APScheduler's Job attributes:

    id, name, func (the callable when this process registered it, else the
    "module:func" reference or a Command), func_ref, args, kwargs, trigger,
    executor, jobstore, misfire_grace_time (seconds; None = no limit),
    coalesce, max_instances, next_run_time (aware datetime in the trigger's
    zone; None = paused), plus apsd's: queue, paused, labels, overlap_policy,
    running_instances, queued_runs, create_time, update_time, stats (the
    JobStats message, or None) and `proto` (the apsd.v1.Job message).

    modify(), reschedule(), pause(), resume(), remove() act on the daemon
    through the client that returned the job, as in APScheduler."""

    def __init__(self, owner, msg, func=None, defaults=None):
        self._owner = owner
        self.proto = msg
        self.id = msg.id
        self.name = msg.name
        self.trigger = _triggers.from_proto(msg.trigger) if msg.HasField("trigger") else None
        tz = _zone_of(msg.trigger)
        kind = msg.target.WhichOneof("kind")
        self.queue = None
        if kind == "remote":
            r = msg.target.remote
            self.func_ref = r.task
            self.args = tuple(_values.from_list(r.args))
            self.kwargs = _values.from_struct(r.kwargs)
            self.queue = r.queue or "default"
            self.func = func if func is not None else r.task
        elif kind == "command":
            cmd = Command.from_proto(msg.target.command)
            self.func_ref = None
            self.func = cmd
            self.args = tuple(cmd.argv[1:])
            self.kwargs = {}
        else:
            self.func_ref = self.func = None
            self.args, self.kwargs = (), {}
        self.executor = msg.executor
        self.jobstore = msg.jobstore
        d = defaults or {}
        if msg.HasField("misfire_grace_time") and msg.misfire_grace_time.WhichOneof("limit"):
            m = msg.misfire_grace_time
            self.misfire_grace_time = (None if m.WhichOneof("limit") == "unlimited"
                                       else _time.from_duration(m.duration))
        else:
            self.misfire_grace_time = d.get("misfire_grace_time", undefined)
        self.coalesce = msg.coalesce if msg.HasField("coalesce") else d.get("coalesce", undefined)
        self.max_instances = (msg.max_instances if msg.HasField("max_instances")
                              else d.get("max_instances", undefined))
        self.overlap_policy = _overlap_name(msg.overlap_policy)
        self.labels = dict(msg.labels)
        self.next_run_time = _time.opt_timestamp(msg, "next_run_time", tz)
        self.paused = msg.paused
        self.running_instances = msg.running_instances
        self.queued_runs = msg.queued_runs
        self.create_time = _time.opt_timestamp(msg, "create_time", tz)
        self.update_time = _time.opt_timestamp(msg, "update_time", tz)
        self.stats = msg.stats if msg.HasField("stats") else None

    @property
    def pending(self):
        """False: a Job object always comes from the daemon (APScheduler's
        `pending` is True only before the scheduler starts)."""
        return False

    def modify(self, **changes):
        """Changes fields of this job (Client.modify_job) and updates this
        object."""
        self._replace(self._owner.modify_job(self.id, **changes))
        return self

    def reschedule(self, trigger=None, **trigger_args):
        """Replaces the trigger and recomputes next_run_time."""
        self._replace(self._owner.reschedule_job(self.id, trigger=trigger, **trigger_args))
        return self

    def pause(self):
        self._replace(self._owner.pause_job(self.id))
        return self

    def resume(self):
        """Resumes the job; returns None if it was removed (no further fire
        time), as APScheduler."""
        job = self._owner.resume_job(self.id)
        if job is None:
            return None
        self._replace(job)
        return self

    def remove(self):
        self._owner.remove_job(self.id)

    def _replace(self, other):
        func = self.func
        self.__dict__.update(other.__dict__)
        if callable(func) and not isinstance(func, Command):
            self.func = func

    def __eq__(self, other):
        if isinstance(other, Job):
            return self.id == other.id
        return NotImplemented

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return "<Job (id=%s name=%s)>" % (self.id, self.name)

    def __str__(self):
        status = ("next run at: " + _time.datetime_repr(self.next_run_time)
                  if self.next_run_time else "paused")
        return "%s (trigger: %s, %s)" % (self.name, self.trigger, status)


def _zone_of(t):
    kind = t.WhichOneof("kind")
    if kind in ("cron", "interval", "date", "calendar_interval"):
        return getattr(t, kind).timezone or None
    if kind in ("all_of", "any_of"):
        subs = getattr(t, kind).triggers
        return _zone_of(subs[0]) if subs else None
    return None
