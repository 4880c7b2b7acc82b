"""apsd.Worker: runs the function a remote job names, reports its return
value or its exception with the traceback, extends leases, stops cleanly."""
import datetime as dt
import threading
import time
import unittest

from apsd_testutil import Collector, Daemon, wait_for

import apsd  # noqa: E402
from apsd import Client, Worker  # noqa: E402
from apsd import events as ev  # noqa: E402

D = None
DONE = ev.EVENT_JOB_EXECUTED | ev.EVENT_JOB_ERROR


def setUpModule():
    global D
    D = Daemon().start()


def tearDownModule():
    rc = D.stop()
    log = D.log_text()
    D.cleanup()
    if rc != 0:
        raise AssertionError("apsd exited with %r:\n%s" % (rc, log))


class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.c = Client(D.target)
        self.after = self.c.last_sequence()
        self.workers = []

    def tearDown(self):
        for w in self.workers:
            w.stop()
        self.c.remove_all_jobs()
        self.c.close()

    def worker(self, queue, **kw):
        w = Worker(self.c, queue, **kw)
        self.workers.append(w)
        w.start()
        self.assertTrue(w.wait_connected(10))
        return w

    def results(self, job_ids, n=None, timeout=20):
        """The JOB_EXECUTED/JOB_ERROR events of these jobs (n of them)."""
        n = n or len(job_ids)
        col = Collector(self.c.events(types=DONE, job_ids=job_ids, after=self.after))
        try:
            ok = col.wait(lambda es: len(es) >= n, timeout)
            self.assertTrue(ok, (col.snapshot(), col.error))
            return col.snapshot()
        finally:
            col.close()

    def test_runs_function_by_reference(self):
        w = self.worker("q-ref")
        self.c.add_job("sample_tasks:add", args=[2, 3], id="w-add", queue="q-ref")
        self.c.add_job("sample_tasks:record", args=["循环任务", 1.5], kwargs={"k": [1, None]},
                       id="w-rec", queue="q-ref")
        self.c.add_job("sample_tasks:Greeter.hello", args=["apsd"], id="w-hello", queue="q-ref")
        self.c.add_job("sample_tasks:async_add", args=[20, 22], id="w-async", queue="q-ref")
        self.c.add_job("sample_tasks:unjsonable", id="w-obj", queue="q-ref")
        got = {e.job_id: e for e in self.results(["w-add", "w-rec", "w-hello", "w-async", "w-obj"])}
        self.assertEqual({k: e.code for k, e in got.items()},
                         dict.fromkeys(got, ev.EVENT_JOB_EXECUTED))
        self.assertEqual(got["w-add"].retval, 5)
        self.assertEqual(got["w-rec"].retval, {"args": ["循环任务", 1.5], "kwargs": {"k": [1, None]}})
        self.assertEqual(got["w-hello"].retval, "hello apsd")
        self.assertEqual(got["w-async"].retval, 42)
        self.assertRegex(got["w-obj"].retval, r"^<object object at 0x")  # not JSON: its repr
        e = got["w-add"]
        self.assertIn(e.worker_id, (None, w.worker_id))  # apsd 0.1 leaves it unset
        self.assertEqual(e.status, "SUCCEEDED")
        self.assertIsNone(e.exception)
        self.assertIsInstance(e.scheduled_run_time, dt.datetime)
        # (The worker counts a run once its Complete returned: the event
        # may come first.)
        wait_for(lambda: w.runs == 5, 10)
        self.assertEqual(w.runs, 5)

    def test_exception_with_traceback(self):
        w = self.worker("q-err")
        self.c.add_job("sample_tasks:boom", args=["kaputt"], id="w-boom", queue="q-err")
        self.c.add_job("sample_tasks:no_such_function", id="w-missing", queue="q-err")
        self.c.add_job("sample_tasks:add", args=[1], id="w-badargs", queue="q-err")
        got = {e.job_id: e for e in self.results(["w-boom", "w-missing", "w-badargs"])}
        e = got["w-boom"]
        self.assertEqual(e.code, ev.EVENT_JOB_ERROR)
        self.assertEqual(e.status, "FAILED")
        self.assertIsInstance(e.exception, apsd.RemoteJobError)
        self.assertEqual(e.exception.type_name, "ValueError")
        self.assertEqual(str(e.exception), "kaputt")
        self.assertIn("Traceback (most recent call last)", e.traceback)
        self.assertIn('sample_tasks.py", line', e.traceback)
        self.assertIn("raise ValueError(message)", e.traceback)
        self.assertTrue(e.traceback.rstrip().endswith("ValueError: kaputt"))
        self.assertEqual(e.exception.traceback, e.traceback)
        self.assertEqual(got["w-missing"].exception.type_name, "LookupError")
        self.assertIn("error looking up object", str(got["w-missing"].exception))
        self.assertEqual(got["w-badargs"].exception.type_name, "TypeError")
        wait_for(lambda: (w.runs, w.failures) == (3, 3), 10)  # (counted after Complete)
        self.assertEqual((w.runs, w.failures), (3, 3))

    def test_registered_tasks(self):
        w = Worker(self.c, "q-reg")
        self.workers.append(w)

        @w.task
        def double(x):
            return 2 * x

        @w.task(name="custom-name")
        def triple(x):
            return 3 * x

        self.assertEqual(sorted(w.tasks), ["custom-name", "test_worker:WorkerTest.test_registered_tasks.<locals>.double"])
        w.start()
        self.assertTrue(w.wait_connected(10))
        self.c.add_job("custom-name:x", args=[5], id="w-custom", queue="q-reg")  # name only matters
        ref = "test_worker:WorkerTest.test_registered_tasks.<locals>.double"
        self.c.add_job(ref, args=[4], id="w-double", queue="q-reg")
        self.c.add_job("sample_tasks:add", args=[1, 1], id="w-unregistered", queue="q-reg")
        got = {e.job_id: e for e in self.results(["w-double"])}
        self.assertEqual(got["w-double"].retval, 8)
        # Acquire asks only for registered tasks: the other two stay pending.
        time.sleep(0.5)
        wait_for(lambda: w.runs == 1, 10)  # (counted after Complete)
        self.assertEqual(w.runs, 1)
        w.register("custom-name:x", triple)  # registering re-opens Acquire with the new list
        got = {e.job_id: e for e in self.results(["w-double", "w-custom"])}
        self.assertEqual(got["w-custom"].retval, 15)
        # an importing worker on the same queue takes the unregistered one
        self.worker("q-reg", import_tasks=True)
        got = {e.job_id: e for e in self.results(["w-double", "w-custom", "w-unregistered"])}
        self.assertEqual(got["w-unregistered"].retval, 2)

    def test_lease_extended_for_long_task(self):
        # A 1 s lease and a 2.5 s task: only ExtendLease keeps the run alive.
        self.worker("q-long", lease_duration=1)
        self.c.add_job("sample_tasks:slow", args=[2.5], id="w-slow", queue="q-long")
        e = self.results(["w-slow"], timeout=30)[0]
        self.assertEqual((e.code, e.status, e.retval), (ev.EVENT_JOB_EXECUTED, "SUCCEEDED", "done after 2.5 s"))

    def test_stop_waits_for_running_tasks(self):
        w = self.worker("q-stop")
        self.c.add_job("sample_tasks:slow", args=[1], id="w-stop", queue="q-stop")
        self.assertTrue(wait_for(lambda: w._inflight, 10))
        t0 = time.monotonic()
        w.stop(wait=True)
        self.assertGreater(time.monotonic() - t0, 0.3)  # it waited for the run
        self.assertFalse(w._thread.is_alive())
        self.assertFalse(w.connected)
        e = self.results(["w-stop"])[0]
        self.assertEqual(e.retval, "done after 1 s")
        # a stopped worker takes nothing more
        self.c.add_job("sample_tasks:add", args=[1, 2], id="w-after-stop", queue="q-stop")
        time.sleep(0.5)
        wait_for(lambda: w.runs == 1, 10)  # (counted after Complete)
        self.assertEqual(w.runs, 1)
        # and run() in the caller's thread returns after stop() from another
        w2 = Worker(self.c, "q-stop")
        threading.Timer(1.0, w2.stop).start()
        t0 = time.monotonic()
        w2.run()
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(w2.runs, 1)  # it ran the pending job meanwhile

    def test_current_run_and_cancel(self):
        seen = []
        release = threading.Event()
        w = Worker(self.c, "q-cancel")
        self.workers.append(w)

        @w.task(name="observe")
        def observe():
            run = apsd.current_run()
            seen.append(run)
            # cancelled by the next run (overlap policy CANCEL_RUNNING)
            wait_for(lambda: run.cancelled.is_set() or release.is_set(), 10, 0.01)
            return "stopped early" if run.cancelled.is_set() else "released"

        w.start()
        self.assertTrue(w.wait_connected(10))
        self.c.add_job("observe", "interval", seconds=1, id="w-cancel", queue="q-cancel",
                       overlap_policy="cancel_running")
        try:
            got = self.results(["w-cancel"], timeout=15)
        finally:
            self.c.pause_job("w-cancel")
            release.set()
        self.assertEqual(got[0].code, ev.EVENT_JOB_ERROR)
        self.assertEqual(got[0].status, "CANCELLED")
        self.assertTrue(seen[0].cancelled.is_set())
        self.assertEqual(seen[0].job_id, "w-cancel")
        self.assertEqual(seen[0].task, "observe")
        self.assertEqual(len(seen[0].scheduled_run_times), 1)
        self.assertIsNone(apsd.current_run())  # only inside a run


if __name__ == "__main__":
    unittest.main(verbosity=2)
