"""apsd.Client against the real daemon: every method, triggers and time
zones, Job objects, error mapping."""
import datetime as dt
import os
import unittest

from apsd_testutil import Daemon, free_port

import apsd  # noqa: E402
from apsd import (Client, Command, ConflictingIdError, CronTrigger, IntervalTrigger, DateTrigger,  # noqa: E402
                  CalendarIntervalTrigger, AndTrigger, OrTrigger, InvalidArgumentError,
                  JobLookupError, FailedPreconditionError, UnavailableError, ApsdError)

UTC = dt.timezone.utc
D = None


def setUpModule():
    global D
    D = Daemon().start()


def tearDownModule():
    rc = D.stop()
    log = D.log_text()
    D.cleanup()
    if rc != 0:
        raise AssertionError("apsd exited with %r:\n%s" % (rc, log))


def far():
    return dt.datetime.now(UTC) + dt.timedelta(days=365)


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Client(D.target).wait_ready()

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def tearDown(self):
        self.c.remove_all_jobs()

    # ---- add_job with APScheduler's keywords -------------------------------------------

    def test_add_job_cron(self):
        job = self.c.add_job("sample_tasks:record", "cron", args=["定时任务"], id="cron-1",
                             second="*/5")
        self.assertIsInstance(job, apsd.Job)
        self.assertEqual(job.id, "cron-1")
        self.assertEqual(job.name, "sample_tasks:record")  # the daemon names it after the task
        self.assertEqual(str(job.trigger), "cron[second='*/5']")
        self.assertIsInstance(job.trigger, CronTrigger)
        self.assertEqual(job.trigger.timezone, "UTC")  # the daemon's default, filled in
        self.assertEqual(job.func, "sample_tasks:record")
        self.assertEqual(job.func_ref, "sample_tasks:record")
        self.assertEqual(job.args, ("定时任务",))
        self.assertEqual(job.kwargs, {})
        self.assertEqual(job.queue, "default")
        self.assertEqual(job.executor, "workers")
        self.assertEqual(job.jobstore, "default")
        # unset options read as the daemon's job_defaults, as APScheduler's Job
        self.assertEqual((job.misfire_grace_time, job.coalesce, job.max_instances), (1, True, 1))
        nrt = job.next_run_time
        self.assertIsNotNone(nrt.tzinfo)
        self.assertEqual(nrt.second % 5, 0)
        self.assertLessEqual(nrt - dt.datetime.now(UTC), dt.timedelta(seconds=5))
        self.assertFalse(job.paused)
        self.assertFalse(job.pending)
        self.assertRegex(str(job), r"^sample_tasks:record \(trigger: cron\[second='\*/5'\], "
                                   r"next run at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$")
        self.assertEqual(repr(job), "<Job (id=cron-1 name=sample_tasks:record)>")

    def test_add_job_interval_and_date(self):
        before = dt.datetime.now(UTC)
        job = self.c.add_job("sample_tasks:add", trigger="interval", seconds=3, args=(1, 2))
        self.assertRegex(job.id, "^[0-9a-f]{44}$")  # generated: milliseconds, 128 random bits
        self.assertEqual(str(job.trigger), "interval[0:00:03]")
        self.assertEqual(job.trigger.start_date, job.next_run_time)  # stored: now + 3 s
        delta = (job.next_run_time - before).total_seconds()
        self.assertTrue(2.5 <= delta <= 4.5, delta)
        self.assertEqual(job.args, (1, 2))
        tokyo = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=apsd._time.zone("Asia/Tokyo"))
        job = self.c.add_job("sample_tasks:add", "date", run_date=tokyo, timezone="Asia/Tokyo",
                             id="date-1")
        self.assertEqual(job.next_run_time, tokyo)
        self.assertEqual(job.next_run_time.utcoffset(), dt.timedelta(hours=9))  # the trigger's zone
        self.assertEqual(str(job.trigger), "date[2030-05-06 07:08:09 JST]")
        # APScheduler's date strings, and fractional intervals
        job = self.c.add_job("sample_tasks:add", "date", run_date="2031-01-02 03:04:05")
        self.assertEqual(job.next_run_time, dt.datetime(2031, 1, 2, 3, 4, 5).astimezone())
        job = self.c.add_job("sample_tasks:add", "interval", seconds=0.5)
        self.assertEqual(job.trigger.interval, dt.timedelta(seconds=0.5))

    def test_next_run_time_and_timezones(self):
        # The seed's one-shot job: no trigger, next_run_time = now + 12 s (naive: local time).
        naive = dt.datetime.now() + dt.timedelta(seconds=12)
        job = self.c.add_job("sample_tasks:record", args=("一次性任务",), next_run_time=naive)
        self.assertEqual(job.trigger.__class__, DateTrigger)
        self.assertEqual(job.next_run_time, naive.astimezone())
        # A Client with a zone: naive datetimes and zone-less triggers use it.
        berlin = Client(D.target, timezone="Europe/Berlin")
        try:
            job = berlin.add_job("sample_tasks:add", "cron", hour=9, minute=30)
            self.assertEqual(job.trigger.timezone, "Europe/Berlin")
            self.assertEqual((job.next_run_time.hour, job.next_run_time.minute), (9, 30))
            self.assertEqual(job.next_run_time.tzinfo.key, "Europe/Berlin")
            job = berlin.add_job("sample_tasks:add", next_run_time=dt.datetime(2030, 7, 1, 12, 0))
            self.assertEqual(job.next_run_time.astimezone(UTC), dt.datetime(2030, 7, 1, 10, 0, tzinfo=UTC))
        finally:
            berlin.close()
        # tzinfo objects name their zone: pytz, zoneinfo, datetime.timezone.utc
        import pytz
        job = self.c.add_job("sample_tasks:add", "cron", hour=1, timezone=pytz.timezone("America/New_York"))
        self.assertEqual(job.trigger.timezone, "America/New_York")
        job = self.c.add_job("sample_tasks:add", "cron", hour=1, timezone=UTC)
        self.assertEqual(job.trigger.timezone, "UTC")

    def test_options(self):
        job = self.c.add_job("sample_tasks:add", "interval", hours=1, id="opt-1", coalesce=False,
                             max_instances=3, misfire_grace_time=30, labels={"team": "a"},
                             overlap_policy="queue_all", name="nightly", queue="q-opt",
                             kwargs={"a": 1, "b": [True, None, {"x": 1.5}]})
        self.assertEqual((job.coalesce, job.max_instances, job.misfire_grace_time), (False, 3, 30))
        self.assertEqual(job.labels, {"team": "a"})
        self.assertEqual(job.overlap_policy, "queue_all")
        self.assertEqual(job.name, "nightly")
        self.assertEqual(job.queue, "q-opt")
        self.assertEqual(job.kwargs, {"a": 1, "b": [True, None, {"x": 1.5}]})
        job = self.c.add_job("sample_tasks:add", "interval", hours=1, id="opt-2",
                             misfire_grace_time=None, next_run_time=None)
        self.assertIsNone(job.misfire_grace_time)  # None = no limit, as APScheduler
        self.assertTrue(job.paused)
        self.assertIsNone(job.next_run_time)
        self.assertIn("paused", str(job))
        with self.assertRaises(ConflictingIdError) as cm:
            self.c.add_job("sample_tasks:add", "interval", hours=2, id="opt-1")
        self.assertIsInstance(cm.exception, KeyError)  # as APScheduler's
        self.assertEqual(cm.exception.field, "job.id")
        job = self.c.add_job("sample_tasks:add", "interval", hours=2, id="opt-1",
                             replace_existing=True)
        self.assertEqual(str(job.trigger), "interval[2:00:00]")
        # request_id: a retried add returns the first result
        a = self.c.add_job("sample_tasks:add", "interval", hours=1, request_id="py-rid-1")
        b = self.c.add_job("sample_tasks:add", "interval", hours=1, request_id="py-rid-1")
        self.assertEqual(a.id, b.id)

    def test_callables_and_commands(self):
        from sample_tasks import add, Greeter
        job = self.c.add_job(add, "interval", minutes=1, args=[1, 2])
        self.assertEqual(job.func_ref, "sample_tasks:add")
        self.assertIs(job.func, add)
        self.assertEqual(job.name, "add")  # APScheduler's name: the callable's qualname
        job = self.c.add_job(Greeter.hello, "interval", minutes=1)
        self.assertEqual(job.func_ref, "sample_tasks:Greeter.hello")
        with self.assertRaises(ValueError):
            self.c.add_job(lambda: 1, "interval", minutes=1)  # nothing can import a lambda
        job = self.c.add_job(Command(["/bin/echo", "hi"], timeout=5), "cron", hour=3)
        self.assertEqual(job.func, Command(["/bin/echo", "hi"], timeout=5))
        self.assertEqual(job.executor, "default")
        self.assertEqual(job.name, "/bin/echo")
        job = self.c.add_job(command=["/bin/true"], trigger="cron", hour=4)
        self.assertEqual(job.func.argv, ["/bin/true"])
        with self.assertRaises(TypeError):
            self.c.add_job("sample_tasks:add", "interval", minutes=1, args=[object()])
        with self.assertRaises(TypeError):
            self.c.add_job("sample_tasks:add", "interval", minutes=1, kwargs={"d": dt.datetime.now()})

    def test_trigger_objects(self):
        cases = [
            (CronTrigger(day_of_week="mon-fri", hour=9, timezone="Europe/Paris"),
             "cron[day_of_week='mon-fri', hour='9']"),
            (CronTrigger.from_crontab("*/5 9-17 * * 1-5"), "cron[crontab='*/5 9-17 * * 1-5']"),
            (IntervalTrigger(weeks=1, days=2), "interval[9 days, 0:00:00]"),
            (CalendarIntervalTrigger(months=1, hour=9), "calendar_interval[months=1, time=09:00:00]"),
            (AndTrigger([CronTrigger(hour=9), CronTrigger(day_of_week="fri", hour="*")]),
             "and[cron[hour='9'], cron[day_of_week='fri', hour='*']]"),
            (OrTrigger([CronTrigger(hour=9), IntervalTrigger(hours=5)], jitter=2),
             "or[cron[hour='9'], interval[5:00:00]]"),
        ]
        for trig, text in cases:
            job = self.c.add_job("sample_tasks:add", trig)
            self.assertEqual(str(job.trigger), text)
            self.assertIsNotNone(job.next_run_time, text)
        self.assertEqual(job.trigger.jitter, 2)
        # APScheduler's own trigger objects convert
        from apscheduler.triggers.cron import CronTrigger as ApsCron
        from apscheduler.triggers.interval import IntervalTrigger as ApsInterval
        job = self.c.add_job("sample_tasks:add", ApsCron(second="*/5", timezone="UTC"))
        self.assertEqual(str(job.trigger), "cron[second='*/5']")
        job = self.c.add_job("sample_tasks:add", ApsInterval(seconds=3, timezone="UTC"))
        self.assertEqual(str(job.trigger), "interval[0:00:03]")
        with self.assertRaises(LookupError):
            self.c.add_job("sample_tasks:add", "weekly", hour=1)
        with self.assertRaises(TypeError):
            self.c.add_job("sample_tasks:add", "cron", hours=1)  # the cron field is `hour`

    # ---- reading ----------------------------------------------------------------------

    def test_get_job_and_get_jobs(self):
        self.assertIsNone(self.c.get_job("missing"))  # APScheduler returns None
        # Fixed dates: the lists below are in next-run order, which for cron
        # hours would depend on the time of day the test runs at.
        self.c.add_job("sample_tasks:add", "date", run_date="2040-01-01 01:00:00", id="g-b",
                       labels={"team": "a"})
        self.c.add_job("sample_tasks:add", "cron", hour=2, id="g-a", next_run_time=None)
        self.c.add_job("sample_tasks:add", "date", run_date="2040-01-01 03:00:00", id="g-c",
                       jobstore="memory", labels={"team": "b"})
        job = self.c.get_job("g-b")
        self.assertEqual(job.id, "g-b")
        self.assertIsNotNone(job.stats)
        self.assertIsNone(self.c.get_job("g-b", jobstore="memory"))
        jobs = self.c.get_jobs()
        self.assertEqual([j.id for j in jobs][-1], "g-a")  # paused last, as APScheduler
        self.assertEqual(sorted(j.id for j in jobs), ["g-a", "g-b", "g-c"])
        self.assertEqual([j.id for j in self.c.get_jobs("memory")], ["g-c"])
        self.assertEqual([j.id for j in self.c.get_jobs(paused=True)], ["g-a"])
        self.assertEqual([j.id for j in self.c.get_jobs(labels={"team": "a"})], ["g-b"])
        self.assertEqual([j.id for j in self.c.get_jobs(labels="team")], ["g-b", "g-c"])
        self.assertIsNotNone(self.c.get_jobs(stats=True)[0].stats)

    # ---- changing -------------------------------------------------------------------------

    def test_modify_job(self):
        self.c.add_job("sample_tasks:add", "cron", hour=3, id="m-1", args=[1, 2], queue="q-m")
        job = self.c.modify_job("m-1", name="renamed", max_instances=2, coalesce=False,
                                misfire_grace_time=None)
        self.assertEqual((job.name, job.max_instances, job.coalesce), ("renamed", 2, False))
        self.assertIsNone(job.misfire_grace_time)
        job = self.c.modify_job("m-1", args=[5, 6])  # the task and queue are kept
        self.assertEqual((job.func_ref, job.args, job.queue), ("sample_tasks:add", (5, 6), "q-m"))
        job = self.c.modify_job("m-1", func="sample_tasks:record", kwargs={"k": 1}, queue="q-2")
        self.assertEqual((job.func_ref, job.args, job.kwargs, job.queue),
                         ("sample_tasks:record", (5, 6), {"k": 1}, "q-2"))
        job = self.c.modify_job("m-1", trigger=CronTrigger(hour=4))
        self.assertEqual(str(job.trigger), "cron[hour='4']")
        when = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)
        job = self.c.modify_job("m-1", next_run_time=when)
        self.assertEqual(job.next_run_time, when)
        job = self.c.modify_job("m-1", next_run_time=None)  # APScheduler: pauses
        self.assertTrue(job.paused)
        job = self.c.modify_job("m-1", labels={"x": "1"}, overlap_policy="cancel_running",
                                executor="workers")
        self.assertEqual((job.labels, job.overlap_policy), ({"x": "1"}, "cancel_running"))
        with self.assertRaises(AttributeError):
            self.c.modify_job("m-1", colour="red")
        with self.assertRaises(JobLookupError):
            self.c.modify_job("nope", name="x")
        with self.assertRaises(InvalidArgumentError) as cm:
            self.c.modify_job("m-1", trigger=CronTrigger(minute=99))
        self.assertEqual(cm.exception.field, "job.trigger.cron.minute")

    def test_reschedule_pause_resume_remove(self):
        self.c.add_job("sample_tasks:add", "cron", hour=3, id="r-1")
        before = dt.datetime.now(UTC)
        job = self.c.reschedule_job("r-1", trigger="interval", minutes=5)
        self.assertEqual(str(job.trigger), "interval[0:05:00]")
        self.assertAlmostEqual((job.next_run_time - before).total_seconds(), 300, delta=2)
        job = self.c.pause_job("r-1")
        self.assertTrue(job.paused)
        self.assertIsNone(job.next_run_time)
        job = self.c.resume_job("r-1")
        self.assertFalse(job.paused)
        self.assertIsNotNone(job.next_run_time)
        # A trigger with no further fire time: resume removes the job, returns None.
        past = dt.datetime.now(UTC) - dt.timedelta(days=1)
        self.c.add_job("sample_tasks:add", "cron", hour=3, end_date=past, id="r-2",
                       next_run_time=None)
        self.assertIsNone(self.c.resume_job("r-2"))
        self.assertIsNone(self.c.get_job("r-2"))
        self.c.remove_job("r-1")
        with self.assertRaises(JobLookupError) as cm:
            self.c.remove_job("r-1")
        self.assertIsInstance(cm.exception, KeyError)
        self.assertEqual(cm.exception.job_id, "r-1")
        for fn in (self.c.pause_job, self.c.resume_job, self.c.run_job):
            with self.assertRaises(JobLookupError):
                fn("r-1")
        with self.assertRaises(JobLookupError):
            self.c.reschedule_job("r-1", trigger="cron", hour=1)

    def test_job_object_methods(self):
        job = self.c.add_job("sample_tasks:add", "cron", hour=3, id="j-1")
        self.assertIs(job.modify(name="via job"), job)
        self.assertEqual(job.name, "via job")
        job.reschedule("cron", hour=5)
        self.assertEqual(str(job.trigger), "cron[hour='5']")
        job.pause()
        self.assertTrue(job.paused)
        job.resume()
        self.assertEqual(job.next_run_time.hour, 5)
        job.remove()
        self.assertIsNone(self.c.get_job("j-1"))

    def test_remove_all_jobs_run_job_backfill(self):
        for i in range(3):
            self.c.add_job("sample_tasks:add", "cron", hour=3, jobstore="memory")
        self.c.add_job("sample_tasks:add", "cron", hour=3, id="keep")
        self.assertEqual(self.c.remove_all_jobs("memory"), 3)
        self.assertEqual([j.id for j in self.c.get_jobs()], ["keep"])
        self.c.add_job(Command(["/bin/true"]), "interval", minutes=10, id="cmd-1",
                       start_date=dt.datetime.now(UTC) - dt.timedelta(hours=1))
        self.assertEqual(len(self.c.run_job("cmd-1")), 32)
        now = dt.datetime.now(UTC)
        times = self.c.backfill("cmd-1", now - dt.timedelta(minutes=35), now - dt.timedelta(minutes=1),
                                validate_only=True)
        self.assertEqual(len(times), 3)  # now-30, -20, -10 min
        self.assertEqual(self.c.remove_all_jobs(), 2)

    # ---- the scheduler and triggers ----------------------------------------------------

    def test_pause_resume_info(self):
        self.assertEqual(self.c.state, apsd.client.STATE_RUNNING)
        self.c.pause()
        try:
            self.assertEqual(self.c.state, apsd.client.STATE_PAUSED)
            self.c.add_job(Command(["/bin/true"]), "cron", hour=1, id="p-1")
            with self.assertRaises(FailedPreconditionError):
                self.c.run_job("p-1")  # a paused scheduler runs nothing
        finally:
            self.c.resume()
        self.assertEqual(self.c.state, apsd.client.STATE_RUNNING)
        info = self.c.info()
        self.assertEqual(info.default_timezone, "UTC")
        self.assertGreater(self.c.last_sequence(), 0)

    def test_preview(self):
        start = dt.datetime(2026, 1, 1, tzinfo=UTC)
        times = self.c.preview("cron", hour=9, minute=30, count=3, start_time=start)
        self.assertEqual(times, [dt.datetime(2026, 1, d, 9, 30, tzinfo=UTC) for d in (1, 2, 3)])
        times = self.c.preview(CronTrigger(hour=9, timezone="Europe/Berlin"), count=2,
                               start_time=start)
        self.assertEqual([t.isoformat() for t in times],
                         ["2026-01-01T09:00:00+01:00", "2026-01-02T09:00:00+01:00"])
        self.assertEqual(times[0].tzinfo.key, "Europe/Berlin")
        times = self.c.preview("interval", seconds=3, count=2, start_time=start)
        self.assertEqual(times[1] - times[0], dt.timedelta(seconds=3))
        self.assertEqual(self.c.describe_trigger("cron", second="*/5"), "cron[second='*/5']")
        with self.assertRaises(InvalidArgumentError) as cm:
            self.c.preview("cron", hour=24)
        self.assertEqual(cm.exception.field, "trigger.cron.hour")

    # ---- error mapping -------------------------------------------------------------------

    def test_error_mapping(self):
        with self.assertRaises(InvalidArgumentError) as cm:
            self.c.add_job("sample_tasks:add", "cron", hour=25)
        e = cm.exception
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, ApsdError)
        self.assertEqual(e.field, "job.trigger.cron.hour")
        self.assertEqual(e.code.name, "INVALID_ARGUMENT")
        self.assertIn("25", str(e))
        with self.assertRaises(InvalidArgumentError) as cm:
            self.c.add_job("sample_tasks:add", "cron", hour=1, timezone="Mars/Olympus")
        self.assertEqual(cm.exception.field, "job.trigger.cron.timezone")
        with self.assertRaises(InvalidArgumentError) as cm:
            self.c.add_job("sample_tasks:add", "cron", hour=1, jobstore="nope")
        self.assertEqual(cm.exception.field, "job.jobstore")
        with self.assertRaises(InvalidArgumentError):
            self.c.add_job(Command(["/bin/true"]), "cron", hour=1, executor="workers")
        with self.assertRaises(InvalidArgumentError):
            self.c.add_job("sample_tasks:add", "cron", hour=1, max_instances=0)
        with self.assertRaises(InvalidArgumentError) as cm:
            self.c.add_job(Command([]), "cron", hour=1)
        self.assertEqual(cm.exception.field, "job.target.command.argv")
        # An unreachable daemon: UNAVAILABLE, a ConnectionError
        dead = Client("127.0.0.1:%d" % free_port(), timeout=2)
        try:
            with self.assertRaises(UnavailableError) as cm:
                dead.get_jobs()
            self.assertIsInstance(cm.exception, ConnectionError)
        finally:
            dead.close()


class PackageTest(unittest.TestCase):
    def test_layout(self):
        """apsd and the generated apsd.v1 import together; under bazel test
        from the package the build assembled."""
        from apsd.v1 import scheduler_pb2, scheduler_pb2_grpc, workers_pb2, workers_pb2_grpc  # noqa: F401
        pkg = os.environ.get("APSD_PY_PACKAGE")
        if pkg:
            self.assertTrue(apsd.__file__.startswith(pkg), apsd.__file__)
            self.assertTrue(scheduler_pb2.__file__.startswith(pkg), scheduler_pb2.__file__)
        self.assertEqual(sorted(apsd.__all__), sorted(set(apsd.__all__)))
        for name in apsd.__all__:
            self.assertTrue(hasattr(apsd, name), name)


class AuthTest(unittest.TestCase):
    """Bearer tokens: UnauthenticatedError and PermissionDeniedError."""

    def test_tokens(self):
        import hashlib
        d = Daemon()
        try:
            tokens = os.path.join(d.tmp, "tokens")
            with open(tokens, "w") as f:
                f.write("read %s\nwrite %s\n" % (hashlib.sha256(b"r-token").hexdigest(),
                                                 hashlib.sha256(b"w-token").hexdigest()))
            d.extra += ["--token-file", tokens]
            d.start()
            for token, exc in ((None, apsd.UnauthenticatedError), ("wrong", apsd.UnauthenticatedError)):
                with Client(d.target, token=token) as c:
                    with self.assertRaises(exc):
                        c.get_jobs()
            with Client(d.target, token="r-token") as c:
                self.assertEqual(c.get_jobs(), [])
                with self.assertRaises(apsd.PermissionDeniedError) as cm:
                    c.add_job("sample_tasks:add", "cron", hour=1)
                self.assertIsInstance(cm.exception, PermissionError)
            with Client(d.target, token="w-token") as c:
                self.assertEqual(c.add_job("sample_tasks:add", "cron", hour=1, id="t").id, "t")
        finally:
            self.assertEqual(d.cleanup(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
