"""Kill -9 under load (issue 8, item 1).

Each round, client threads drive AddJob / ModifyJob / RemoveJob against the
real daemon and record every acknowledged change; a killer sends SIGKILL at
a random moment; the daemon is restarted on the same data directory (the
store accumulates over all rounds) and the test checks:

- every acknowledged change is there, exactly (the stored job equals the
  acknowledged response, timestamps included), every acknowledged removal
  is absent;
- the one call per thread that was in flight when the kill landed is
  all-or-nothing (a ModifyJob of several fields is wholly applied or not at
  all), and retrying it with its request_id applies it exactly once;
- the event log: sequences increase by 1 with no gap and no duplicate
  across every restart (DESIGN.md: events are written in the transaction of
  their change), each job's ADDED/MODIFIED/REMOVED events match the changes
  applied to it one to one;
- jobs due while the daemon was down follow misfire_grace_time and coalesce
  (interval jobs of 0.25 s in the four combinations, date jobs due in the
  past or during the downtime): a fire time is run at most once, with
  coalesce off none is lost, with coalesce on the downtime's fire times
  become one run, with a small grace the stale ones become JOB_MISSED, with
  unlimited grace none is missed; every submitted run ends exactly once
  (runs cut by the kill end as JOB_ERROR "interrupted by restart"; runs
  committed ahead whose time had not come never started: the restart
  withdraws them and their times come again from the schedule, under the
  same rules), and the jobs keep firing.

A second test kills the daemon while commands run (`/bin/sleep 30`): their
runs end as JOB_ERROR "interrupted by restart", the jobs keep firing, and
the restarted daemon stops the commands the killed one left running.

Rounds: 25 (8 with APSD_SANITIZED=1); `--rounds N` or APSD_CRASH_ROUNDS=N
for more; APSD_CRASH_SEED=S replays a seed. Prints one figure line per test.
"""
import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest
import uuid

from common import (ET, SANITIZED, T, Daemon, dur, field_mask_pb2, grpc, list_jobs, pb, read_events,
                    run_tests, secs, ts, wait_for)


def us(t):
    """A Timestamp as integer microseconds (the engine's resolution)."""
    return t.seconds * 1000000 + t.nanos // 1000

ROUNDS = 8 if SANITIZED else 25
SEED = None
THREADS = 4
POOL = 30                 # mutable job ids per thread
INTERVAL_US = 250000      # the misfire jobs' interval
SMALL_GRACE = 0.1         # seconds: the misfire jobs' small grace
ZONES = ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/New_York"]
FIELDS = ["name", "trigger", "target", "labels", "coalesce", "max_instances", "misfire_grace_time",
          "overlap_policy"]
# What a connection cut by the kill looks like to a client.
CUT_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
INTERRUPTED = "interrupted by restart"
# A run committed ahead whose time had not come at the kill: it never
# started; the restart withdraws it and its time comes again from the
# schedule (a new run, or missed, or coalesced).
WITHDRAWN = "withdrawn before its time: the scheduler stopped first"
DEBUG = os.environ.get("APSD_CRASH_DEBUG") == "1"
FIGURES = []  # printed after the tests, one line each


def proj(job):
    """The client-set fields of a job, as comparable bytes."""
    p = pb.Job(id=job.id, name=job.name, executor=job.executor, jobstore=job.jobstore, paused=job.paused,
               overlap_policy=job.overlap_policy)
    if job.HasField("trigger"):
        p.trigger.CopyFrom(job.trigger)
    if job.HasField("target"):
        p.target.CopyFrom(job.target)
    for k, v in job.labels.items():
        p.labels[k] = v
    if job.HasField("coalesce"):
        p.coalesce = job.coalesce
    if job.HasField("max_instances"):
        p.max_instances = job.max_instances
    if job.HasField("misfire_grace_time"):
        p.misfire_grace_time.CopyFrom(job.misfire_grace_time)
    return p.SerializeToString(deterministic=True)


def basic(job):
    """A job as ListJobs' BASIC view shows it (no stats)."""
    j = pb.Job()
    j.CopyFrom(job)
    j.ClearField("stats")
    return j.SerializeToString(deterministic=True)


def apply_mask(old, req_job, paths):
    """The job `old` after ModifyJob(req_job, paths), client fields only."""
    new = pb.Job()
    new.CopyFrom(old)
    for f in paths:
        if f == "labels":
            new.ClearField("labels")
            for k, v in req_job.labels.items():
                new.labels[k] = v
        elif f in ("name", "overlap_policy"):
            setattr(new, f, getattr(req_job, f))
        elif req_job.HasField(f):
            if f in ("coalesce", "max_instances"):
                setattr(new, f, getattr(req_job, f))
            else:
                getattr(new, f).CopyFrom(getattr(req_job, f))
        else:
            new.ClearField(f)
    return new


class Gen:
    """Random job fields. Mutable jobs get triggers that never fire during
    the test (years ahead), so their state is the client's alone."""

    def __init__(self, rng):
        self.r = rng

    def trigger(self):
        r, now = self.r, int(time.time())
        k = r.random()
        if k < 0.45:
            return pb.Trigger(cron=pb.CronTrigger(
                year=str(r.randint(2090, 2099)), month=str(r.randint(1, 12)), day=str(r.randint(1, 28)),
                hour=r.choice(["*/2", str(r.randint(0, 23)), "9-17"]), minute=str(r.randint(0, 59)),
                second=r.choice(["0", "*/15", str(r.randint(0, 59))]), timezone=r.choice(ZONES)))
        if k < 0.8:
            return pb.Trigger(interval=pb.IntervalTrigger(
                hours=r.randint(1, 48), minutes=r.randint(0, 59),
                start_date=ts(now + 86400 * r.randint(30, 300)), timezone=r.choice(ZONES)))
        return pb.Trigger(date=pb.DateTrigger(run_date=ts(now + 86400 * r.randint(30, 300)),
                                              timezone=r.choice(ZONES)))

    def target(self):
        t = pb.Target(command=pb.CommandTarget(argv=["/bin/echo", "w%d" % self.r.randint(0, 1 << 30)]))
        if self.r.random() < 0.3:
            t.command.env["K%d" % self.r.randint(0, 9)] = "v%d" % self.r.randint(0, 999)
        return t

    def labels(self):
        return {"k%d" % self.r.randint(0, 5): "v%d" % self.r.randint(0, 99)
                for _ in range(self.r.randint(0, 3))}

    def grace(self):
        k = self.r.random()
        if k < 0.4:
            return pb.MisfireGraceTime(duration=dur(self.r.choice([0.5, 2, 30, 3600])))
        if k < 0.6:
            return pb.MisfireGraceTime(unlimited=True)
        return None

    def name(self):
        return self.r.choice(["job ", "定时任务 ", "nightly-"]) + str(self.r.randint(0, 1 << 20))

    def set_field(self, job, f):
        """Sets (or, for optional fields, sometimes leaves unset) field f."""
        r = self.r
        if f == "name":
            job.name = self.name()
        elif f == "trigger":
            job.trigger.CopyFrom(self.trigger())
        elif f == "target":
            job.target.CopyFrom(self.target())
        elif f == "labels":
            for k, v in self.labels().items():
                job.labels[k] = v
        elif f == "coalesce":
            if r.random() < 0.75:
                job.coalesce = r.random() < 0.5
        elif f == "max_instances":
            if r.random() < 0.75:
                job.max_instances = r.randint(1, 5)
        elif f == "misfire_grace_time":
            g = self.grace()
            if g is not None:
                job.misfire_grace_time.CopyFrom(g)
        elif f == "overlap_policy":
            job.overlap_policy = r.randint(0, 4)

    def job(self, job_id):
        j = pb.Job(id=job_id, executor="default", jobstore="default")
        for f in FIELDS:
            self.set_field(j, f)
        return j


class Op:
    __slots__ = ("kind", "job_id", "req", "before", "expect", "status", "resp", "error")

    def __init__(self, kind, job_id, req, before, expect):
        self.kind = kind        # add | replace | modify | remove | badd (a firing date job)
        self.job_id = job_id
        self.req = req
        self.before = before    # the acknowledged job before (pb.Job) or None
        self.expect = expect    # the client fields after (pb.Job) or None (removed)
        self.status = None      # ok | unknown
        self.resp = None
        self.error = None


EVENT_OF = {"add": ET.EVENT_TYPE_JOB_ADDED, "replace": ET.EVENT_TYPE_JOB_ADDED,
            "modify": ET.EVENT_TYPE_JOB_MODIFIED, "remove": ET.EVENT_TYPE_JOB_REMOVED}
STATE_TYPES = set(EVENT_OF.values())
RUN_END = {ET.EVENT_TYPE_JOB_EXECUTED, ET.EVENT_TYPE_JOB_ERROR, ET.EVENT_TYPE_JOB_MISSED}


class CrashUnderLoad:
    """The state the test keeps over all rounds."""

    def __init__(self, tc, tmp, rounds, seed):
        self.tc = tc
        self.tmp = tmp
        self.rounds = rounds
        self.rng = random.Random(seed)
        self.seed = seed
        self.d = Daemon(tmp)
        self.state = {}         # mutable job id -> acknowledged pb.Job (None = absent)
        self.last_seq = 0       # events verified up to here
        self.events = []        # every event read so far, in order
        self.open_runs = {}     # run_id -> [job_id, run times (us) not ended, submit seq, submit time]
        self.interrupts = []    # (sequence, run's submit sequence) of each "interrupted by restart"
        self.rt_events = {}     # misfire job id -> {run time (us): [(type, seq, run_id, event time)]}
        self.badd = {}          # firing date job id -> Op
        self.acked = 0
        self.inflight = 0
        self.inflight_applied = 0
        self.missed_checked = 0
        self.coalesced_checked = 0
        self.fires_checked = 0   # interval fire times due while the daemon was down
        self.dates_checked = 0   # date jobs run or missed by their grace
        self.interrupted = 0
        self.withdrawn = set()  # run ids withdrawn by a restart (never started)

    # ---- helpers ------------------------------------------------------------------

    def fail(self, msg):
        self.tc.fail("seed %s: %s\n--- apsd log tail ---\n%s" % (self.seed, msg, self.d.log_text()[-3000:]))

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)

    def pull(self):
        """Reads the events after the newest one read; checks the sequence."""
        evs, gap = read_events(self.d.sched, self.last_seq)
        self.check(gap is None, "event log gap after %d: %s" % (self.last_seq, gap))
        for e in evs:
            self.check(e.sequence == self.last_seq + 1,
                       "event sequence %d follows %d (gap or duplicate)" % (e.sequence, self.last_seq))
            self.last_seq = e.sequence
            self.events.append(e)
            self.track_run(e)
        return evs

    def track_run(self, e):
        """Every submitted run ends exactly once per run time."""
        rts = [us(t) for t in e.scheduled_run_times]
        if e.type == ET.EVENT_TYPE_JOB_SUBMITTED:
            self.check(e.run_id not in self.open_runs, "run %s submitted twice" % e.run_id)
            self.open_runs[e.run_id] = [e.job_id, set(rts), e.sequence, secs(e.time)]
        elif e.type in RUN_END and e.run_id:
            run = self.open_runs.get(e.run_id)
            self.check(run is not None and len(rts) == 1 and rts[0] in run[1],
                       "end event without a running run time: %s" % e)
            run[1].discard(rts[0])
            if e.type == ET.EVENT_TYPE_JOB_ERROR:
                # The only errors here: runs cut by a kill, or withdrawn
                # by the restart before their time.
                withdrawn = e.outcome.error.startswith(WITHDRAWN)
                self.check((e.outcome.error == INTERRUPTED or withdrawn) and
                           e.outcome.status == pb.RUN_STATUS_CANCELLED, "unexpected JOB_ERROR: %s" % e)
                self.interrupts.append((e.sequence, run[2]))
                if withdrawn:
                    self.withdrawn.add(e.run_id)
                else:
                    self.interrupted += 1
            if not run[1]:
                del self.open_runs[e.run_id]
        if e.job_id in self.rt_events and e.type in (ET.EVENT_TYPE_JOB_SUBMITTED, ET.EVENT_TYPE_JOB_MAX_INSTANCES,
                                                     ET.EVENT_TYPE_JOB_MISSED, ET.EVENT_TYPE_JOB_EXECUTED):
            for rt in rts:
                self.rt_events[e.job_id].setdefault(rt, []).append((e.type, e.sequence, e.run_id, secs(e.time)))

    # ---- the misfire jobs -------------------------------------------------------

    def add_misfire_jobs(self):
        start = time.time() + 0.5
        self.mjobs = {}
        for coalesce in (True, False):
            for small in (True, False):
                jid = "m-c%d-g%s" % (coalesce, "S" if small else "U")
                grace = (pb.MisfireGraceTime(duration=dur(SMALL_GRACE)) if small
                         else pb.MisfireGraceTime(unlimited=True))
                job = pb.Job(id=jid, name=jid, trigger=pb.Trigger(interval=pb.IntervalTrigger(
                    microseconds=INTERVAL_US, start_date=ts(start), timezone="UTC")),
                    target=pb.Target(command=pb.CommandTarget(argv=["/bin/true"])),
                    coalesce=coalesce, misfire_grace_time=grace)
                r = self.d.sched.AddJob(pb.AddJobRequest(job=job, request_id=uuid.uuid4().hex), timeout=T)
                self.mjobs[jid] = (coalesce, small, us(r.trigger.interval.start_date))
                self.rt_events[jid] = {}
        self.mstats = {j: self.d.sched.GetJob(pb.GetJobRequest(job_id=j), timeout=T).stats for j in self.mjobs}

    # ---- one client thread ----------------------------------------------------------

    def client(self, k, rnd, rng, killed, ops, errors):
        gen = Gen(rng)
        sched = self.d.sched
        pool = ["a-%d-%02d" % (k, i) for i in range(POOL)]
        nb = 0
        deadline = time.time() + 10
        for _ in range(20000):
            if time.time() > deadline:
                errors.append("thread %d: no kill within 10 s" % k)
                return
            rid = uuid.uuid4().hex
            if rng.random() < 0.1:
                # A date job due in the past or soon: it fires (or misses) and goes.
                jid = "b-%d-%d-%d" % (rnd, k, nb)
                nb += 1
                g = rng.choice([SMALL_GRACE * 2, None, 30.0, "unlimited"])
                job = pb.Job(id=jid, name=jid, executor="default", jobstore="default",
                             trigger=pb.Trigger(date=pb.DateTrigger(run_date=ts(time.time() + rng.uniform(-3, 1)),
                                                                    timezone="UTC")),
                             target=pb.Target(command=pb.CommandTarget(argv=["/bin/true"])))
                if g == "unlimited":
                    job.misfire_grace_time.unlimited = True
                elif g is not None:
                    job.misfire_grace_time.duration.CopyFrom(dur(g))
                op = Op("badd", jid, pb.AddJobRequest(job=job, request_id=rid), None, job)
                call = sched.AddJob
            else:
                jid = rng.choice(pool)
                cur = self.state.get(jid)
                x = rng.random()
                if cur is None:
                    job = gen.job(jid)
                    op = Op("add", jid, pb.AddJobRequest(job=job, request_id=rid), None, job)
                    call = sched.AddJob
                elif x < 0.55:
                    paths = rng.sample(FIELDS, rng.randint(1, 5))
                    job = pb.Job(id=jid)
                    for f in paths:
                        gen.set_field(job, f)
                    req = pb.ModifyJobRequest(job=job, update_mask=field_mask_pb2.FieldMask(paths=paths),
                                              request_id=rid)
                    op = Op("modify", jid, req, cur, apply_mask(cur, job, paths))
                    call = sched.ModifyJob
                elif x < 0.8:
                    op = Op("remove", jid, pb.RemoveJobRequest(job_id=jid, request_id=rid), cur, None)
                    call = sched.RemoveJob
                else:
                    job = gen.job(jid)
                    op = Op("replace", jid, pb.AddJobRequest(job=job, replace_existing=True, request_id=rid),
                            cur, job)
                    call = sched.AddJob
            ops.append(op)
            try:
                resp = call(op.req, timeout=5)
            except grpc.RpcError as e:
                op.error = "%s: %s" % (e.code(), e.details())
                if e.code() in CUT_CODES and killed.wait(3):
                    op.status = "unknown"
                else:
                    errors.append("thread %d: %s %s failed before the kill: %s" % (k, op.kind, jid, op.error))
                return
            op.status = "ok"
            op.resp = resp
            if op.kind != "remove" and proj(resp) != proj(op.expect):
                errors.append("thread %d: %s %s answered\n%s\nexpected\n%s" % (k, op.kind, jid, resp, op.expect))
                return
            if op.kind != "badd":
                self.state[jid] = resp if op.kind != "remove" else None
            if killed.is_set():
                return  # answered before the kill landed; stop issuing

    # ---- one round ----------------------------------------------------------------------

    def round(self, rnd):
        seed = self.rng.getrandbits(32)
        killed = threading.Event()
        ops = [[] for _ in range(THREADS)]
        errors = []
        threads = [threading.Thread(target=self.client, args=(k, rnd, random.Random(seed + k), killed, ops[k],
                                                              errors), daemon=True) for k in range(THREADS)]
        delay = self.rng.uniform(0.2, 0.9)
        down = self.rng.uniform(0.3, 0.6)
        for th in threads:
            th.start()
        time.sleep(delay)
        alive = self.d.proc.poll() is None
        t_kill = self.d.kill()
        killed.set()
        self.check(alive, "round %d: apsd died under load before the kill:\n%s" % (rnd, self.d.log_text()[-3000:]))
        for th in threads:
            th.join(timeout=15)
            self.check(not th.is_alive(), "a client thread did not stop")
        self.check(not errors, "round %d: %s" % (rnd, "\n".join(errors)))
        time.sleep(down)
        self.d.start()
        t_restart = self.d.start_time
        t1 = time.time()
        self.verify_jobs(rnd, ops)
        t2 = time.time()
        self.wait_settled(rnd, ops, t_restart)
        t3 = time.time()
        self.verify_restart(rnd)
        self.verify_events(rnd, ops)
        self.verify_misfire(rnd, t_kill, t_restart)
        if DEBUG:
            print("round %d: load %.2fs %d ops, down %.2fs, start %.2fs, jobs %.2fs, settle %.2fs, events %.2fs"
                  % (rnd, delay, sum(len(o) for o in ops), down, t1 - t_restart, t2 - t1, t3 - t2,
                     time.time() - t3), flush=True)

    def verify_jobs(self, rnd, ops):
        """ListJobs against the model; in-flight calls all-or-nothing, then
        retried with their request_id."""
        actual = {j.id: j for j in list_jobs(self.d.sched)}
        unknown = {}
        for tops in ops:
            for op in tops:
                if op.status == "ok":
                    self.acked += 1
                    if op.kind == "badd":
                        self.badd[op.job_id] = op
                elif op.status == "unknown":
                    unknown[op.job_id] = op
        for jid, want in self.state.items():
            if jid in unknown:
                continue
            got = actual.get(jid)
            if want is None:
                self.check(got is None, "round %d: acknowledged removal of %s, but it is there:\n%s"
                           % (rnd, jid, got))
            else:
                self.check(got is not None, "round %d: acknowledged job %s is missing" % (rnd, jid))
                self.check(basic(got) == basic(want), "round %d: job %s differs from its acknowledged state:\n"
                           "stored\n%s\nacknowledged\n%s" % (rnd, jid, got, want))
        for jid, op in unknown.items():
            self.inflight += 1
            got = actual.get(jid)
            if op.kind == "badd":
                self.badd[jid] = op  # checked with the events (all-or-nothing)
                continue
            before_ok = (got is None) if op.before is None else (got is not None and basic(got) == basic(op.before))
            after_ok = (got is None) if op.expect is None else (got is not None and proj(got) == proj(op.expect))
            self.check(before_ok or after_ok, "round %d: in-flight %s of %s half-applied:\nstored\n%s\nbefore\n%s\n"
                       "requested\n%s" % (rnd, op.kind, jid, got, op.before, op.expect))
            applied = after_ok and not before_ok
            if before_ok and after_ok:
                applied = None  # e.g. a modify to the same values: no way to tell
            op.status = "applied" if applied else "not-applied"
            if applied:
                self.inflight_applied += 1
            # The client's retry after a lost reply: applied exactly once.
            call = {"add": self.d.sched.AddJob, "replace": self.d.sched.AddJob,
                    "modify": self.d.sched.ModifyJob, "remove": self.d.sched.RemoveJob}[op.kind]
            try:
                resp = call(op.req, timeout=T)
            except grpc.RpcError as e:
                self.fail("round %d: retry of in-flight %s %s (applied=%s): %s %s"
                          % (rnd, op.kind, jid, applied, e.code(), e.details()))
            if op.kind == "remove":
                self.state[jid] = None
            else:
                self.check(proj(resp) == proj(op.expect), "round %d: retry of %s %s answered\n%s"
                           % (rnd, op.kind, jid, resp))
                if applied:
                    self.check(basic(resp) == basic(got), "round %d: retry of applied %s %s changed it:\n%s\n"
                               "was\n%s" % (rnd, op.kind, jid, resp, got))
                self.state[jid] = resp
        # After the retries the model is exact again.
        actual = {j.id: j for j in list_jobs(self.d.sched)}
        for jid, want in self.state.items():
            got = actual.get(jid)
            self.check((got is None) if want is None else (got is not None and basic(got) == basic(want)),
                       "round %d: after the retries %s is\n%s\nexpected\n%s" % (rnd, jid, got, want))

    def wait_settled(self, rnd, ops, t_restart):
        """Pulls events until the round's date jobs are done, every misfire
        job fired after the restart, and the runs have ended."""
        def settled():
            # List first: a date job that fires in between is gone from the
            # list and its events are in the pull that follows.
            jobs = {j.id for j in list_jobs(self.d.sched)}
            self.pull()
            fired = {e.job_id for e in self.events[self.round_first_seq - 1:]
                     if e.type in (ET.EVENT_TYPE_JOB_SUBMITTED, ET.EVENT_TYPE_JOB_MAX_INSTANCES)
                     and secs(e.time) > t_restart}
            if not all(j in fired for j in self.mjobs):
                return False
            if any(j in jobs for j in self.badd):
                return False
            # The date jobs' runs end (the misfire jobs' may be running).
            return not any(r[0].startswith("b-") for r in self.open_runs.values())
        ok = wait_for(settled, 10 if not SANITIZED else 20, interval=0.05)
        if not ok:
            open_b = [(k, v) for k, v in self.open_runs.items() if v[0].startswith("b-")]
            self.fail("round %d: not settled after the restart; open date runs %s" % (rnd, open_b[:5]))

    def verify_restart(self, rnd):
        """One start per round, no shutdown (SIGKILL leaves none); the runs
        cut by the kill end, as "interrupted by restart", before the start
        event, i.e. by the restart's recovery."""
        evs = self.events[self.round_first_seq - 1:]
        started = [e.sequence for e in evs if e.type == ET.EVENT_TYPE_SCHEDULER_STARTED]
        self.check(len(started) == 1, "round %d: %d SCHEDULER_STARTED events" % (rnd, len(started)))
        self.check(not any(e.type == ET.EVENT_TYPE_SCHEDULER_SHUTDOWN for e in evs),
                   "round %d: a SCHEDULER_SHUTDOWN after SIGKILL" % rnd)
        s = started[0]
        for seq, sub in self.interrupts:
            if seq >= self.round_first_seq:
                self.check(sub < seq < s, "round %d: interrupted run (submitted at %d) ended at %d, the restart "
                           "is at %d" % (rnd, sub, seq, s))
        stale = [(k, v) for k, v in self.open_runs.items() if v[2] < s]
        self.check(not stale, "round %d: runs of the killed daemon never ended: %s" % (rnd, stale[:5]))
        # The date jobs are gone: the counts hold still.
        n = len(list_jobs(self.d.sched))
        info = self.d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        default = [x for x in info.jobstores if x.name == "default"][0]
        self.check(default.job_count == n, "round %d: GetScheduler counts %d jobs, ListJobs %d"
                   % (rnd, default.job_count, n))

    def verify_events(self, rnd, ops):
        """Each mutable job's state events match its applied changes; date
        jobs ran (or missed) once and went; in-flight adds all-or-nothing."""
        lo = self.round_first_seq
        evs = [e for e in self.events if e.sequence >= lo]
        by_job = {}
        for e in evs:
            if e.job_id:
                by_job.setdefault(e.job_id, []).append(e)
        touched = set()
        for tops in ops:
            expected = {}
            for op in tops:
                if op.kind == "badd" or op.status is None:
                    continue
                # ok and in-flight ones: each applied exactly once (the
                # in-flight one by the kill or by its retry).
                expected.setdefault(op.job_id, []).append(EVENT_OF[op.kind])
            touched.update(expected)
            for jid, types in expected.items():
                got = [e.type for e in by_job.get(jid, []) if e.type in STATE_TYPES]
                self.check(got == types, "round %d: job %s has events %s, its changes %s"
                           % (rnd, jid, [ET.Name(t) for t in got], [ET.Name(t) for t in types]))
                self.check(all(e.type in STATE_TYPES for e in by_job.get(jid, [])),
                           "round %d: never-due job %s has run events" % (rnd, jid))
        stray = [j for j in by_job if j.startswith("a-") and j not in touched]
        self.check(not stray, "round %d: events of jobs nobody changed: %s" % (rnd, stray[:5]))
        for jid, op in list(self.badd.items()):
            # (A run withdrawn by the restart never started: its events
            # do not count; its time came again as another run.)
            got = [e for e in by_job.get(jid, []) if e.run_id not in self.withdrawn]
            types = sorted(ET.Name(e.type) for e in got)
            if op.status == "unknown" and not got:
                self.check(jid not in {j.id for j in list_jobs(self.d.sched)}, "in-flight add %s: no event but"
                           " a job" % jid)
                del self.badd[jid]
                continue
            if op.status == "unknown":
                self.inflight_applied += 1
            end = [e for e in got if e.type in RUN_END]
            self.check(len(got) == 4 and types.count("EVENT_TYPE_JOB_ADDED") == 1 and
                       types.count("EVENT_TYPE_JOB_SUBMITTED") == 1 and types.count("EVENT_TYPE_JOB_REMOVED") == 1
                       and len(end) == 1 and got[0].type == ET.EVENT_TYPE_JOB_ADDED,
                       "round %d: date job %s has events %s" % (rnd, jid, types))
            e = end[0]
            rt = secs(op.req.job.trigger.date.run_date)
            g = op.req.job.misfire_grace_time
            grace = None if g.unlimited else (g.duration.ToNanoseconds() / 1e9 if g.HasField("duration") else 1.0)
            if e.type == ET.EVENT_TYPE_JOB_MISSED:
                self.check(grace is not None and secs(e.time) - rt > grace,
                           "round %d: %s missed with grace %s, %.3fs late" % (rnd, jid, grace, secs(e.time) - rt))
            elif e.type == ET.EVENT_TYPE_JOB_EXECUTED:
                late = secs(e.outcome.start_time) - rt
                # The misfire check comes just before the spawn that sets
                # start_time: a margin for a loaded machine.
                self.check(grace is None or late <= grace + 1.0,
                           "round %d: %s ran %.3fs late with grace %s" % (rnd, jid, late, grace))
            self.dates_checked += 1
            op.resp = e
            del self.badd[jid]

    def verify_misfire(self, rnd, t_kill, t_restart):
        """Fire times due while the daemon was down: run at most once; none
        lost without coalesce; one run with it; stale ones missed with a
        small grace; none missed with an unlimited one. A run withdrawn by
        the restart never started: its submission does not count."""
        def submitted(x):
            return x[0] in (ET.EVENT_TYPE_JOB_SUBMITTED, ET.EVENT_TYPE_JOB_MAX_INSTANCES) and \
                x[2] not in self.withdrawn
        kill_us, restart_us = int(t_kill * 1e6), int(t_restart * 1e6)
        grace_us = int(SMALL_GRACE * 1e6)
        for jid, (coalesce, small, start) in self.mjobs.items():
            rts = self.rt_events[jid]
            last = max((rt for rt, v in rts.items() if any(submitted(x) for x in v)), default=None)
            self.check(last is not None, "%s never fired" % jid)
            fires = list(range(start, last + 1, INTERVAL_US))
            for f in fires:
                v = rts.get(f, [])
                subs = [x for x in v if submitted(x)]
                self.check(len(subs) <= 1, "%s: fire time %d submitted %d times" % (jid, f, len(subs)))
                if not coalesce:
                    self.check(len(subs) == 1, "%s (coalesce off): fire time %d was lost" % (jid, f))
                for x in v:
                    if x[0] != ET.EVENT_TYPE_JOB_MISSED:
                        continue
                    self.check(small, "%s (grace unlimited): fire time %d missed" % (jid, f))
                    self.check(x[3] * 1e6 - f > grace_us, "%s: fire time %d missed only %.3fs late"
                               % (jid, f, x[3] - f / 1e6))
            # The downtime's fire times: the daemon surely dead (a margin
            # after the kill) and not started yet.
            down = [f for f in fires if kill_us + 50000 < f < restart_us]
            subs_down = [f for f in down if any(submitted(x) for x in rts.get(f, []))]
            if coalesce:
                self.check(len(subs_down) <= 1 and (not subs_down or subs_down[0] == down[-1]),
                           "round %d: %s (coalesce on) ran %d of the downtime's %d fire times"
                           % (rnd, jid, len(subs_down), len(down)))
                self.coalesced_checked += len(down) - len(subs_down)
            if small:
                for f in subs_down:
                    if f < restart_us - grace_us:
                        ends = [x for x in rts.get(f, []) if x[0] in (ET.EVENT_TYPE_JOB_MISSED,
                                                                       ET.EVENT_TYPE_JOB_EXECUTED)]
                        self.check(all(x[0] == ET.EVENT_TYPE_JOB_MISSED for x in ends),
                                   "round %d: %s ran fire time %d, %.3fs stale, grace %.2f"
                                   % (rnd, jid, f, t_restart - f / 1e6, SMALL_GRACE))
                        self.missed_checked += len(ends)
            self.fires_checked += len(down)

    def run(self):
        os.makedirs(self.d.store, exist_ok=True)
        self.d.start()
        self.add_misfire_jobs()
        t0 = time.time()
        for rnd in range(self.rounds):
            self.pull()
            self.round_first_seq = self.last_seq + 1
            self.round(rnd)
        # Every run submitted more than 2 s ago has ended.
        def stale():
            self.pull()
            return [(k, v) for k, v in self.open_runs.items() if v[3] < time.time() - 2]
        wait_for(lambda: not stale(), 10)
        left = stale()
        self.check(not left, "runs that never ended: %s" % left[:5])
        # The whole log, once more, from the start: 1..last, no gap.
        evs, gap = read_events(self.d.sched, 0)
        self.check(gap is None and [e.sequence for e in evs][:self.last_seq] == list(range(1, self.last_seq + 1)),
                   "the full event log is not 1..%d" % self.last_seq)
        stats = {j: self.d.sched.GetJob(pb.GetJobRequest(job_id=j), timeout=T).stats for j in self.mjobs}
        for j, st in stats.items():
            c, small, _ = self.mjobs[j]
            if c and self.coalesced_checked > 0:
                self.check(st.coalesced > self.mstats[j].coalesced, "%s: stats.coalesced did not grow" % j)
            if not small:
                self.check(st.misses == 0, "%s: stats.misses %d with unlimited grace" % (j, st.misses))
        rc = self.d.stop()
        self.check(rc == 0, "apsd exited with %r on SIGTERM" % rc)
        took = time.time() - t0
        FIGURES.append(
            "crash: %d rounds survived, %d acknowledged changes verified, %d in-flight changes all-or-nothing "
            "(%d applied) and retried once, %d events in sequence without gap, %d fire times due while down "
            "checked (%d coalesced away, %d missed by grace), %d date jobs run or missed by their grace, "
            "%d runs interrupted by restart, %d never started and run again from the schedule; %.1f s, seed %s"
            % (self.rounds, self.acked, self.inflight, self.inflight_applied, self.last_seq, self.fires_checked,
               self.coalesced_checked, self.missed_checked, self.dates_checked, self.interrupted,
               len(self.withdrawn), took, self.seed))


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="apsd-crash-", dir=os.environ.get("TEST_TMPDIR"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_kill9_under_load(self):
        seed = SEED if SEED is not None else random.randrange(1 << 30)
        t = CrashUnderLoad(self, self.tmp, ROUNDS, seed)
        try:
            t.run()
        finally:
            t.d.kill()

    def test_kill9_while_commands_run(self):
        """Runs cut by SIGKILL end as JOB_ERROR "interrupted by restart" and
        their jobs keep firing. The orphaned children (each command runs in
        its own process group, which outlives the killed daemon) are stopped
        by the restarted daemon, which finds their pids noted under
        <data dir>/running: a run reported interrupted is not still running."""
        marks = os.path.join(self.tmp, "pids")
        os.makedirs(marks)
        d = Daemon(self.tmp)
        pids = {}
        try:
            d.start()
            ids = ["sleepy-%d" % i for i in range(3)]
            start = time.time() + 0.3
            for jid in ids:
                d.sched.AddJob(pb.AddJobRequest(job=pb.Job(
                    id=jid, trigger=pb.Trigger(interval=pb.IntervalTrigger(seconds=1, start_date=ts(start))),
                    misfire_grace_time=pb.MisfireGraceTime(unlimited=True),
                    target=pb.Target(command=pb.CommandTarget(argv=[
                        "/bin/sh", "-c", 'echo $$ >> "$1"; exec /bin/sleep 30', "sh",
                        os.path.join(marks, jid)])))), timeout=T)
            # A one-shot job: removed when its run is submitted, so recovery
            # takes the run's times from the run index (regression: its
            # JOB_ERROR used to carry no scheduled run time).
            once = d.sched.AddJob(pb.AddJobRequest(job=pb.Job(
                id="sleepy-once", trigger=pb.Trigger(date=pb.DateTrigger(run_date=ts(start))),
                misfire_grace_time=pb.MisfireGraceTime(unlimited=True),
                target=pb.Target(command=pb.CommandTarget(argv=[
                    "/bin/sh", "-c", 'echo $$ >> "$1"; exec /bin/sleep 30', "sh",
                    os.path.join(marks, "sleepy-once")])))), timeout=T)
            ids_all = ids + ["sleepy-once"]

            def pid_files():
                for jid in ids_all:
                    try:
                        with open(os.path.join(marks, jid)) as f:
                            pids[jid] = [int(x) for x in f.read().split()]
                    except (OSError, ValueError):
                        return False
                return all(pids.get(j) for j in ids_all)
            self.assertTrue(wait_for(pid_files, 15), "the commands did not start: %s %s\n%s" % (
                pids, os.listdir(marks), d.log_text()))
            evs, _ = read_events(d.sched, 0)
            runs = {e.job_id: e.run_id for e in evs if e.type == ET.EVENT_TYPE_JOB_SUBMITTED}
            self.assertEqual(sorted(runs), ids_all)
            orphans = [pids[j][0] for j in ids_all]
            for p in orphans:
                self.assertEqual(os.getpgid(p), p, "a command is not in its own process group")
            last = evs[-1].sequence
            dpid = d.proc.pid
            d.kill()
            time.sleep(0.3)
            alive = [p for p in orphans if os.path.exists("/proc/%d" % p)]
            ppids = []
            for p in alive:
                with open("/proc/%d/stat" % p) as f:
                    ppids.append(int(f.read().rsplit(")", 1)[1].split()[1]))
            self.assertNotIn(dpid, ppids)
            d.start()
            # Each cut run: one JOB_ERROR "interrupted by restart", same run id.
            got = {}

            def interrupted():
                evs2, gap = read_events(d.sched, last)
                self.assertIsNone(gap)
                self.assertEqual([e.sequence for e in evs2], list(range(last + 1, last + 1 + len(evs2))))
                got.clear()
                for e in evs2:
                    got.setdefault(e.job_id, []).append(e)
                return all(any(e.type == ET.EVENT_TYPE_JOB_ERROR for e in got.get(j, [])) and
                           any(e.type == ET.EVENT_TYPE_JOB_SUBMITTED for e in got.get(j, [])) for j in ids) and \
                    any(e.type == ET.EVENT_TYPE_JOB_ERROR for e in got.get("sleepy-once", []))
            self.assertTrue(wait_for(interrupted, 15, interval=0.1), "no interrupted runs / no new runs:\n%s"
                            % d.log_text())
            for jid in ids:
                # (A next run committed ahead at the kill is withdrawn: not
                # one of the cut runs.)
                errs = [e for e in got[jid] if e.type == ET.EVENT_TYPE_JOB_ERROR and
                        not e.outcome.error.startswith(WITHDRAWN)]
                self.assertEqual(len(errs), 1, errs)
                self.assertEqual(errs[0].run_id, runs[jid])
                self.assertEqual(errs[0].outcome.error, INTERRUPTED)
                self.assertEqual(errs[0].outcome.status, pb.RUN_STATUS_CANCELLED)
                subs = [e for e in got[jid] if e.type == ET.EVENT_TYPE_JOB_SUBMITTED]
                self.assertNotEqual(subs[0].run_id, runs[jid])  # it keeps firing, with a new run
                j = d.sched.GetJob(pb.GetJobRequest(job_id=jid), timeout=T)
                self.assertEqual(j.stats.failures, 1)
                self.assertEqual(j.stats.last_run_id, runs[jid])
                self.assertEqual(j.stats.last_outcome.error, INTERRUPTED)
                self.assertTrue(j.HasField("next_run_time"))
                # The new run counts as running once its time has come (a
                # run committed ahead shows as the next run time until then).
                self.assertTrue(wait_for(lambda: d.sched.GetJob(pb.GetJobRequest(job_id=jid), timeout=T)
                                         .running_instances == 1, 10), jid)
            errs = got["sleepy-once"]
            self.assertEqual([e.type for e in errs], [ET.EVENT_TYPE_JOB_ERROR])  # and it does not fire again
            self.assertEqual(errs[0].run_id, runs["sleepy-once"])
            self.assertEqual(errs[0].outcome.error, INTERRUPTED)
            self.assertEqual([us(t) for t in errs[0].scheduled_run_times], [us(once.trigger.date.run_date)])
            self.assertEqual(errs[0].executor, "default")
            with self.assertRaises(grpc.RpcError) as cm:
                d.sched.GetJob(pb.GetJobRequest(job_id="sleepy-once"), timeout=T)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            # The new runs started (a second pid each).
            self.assertTrue(wait_for(lambda: pid_files() and all(len(pids[j]) >= 2 for j in ids), 10))
            new = [pids[j][1] for j in ids]
            still = [p for p in orphans if os.path.exists("/proc/%d" % p) and not _zombie(p)]
            self.assertEqual(still, [], "the restarted daemon left the orphaned commands running")
            self.assertIn("stopped commands a crashed daemon left running", d.log_text())
            self.assertIn("commands=%d" % len(alive), d.log_text())
            # SIGTERM cancels the daemon's own running commands (their
            # process groups); the orphans are not its children any more.
            self.assertEqual(d.stop(), 0, d.log_text())
            gone = wait_for(lambda: not any(os.path.exists("/proc/%d" % p) and not _zombie(p) for p in new), 10)
            self.assertTrue(gone, "the running commands outlived a SIGTERM shutdown")
            FIGURES.append(
                "crash-commands: %d runs cut by SIGKILL reported as \"%s\", %d jobs kept firing; orphaned "
                "commands (each in its own process group): %d of %d alive after the kill, reparented away from "
                "the dead daemon; %d of %d still running after the restart (the new daemon stops them: their "
                "pids were noted)"
                % (len(ids_all), INTERRUPTED, len(ids), len(alive), len(orphans), len(still), len(orphans)))
        finally:
            d.kill()
            for plist in pids.values():
                for p in plist:
                    _kill_sleeper(p)


def _kill_sleeper(pid):
    """Kills the process group of one of the test's commands, if that pid
    still is one (a `sleep` leading its own group)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"sleep" not in f.read() or os.getpgid(pid) != pid:
                return
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def main():
    global ROUNDS, SEED
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("APSD_CRASH_ROUNDS", ROUNDS)))
    ap.add_argument("--seed", type=int, default=os.environ.get("APSD_CRASH_SEED"))
    args, rest = ap.parse_known_args()
    ROUNDS = args.rounds
    SEED = int(args.seed) if args.seed is not None else None
    run_tests(FIGURES, [sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
