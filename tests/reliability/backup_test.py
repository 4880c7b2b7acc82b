"""A hot backup with mdb_copy (the README's "Backups"), taken while apsd runs
under load, restored into a new data directory.

While four clients add jobs as fast as the daemon acknowledges them and a
job fires five times a second, `mdb_copy` (lmdb-utils), plain and compacting
(`-c`), copies the store. A second apsd started on each copy must find:
- every job acknowledged before the copy began, field for field, and no job
  that was never asked for (an add in flight may be in the copy or not);
- an event log 1..N without a gap, whose every JOB_ADDED names a job of the
  copy;
- the firing job, which goes on firing there.
The live daemon is not disturbed: its adds go on during the copy and all of
them are there when it stops. Prints one figure line ("backup: ...").
"""
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from common import ET, T, Daemon, list_jobs, pb, read_events, run_tests, wait_for

CLIENTS = 4
FIGURES = []


def job(jid):
    return pb.Job(id=jid, name=jid, trigger=pb.Trigger(cron=pb.CronTrigger(year="2099", timezone="UTC")),
                  labels={"k": jid},
                  target=pb.Target(command=pb.CommandTarget(argv=["/bin/echo", jid * 20])))


def basic(j):
    c = pb.Job()
    c.CopyFrom(j)
    c.ClearField("stats")
    return c.SerializeToString(deterministic=True)


class Adders:
    """CLIENTS threads adding jobs until stopped (bounded in count and time);
    acked maps id -> (acknowledged Job, time.monotonic() of the answer);
    asked holds every id sent."""

    def __init__(self, sched):
        self.sched = sched
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked, self.asked = {}, set()
        self.errors = []
        self.th = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(CLIENTS)]
        for t in self.th:
            t.start()

    def run(self, k):
        deadline = time.monotonic() + 120
        for n in range(100000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            jid = "c%d-%06d" % (k, n)
            with self.lock:
                self.asked.add(jid)
            try:
                got = self.sched.AddJob(pb.AddJobRequest(job=job(jid)), timeout=T)
            except Exception as e:  # noqa: BLE001 (reported by the test)
                self.errors.append(repr(e))
                return
            with self.lock:
                self.acked[jid] = (got, time.monotonic())

    def finish(self):
        self.stop.set()
        for t in self.th:
            t.join(timeout=30)


class BackupTest(unittest.TestCase):
    def setUp(self):
        self.mdb_copy = shutil.which("mdb_copy")
        if self.mdb_copy is None:
            self.skipTest("mdb_copy not installed (lmdb-utils; tools/bootstrap installs it)")
        self.tmp = tempfile.mkdtemp(prefix="apsd-backup-", dir=os.environ.get("TEST_TMPDIR"))
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, name, store):
        d = Daemon(os.path.join(self.tmp, name), store=store)
        os.makedirs(d.data_dir, exist_ok=True)
        self.daemons.append(d)
        return d.start()

    def test_hot_copy_restores(self):
        live = self.start("live", None)
        live.sched.AddJob(pb.AddJobRequest(job=pb.Job(
            id="tick", trigger=pb.Trigger(interval=pb.IntervalTrigger(microseconds=200000)),
            target=pb.Target(command=pb.CommandTarget(argv=["/bin/true"])))), timeout=T)
        adders = Adders(live.sched)
        self.assertTrue(wait_for(lambda: len(adders.acked) >= 2000, 60, interval=0.05), adders.errors)
        figures = []
        copies = []
        for flags in ([], ["-c"]):
            with adders.lock:
                before = {jid: g for jid, (g, _) in adders.acked.items()}
            dest = os.path.join(self.tmp, "copy%s" % "".join(flags))
            os.makedirs(dest)
            t0 = time.monotonic()
            r = subprocess.run([self.mdb_copy] + flags + [live.store, dest], capture_output=True, text=True,
                               timeout=120)
            copy_s = time.monotonic() - t0
            self.assertEqual(r.returncode, 0, r.stderr)
            with adders.lock:
                during = sum(1 for _, at in adders.acked.values() if t0 <= at <= t0 + copy_s)
            copies.append((flags, dest, before, copy_s, during))
        adders.finish()
        self.assertEqual(adders.errors, [])
        # The live daemon has every job it acknowledged, the copies' time included.
        got = {j.id for j in list_jobs(live.sched)}
        missing = set(adders.acked) - got
        self.assertEqual(missing, set(), "the live daemon lost jobs acknowledged during the copies")
        self.assertEqual(live.stop(), 0, live.log_text())

        for flags, dest, before, copy_s, during in copies:
            what = "mdb_copy %s" % " ".join(flags + ["STORE", "DEST"])
            d = self.start("restored%s" % "".join(flags), dest)
            jobs = {j.id: j for j in list_jobs(d.sched)}
            for jid, want in before.items():
                self.assertIn(jid, jobs, "%s: job %s, acknowledged before the copy, is not in it" % (what, jid))
                self.assertEqual(basic(jobs[jid]), basic(want), "%s: job %s differs" % (what, jid))
            unknown = set(jobs) - adders.asked - {"tick"}
            self.assertEqual(unknown, set(), what)
            self.assertIn("tick", jobs, what)
            evs, gap = read_events(d.sched, 0)
            self.assertIsNone(gap, what)
            self.assertEqual([e.sequence for e in evs], list(range(1, len(evs) + 1)), what)
            added = {e.job_id for e in evs if e.type == ET.EVENT_TYPE_JOB_ADDED}
            self.assertLessEqual(added - {"tick"}, set(jobs), what)
            self.assertLessEqual(set(before), added, what)
            runs0 = d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
            self.assertTrue(wait_for(lambda: d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
                                     >= runs0 + 3, 10, interval=0.1), "%s: the copy's job does not fire" % what)
            size = os.path.getsize(os.path.join(dest, "data.mdb"))
            self.assertEqual(d.stop(), 0, d.log_text())
            figures.append("%s: %d jobs in %.2f s (%d KiB; %d adds acknowledged meanwhile), all %d acknowledged "
                           "before it there, events 1..%d" % (what, len(jobs), copy_s, size >> 10, during,
                                                               len(before), len(evs)))
        FIGURES.append("backup: " + "; ".join(figures) + "; the live daemon kept all %d acknowledged adds"
                       % len(adders.acked))


if __name__ == "__main__":
    run_tests(FIGURES)
