"""RemoteScheduler: APScheduler's BackgroundScheduler surface backed by apsd,
and the original brief's three jobs, in-process and as the example script."""
import datetime
import io
import os
import subprocess
import sys
import threading
import time
import unittest

from apsd_testutil import Daemon, PACKAGE_ROOT, SRC, wait_for, _runfile

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED  # noqa: E402
import apsd  # noqa: E402
from apsd import Client, RemoteScheduler  # noqa: E402
from apsd import events as ev  # noqa: E402

D = None
calls = []
calls_lock = threading.Lock()


def aps_test(x):
    with calls_lock:
        calls.append((x, datetime.datetime.now(datetime.timezone.utc)))
    return x


def fails(x):
    raise RuntimeError("failed: %s" % x)


def setUpModule():
    global D
    D = Daemon().start()
    os.environ["APSD_TARGET"] = D.target


def tearDownModule():
    os.environ.pop("APSD_TARGET", None)
    rc = D.stop()
    log = D.log_text()
    D.cleanup()
    if rc != 0:
        raise AssertionError("apsd exited with %r:\n%s" % (rc, log))


def count(x):
    with calls_lock:
        return len([c for c in calls if c[0] == x])


class RemoteSchedulerTest(unittest.TestCase):
    def setUp(self):
        with calls_lock:
            calls.clear()
        self.client = Client(D.target)

    def tearDown(self):
        self.client.remove_all_jobs()
        self.client.close()

    def test_seed_examples(self):
        """The brief's three jobs, as written for APScheduler (the one-shot
        job 2 s ahead instead of 12, the interval 1 s instead of 3)."""
        scheduler = RemoteScheduler()  # APSD_TARGET
        events = []
        scheduler.add_listener(events.append, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        scheduler.add_job(func=aps_test, args=('定时任务',), trigger='cron', second='*/5')
        scheduler.add_job(func=aps_test, args=('一次性任务',),
                          next_run_time=datetime.datetime.now() + datetime.timedelta(seconds=2))
        scheduler.add_job(func=aps_test, args=('循环任务',), trigger='interval', seconds=1)
        pending = scheduler.get_jobs()
        self.assertEqual(len(pending), 3)
        # Ids made as the daemon makes them: milliseconds, then 128 random bits.
        now_ms = time.time() * 1000
        for j in pending:
            self.assertRegex(j.id, "^[0-9a-f]{44}$")
            self.assertLess(abs(int(j.id[:12], 16) - now_ms), 60000)
        ms = [int(j.id[:12], 16) for j in pending]
        self.assertEqual(ms, sorted(ms))
        self.assertTrue(all(j.pending for j in pending))
        out = io.StringIO()
        scheduler.print_jobs(out=out)
        self.assertIn("Pending jobs:\n    aps_test (trigger: cron[second='*/5'], pending)", out.getvalue())
        scheduler.start()
        try:
            self.assertTrue(scheduler.running)
            jobs = scheduler.get_jobs()
            self.assertEqual(sorted(str(j.trigger).split("[")[0] for j in jobs), ["cron", "date", "interval"])
            self.assertTrue(all(j.func is aps_test for j in jobs))
            self.assertTrue(all(j.func_ref == "test_scheduler:aps_test" for j in jobs))
            out = io.StringIO()
            scheduler.print_jobs(out=out)
            lines = out.getvalue().splitlines()
            self.assertEqual(lines[0], "Jobstore default:")
            self.assertEqual(len(lines), 4)
            self.assertTrue(any(ln.startswith("    aps_test (trigger: interval[0:00:01], next run at: ")
                                for ln in lines[1:]), lines)
            self.assertRegex(lines[1], r"^    aps_test \(trigger: \w+\[.*\], next run at: .* UTC\)$")
            ok = wait_for(lambda: count('定时任务') >= 1 and count('一次性任务') >= 1
                          and count('循环任务') >= 3, 15)
            self.assertTrue(ok, (calls, events))
            self.assertTrue(wait_for(lambda: len(events) >= 5, 5))
        finally:
            scheduler.shutdown()
        self.assertFalse(scheduler.running)
        self.assertEqual(count('一次性任务'), 1)
        cron = [e.scheduled_run_time for e in events if e.retval == '定时任务']
        self.assertTrue(cron)
        self.assertTrue(all(t.second % 5 == 0 and t.microsecond == 0 for t in cron), cron)
        ticks = sorted(e.scheduled_run_time for e in events if e.retval == '循环任务')
        one = datetime.timedelta(seconds=1)  # on the interval's grid (a busy machine may miss one)
        self.assertTrue(all((b - a) % one == datetime.timedelta(0) and b > a
                            for a, b in zip(ticks, ticks[1:])), ticks)
        e = [e for e in events if e.retval == '一次性任务'][0]
        self.assertIsInstance(e, ev.JobExecutionEvent)
        self.assertEqual(e.code, EVENT_JOB_EXECUTED)
        self.assertIsNone(e.exception)
        self.assertIsInstance(e.scheduled_run_time, datetime.datetime)
        # private queue: shutdown removed this scheduler's jobs from the daemon
        self.assertEqual(self.client.get_jobs(), [])

    def test_listener_gets_exception_and_traceback(self):
        scheduler = RemoteScheduler(target=D.target)
        errors, all_events = [], []
        scheduler.add_listener(errors.append, EVENT_JOB_ERROR)
        scheduler.add_listener(all_events.append)
        scheduler.start()
        try:
            job = scheduler.add_job(fails, args=["x"], id="sched-fail")
            self.assertEqual(job.name, "fails")
            self.assertTrue(wait_for(lambda: errors, 10))
            e = errors[0]
            self.assertEqual((e.code, e.job_id), (EVENT_JOB_ERROR, "sched-fail"))
            self.assertEqual(e.exception.type_name, "RuntimeError")
            self.assertEqual(str(e.exception), "failed: x")
            self.assertIn('raise RuntimeError("failed: %s" % x)', e.traceback)
        finally:
            scheduler.shutdown()
        codes = [e.code for e in all_events]
        self.assertEqual(codes[0], ev.EVENT_SCHEDULER_STARTED)  # dispatched locally, as APScheduler
        self.assertEqual(codes[-1], ev.EVENT_SCHEDULER_SHUTDOWN)
        self.assertIn(ev.EVENT_JOB_ADDED, codes)
        self.assertIn(ev.EVENT_JOB_SUBMITTED, codes)
        self.assertEqual(len([c for c in codes if c == ev.EVENT_SCHEDULER_STARTED]), 1)  # not the daemon's

    def test_apscheduler_constructor_and_job_methods(self):
        """The brief's configuration (APScheduler objects) is accepted;
        job_defaults apply; the job-level methods work."""
        import pytz
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        scheduler = RemoteScheduler(jobstores={'default': MemoryJobStore()},
                                    executors={'default': ThreadPoolExecutor(20)},
                                    job_defaults={'coalesce': False, 'max_instances': 3},
                                    timezone=pytz.utc, target=D.target)
        self.assertEqual(scheduler.worker.max_workers, 20)
        scheduler.start(paused=True)
        try:
            self.assertEqual(scheduler.state, apsd.scheduler.STATE_PAUSED)

            @scheduler.scheduled_job('interval', seconds=1, id='deco', args=['装饰器'])
            def decorated(x):
                return aps_test(x)

            job = scheduler.get_job('deco')
            self.assertEqual((job.coalesce, job.max_instances), (False, 3))
            self.assertEqual(job.trigger.timezone, "UTC")
            self.assertIs(job.func, decorated)  # a nested function: run by this process
            self.assertTrue(job.func_ref.startswith("apsd.local:"))
            self.assertTrue(job.paused)  # start(paused=True)
            scheduler.resume()
            self.assertTrue(wait_for(lambda: count('装饰器') >= 1, 10))
            job = scheduler.modify_job('deco', max_instances=1)
            self.assertEqual(job.max_instances, 1)
            job = scheduler.reschedule_job('deco', trigger='cron', hour=3)
            self.assertEqual(str(job.trigger), "cron[hour='3']")
            self.assertTrue(scheduler.pause_job('deco').paused)
            self.assertFalse(scheduler.resume_job('deco').paused)
            lam = scheduler.add_job(lambda: aps_test('lambda'), 'date', id='lam')
            self.assertTrue(lam.name.endswith("<locals>.<lambda>"), lam.name)  # its qualname, as APScheduler
            self.assertTrue(wait_for(lambda: count('lambda') == 1, 10))
            scheduler.remove_job('deco')
            self.assertIsNone(scheduler.get_job('deco'))
            with self.assertRaises(apsd.JobLookupError):
                scheduler.remove_job('deco')
            scheduler.add_job(aps_test, 'cron', hour=1, args=['x'])
            scheduler.remove_all_jobs()
            self.assertEqual(scheduler.get_jobs(), [])
            with self.assertRaises(apsd.SchedulerAlreadyRunningError):
                scheduler.start()
        finally:
            scheduler.shutdown()
        with self.assertRaises(apsd.SchedulerNotRunningError):
            scheduler.shutdown()

    def test_named_queue_persists(self):
        """queue='name': jobs outlive the scheduler, like a persistent job
        store, and the next scheduler on the queue runs them by reference."""
        s1 = RemoteScheduler(target=D.target, queue="py-persist")
        s1.start()
        s1.add_job("test_scheduler:aps_test", 'interval', seconds=1, args=['persisted'],
                   id='persist', next_run_time=None)
        s1.shutdown()
        job = self.client.get_job('persist')
        self.assertIsNotNone(job)
        self.assertEqual(job.queue, "py-persist")
        s2 = RemoteScheduler(target=D.target, queue="py-persist")
        s2.start()
        try:
            self.assertEqual([j.id for j in s2.get_jobs()], ['persist'])
            s2.resume_job('persist')
            self.assertTrue(wait_for(lambda: count('persisted') >= 1, 10))
        finally:
            s2.shutdown()
        self.assertIsNotNone(self.client.get_job('persist'))  # still there

    def test_seed_example_script(self):
        """examples/seed_jobs.py (the brief's code, only the import changed)
        for 13.5 s: the cron job every 5 s, the one-shot job after 12 s, the
        interval job every 3 s."""
        script = _runfile("bindings/python/examples/seed_jobs.py") or \
            os.path.join(SRC, "examples", "seed_jobs.py")
        env = dict(os.environ, APSD_TARGET=D.target, PYTHONPATH=PACKAGE_ROOT)
        out = subprocess.run([sys.executable, script, "13.5"], env=env, capture_output=True,
                             timeout=60, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.splitlines()
        n = {x: len([ln for ln in lines if ln.endswith(" " + x)]) for x in ('定时任务', '一次性任务', '循环任务')}
        self.assertGreaterEqual(n['定时任务'], 2, out.stdout)
        self.assertEqual(n['一次性任务'], 1, out.stdout)
        self.assertGreaterEqual(n['循环任务'], 4, out.stdout)
        self.assertIn("Jobstore default:", lines[0])
        self.assertEqual(self.client.get_jobs(), [])  # removed at its shutdown


if __name__ == "__main__":
    unittest.main(verbosity=2)
