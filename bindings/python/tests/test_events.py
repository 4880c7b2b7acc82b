"""Client.events(): APScheduler's event classes and codes, filters, replay,
reconnecting and resuming across a daemon restart, gaps."""
import datetime as dt
import os
import unittest

from apsd_testutil import Collector, Daemon, wait_for

import apscheduler.events as aps_events  # noqa: E402
import apsd  # noqa: E402
from apsd import Client, Command, Worker  # noqa: E402
from apsd import events as ev  # noqa: E402

UTC = dt.timezone.utc


def far():
    return dt.datetime.now(UTC) + dt.timedelta(days=365)


class EventsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon().start()
        cls.c = Client(cls.d.target)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        rc = cls.d.stop()
        log = cls.d.log_text()
        cls.d.cleanup()
        if rc != 0:
            raise AssertionError("apsd exited with %r:\n%s" % (rc, log))

    def test_constants_match_apscheduler(self):
        names = [n for n in dir(aps_events) if n.startswith("EVENT_")]
        self.assertEqual(len(names), 19)
        for n in names:
            self.assertEqual(getattr(ev, n), getattr(aps_events, n), n)
        self.assertEqual(ev.types_of(ev.EVENT_JOB_EXECUTED | ev.EVENT_JOB_ERROR), [13, 14])
        self.assertEqual(ev.types_of(["JOB_ADDED", "EVENT_JOB_REMOVED"]), [10, 11])
        self.assertEqual(ev.types_of(ev.EVENT_ALL), [])
        with self.assertRaises(ValueError):
            ev.types_of(2 ** 20)

    def test_replay_filters_and_classes(self):
        after = self.c.last_sequence()
        for i in range(3):
            self.c.add_job("sample_tasks:add", "date", run_date=far(), id="ev-%d" % i)
        self.c.remove_job("ev-1")
        with self.c.events(types=aps_events.EVENT_JOB_ADDED | aps_events.EVENT_JOB_REMOVED,
                           job_ids=["ev-0", "ev-1"], after=after) as stream:
            got = [next(stream) for _ in range(3)]
        self.assertEqual([(e.code, e.job_id) for e in got],
                         [(ev.EVENT_JOB_ADDED, "ev-0"), (ev.EVENT_JOB_ADDED, "ev-1"),
                          (ev.EVENT_JOB_REMOVED, "ev-1")])
        for e in got:
            self.assertIsInstance(e, ev.JobEvent)
            self.assertEqual(e.jobstore, "default")
            self.assertIsNotNone(e.time.tzinfo)
        seqs = [e.sequence for e in got]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(got[0].type, "JOB_ADDED")
        self.assertEqual(stream.last_sequence, seqs[-1])
        # resuming after the second event gives the third only
        with self.c.events(types=["JOB_ADDED", "JOB_REMOVED"], job_ids=["ev-0", "ev-1"],
                           after=seqs[1]) as stream:
            self.assertEqual(next(stream).sequence, seqs[2])
        self.c.remove_all_jobs()

    def test_command_run_events(self):
        after = self.c.last_sequence()
        self.c.add_job(Command(["/bin/echo", "循环任务"]), id="ev-cmd")
        self.c.add_job(Command(["/bin/sh", "-c", "echo oops >&2; exit 3"]), id="ev-cmd-fail")
        col = Collector(self.c.events(job_ids=["ev-cmd", "ev-cmd-fail"], after=after,
                                      types=ev.EVENT_JOB_EXECUTED | ev.EVENT_JOB_ERROR
                                      | ev.EVENT_JOB_SUBMITTED))
        try:
            self.assertTrue(col.wait(lambda es: len([e for e in es if e.code != ev.EVENT_JOB_SUBMITTED]) >= 2),
                            (col.snapshot(), col.error))
            by = {(e.job_id, e.code): e for e in col.snapshot()}
            sub = by[("ev-cmd", ev.EVENT_JOB_SUBMITTED)]
            self.assertIsInstance(sub, ev.JobSubmissionEvent)
            self.assertEqual(len(sub.scheduled_run_times), 1)
            ok = by[("ev-cmd", ev.EVENT_JOB_EXECUTED)]
            self.assertIsInstance(ok, ev.JobExecutionEvent)
            self.assertEqual(ok.stdout, "循环任务\n".encode())
            self.assertEqual((ok.status, ok.exit_code, ok.exception), ("SUCCEEDED", 0, None))
            self.assertEqual(ok.run_id, sub.run_id)
            self.assertEqual(ok.scheduled_run_time, sub.scheduled_run_times[0])
            bad = by[("ev-cmd-fail", ev.EVENT_JOB_ERROR)]
            self.assertEqual((bad.status, bad.exit_code, bad.stderr), ("FAILED", 3, b"oops\n"))
            self.assertIsInstance(bad.exception, apsd.RemoteJobError)
            self.assertEqual(bad.exception.exit_code, 3)
            self.assertIn("3", str(bad.exception))
        finally:
            col.close()

    def test_errors_are_final(self):
        with self.assertRaises(apsd.OutOfRangeError):
            next(self.c.events(after=10 ** 12))
        with self.assertRaises(ValueError):
            self.c.events(types=["NOT_A_TYPE"])


class ResumableTest(unittest.TestCase):
    """Which stream ends the iterator reconnects after (as the C and Node
    clients), and a final one ending it at once."""

    def test_classification(self):
        import grpc
        C = grpc.StatusCode
        for code in (C.UNAVAILABLE, C.CANCELLED, C.INTERNAL, C.UNKNOWN):
            self.assertTrue(ev.resumable(code, ""), code)
        self.assertTrue(ev.resumable(C.RESOURCE_EXHAUSTED,
                                     "subscriber too slow: resume with after_sequence 41"))
        for code in (C.RESOURCE_EXHAUSTED, C.INVALID_ARGUMENT, C.OUT_OF_RANGE, C.UNAUTHENTICATED,
                     C.PERMISSION_DENIED, C.ABORTED, C.DEADLINE_EXCEEDED):
            self.assertFalse(ev.resumable(code, "too many subscribers (at most 1)"), code)
        self.assertFalse(ev.resumable(C.RESOURCE_EXHAUSTED, None))

    def test_too_many_subscribers_is_final(self):
        d = Daemon(["--max-subscribers", "1"]).start()
        try:
            c = Client(d.target)
            after = c.last_sequence()
            c.add_job("sample_tasks:add", "date", run_date=far(), id="sub-1")
            with c.events(after=after) as first:
                self.assertEqual(next(first).job_id, "sub-1")  # it holds the one slot
                second = c.events(after=after, retry_timeout=30)
                with self.assertRaises(apsd.ResourceExhaustedError) as cm:
                    next(second)
                self.assertIn("too many subscribers", str(cm.exception))
                self.assertEqual(second.reconnects, 0)
            c.close()
        finally:
            rc = d.stop()
            d.cleanup()
        self.assertEqual(rc, 0)


class RestartTest(unittest.TestCase):
    """The iterator and a worker outlive a daemon restart."""

    def test_resume_across_restart(self):
        d = Daemon().start()
        c = Client(d.target)
        w = Worker(c, "q-restart", lease_duration=5)
        w.start()
        try:
            jobs = ["rs-a", "rs-b", "rs-c", "rs-d"]
            col = Collector(c.events(job_ids=jobs, types=ev.EVENT_JOB_ADDED | ev.EVENT_JOB_EXECUTED,
                                     retry_timeout=30))
            self.assertTrue(wait_for(lambda: col.stream.last_sequence is not None, 10))
            c.add_job("sample_tasks:add", "date", run_date=far(), id="rs-a")
            self.assertTrue(col.wait(lambda es: [e.job_id for e in es] == ["rs-a"]), col.snapshot())
            self.assertEqual(d.restart(), 0)
            # Right after the restart, before the iterator has reconnected
            # (its backoff), and after: it must resume with both, once each.
            # (A request id makes the adds retried while the channel is
            # still reconnecting, as a client of a restarting daemon does.)
            c.add_job("sample_tasks:add", "date", run_date=far(), id="rs-b", request_id="rs-b-1")
            c.add_job("sample_tasks:add", "date", run_date=far(), id="rs-c", request_id="rs-c-1")
            self.assertTrue(col.wait(lambda es: len(es) >= 3), (col.snapshot(), col.error))
            c.add_job("sample_tasks:add", "date", id="rs-d", args=[40, 2], queue="q-restart")
            ok = col.wait(lambda es: any(e.code == ev.EVENT_JOB_EXECUTED for e in es))
            es = col.snapshot()
            self.assertTrue(ok, (es, col.error, d.log_text()))
            self.assertEqual([(e.job_id, e.code) for e in es],
                             [("rs-a", ev.EVENT_JOB_ADDED), ("rs-b", ev.EVENT_JOB_ADDED),
                              ("rs-c", ev.EVENT_JOB_ADDED), ("rs-d", ev.EVENT_JOB_ADDED),
                              ("rs-d", ev.EVENT_JOB_EXECUTED)])
            self.assertEqual(es[-1].retval, 42)  # the worker reconnected and ran it
            self.assertGreaterEqual(col.stream.reconnects, 1)
            seqs = [e.sequence for e in es]
            self.assertEqual(seqs, sorted(set(seqs)))
            col.close()
            self.assertIsNone(col.error)
        finally:
            w.stop()
            c.close()
            rc = d.stop()
            d.cleanup()
        self.assertEqual(rc, 0)

    def test_gap(self):
        d = Daemon()
        cfg = os.path.join(d.tmp, "apsd.ini")
        with open(cfg, "w") as f:
            f.write("[scheduler]\nevent_max_count = 5\n")
        d.extra += ["--config", cfg]
        try:
            d.start()
        except Exception:
            d.cleanup()
            raise
        c = Client(d.target)
        try:
            for i in range(20):
                c.add_job("sample_tasks:add", "date", run_date=far(), id="gap-%02d" % i)
            # Recent events are also served from the daemon's in-memory ring
            # (8192 events); a restart empties it, leaving the pruned log.
            self.assertEqual(d.restart(), 0)
            self.assertTrue(wait_for(lambda: c.info().event_log.first_sequence > 2, 10))
            with self.assertRaises(apsd.EventGapError) as cm:  # after=0 is "the oldest retained"
                next(c.events(after=1))
            self.assertEqual(cm.exception.requested_sequence, 2)
            first = cm.exception.first_available_sequence
            self.assertGreater(first, 2)
            with c.events(after=1, continue_after_gap=True) as stream:
                e = next(stream)
                self.assertEqual(e.sequence, first)
                self.assertEqual(stream.gaps, [(2, first)])
        finally:
            c.close()
            d.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
