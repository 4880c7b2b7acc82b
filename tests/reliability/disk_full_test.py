"""A full disk (issue 8, item 1): the data directory on a small tmpfs.

The test fills it with AddJob until writes fail, and checks that:
- every failed write is RESOURCE_EXHAUSTED (never another code, never a
  crash), and the acknowledged ones are all there;
- reads keep working: GetJob, ListJobs, GetScheduler, the event log replay;
- the daemon killed with SIGKILL while the disk is full restarts on it with
  its data intact (ListJobs equals the acknowledged jobs, field for field;
  the event log is 1..N without a gap; mdb_dump reads every database);
- removing jobs frees room for new ones, and once space returns (remounted
  bigger) writes succeed again and a job that was firing while the disk was
  full keeps firing (its runs are recorded, its instance slot is freed).

With a disk reserve ([scheduler] disk_reserve, here 1 MiB of an 8 MB
tmpfs) filled by another file instead, it checks that:
- a job keeps firing through the full disk, its runs recorded;
- GetScheduler shows the store's low_space (and `apsctl state` says so);
  AddJob and Backfill get
  RESOURCE_EXHAUSTED saying why; RemoveJob and ModifyJob work;
- restarted before space comes back, the daemon is low on space from the
  start (AddJob refused) and the job goes on firing;
- once the other file is deleted, within a few seconds AddJob works again,
  low_space is off and the reserve is back; the daemon's log tells both
  changes.
(The first test's 4 MB tmpfs has no room for the default 32 MiB reserve:
it checks a full disk without one.)

Needs root (mount -t tmpfs); without it the tests are skipped and print
SKIP. The tmpfs is unmounted in every case. Prints one figure line each.
"""
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from google.protobuf import timestamp_pb2

from common import ET, T, Daemon, grpc, list_jobs, pb, read_events, run_tests, secs, wait_for
from apsd_harness import built  # on sys.path once common is imported

APSCTL = built("tools/apsctl/apsctl", "APSCTL_BIN")
SIZE_MB = 4
BIG_MB = 32
BALLAST_KB = 512
RESERVE_DISK_MB = 8
RESERVE_KB = 1024
# The store's loop retries a failed write after 10 s (APScheduler's
# jobstore_retry_interval): what recovery may take once space returns.
RETRY_S = 10
FIGURES = []  # printed after the tests, one line each


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def basic(job):
    j = pb.Job()
    j.CopyFrom(job)
    j.ClearField("stats")
    return j.SerializeToString(deterministic=True)


def mount_tmpfs(path, size_mb):
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0700" % size_mb, "tmpfs", path],
                          capture_output=True, text=True, timeout=30)


def job(jid, payload, trigger=None):
    return pb.Job(id=jid, name=jid, trigger=trigger or pb.Trigger(cron=pb.CronTrigger(year="2099", timezone="UTC")),
                  target=pb.Target(command=pb.CommandTarget(argv=["/bin/echo", payload])))


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="apsd-diskfull-", dir=os.environ.get("TEST_TMPDIR"))
        self.mnt = os.path.join(self.tmp, "mnt")
        self.mounted = False
        self.d = None
        r = mount_tmpfs(self.mnt, SIZE_MB)
        if r.returncode != 0:
            msg = "SKIP: disk_full: cannot mount a tmpfs (%s); the full-disk test needs root" % (
                (r.stderr or r.stdout).strip() or "exit %d" % r.returncode)
            FIGURES.append(msg)
            self.skipTest(msg)
        self.mounted = True

    def tearDown(self):
        if self.d is not None:
            self.d.kill()
        if self.mounted:
            for _ in range(50):
                if subprocess.run(["umount", self.mnt], capture_output=True, timeout=30).returncode == 0:
                    self.mounted = False
                    break
                time.sleep(0.1)
            if self.mounted:
                subprocess.run(["umount", "-l", self.mnt], capture_output=True, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assertFull(self, e, what):
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         "%s on a full disk: %s %s\n%s" % (what, e.code(), e.details(), self.d.log_text()[-3000:]))
        self.assertIn("no space", e.details())

    def check_intact(self, acked, what):
        """ListJobs equals the acknowledged jobs; the event log is 1..N."""
        got = {j.id: j for j in list_jobs(self.d.sched)}
        self.assertEqual(sorted(got), sorted(acked), what)
        for jid, want in acked.items():
            if want is None:
                continue  # a job that changes as it fires: present is all
            self.assertEqual(basic(got[jid]), basic(want), "%s: job %s differs:\n%s\nacknowledged\n%s"
                             % (what, jid, got[jid], want))
        info = self.d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        evs, gap = read_events(self.d.sched, 0)
        self.assertIsNone(gap, what)
        self.assertEqual([e.sequence for e in evs], list(range(1, len(evs) + 1)), what)
        self.assertGreaterEqual(len(evs), info.event_log.last_sequence, what)
        return evs

    def mdb_check(self, what):
        """mdb_dump reads every database of the stopped store."""
        if not shutil.which("mdb_dump"):
            return None
        r = subprocess.run(["mdb_dump", "-a", os.path.join(self.mnt, "store")], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, "%s: mdb_dump: %s" % (what, r.stderr.decode(errors="replace")))
        return r.stdout.count(b"\n")

    def test_full_disk(self):
        self.d = Daemon(self.tmp, store=os.path.join(self.mnt, "store"))
        d = self.d
        d.start()
        acked = {}
        # A job firing all along, whose events (with 1.5 KB of output each)
        # keep needing new pages.
        tick = d.sched.AddJob(pb.AddJobRequest(job=pb.Job(
            id="tick", trigger=pb.Trigger(interval=pb.IntervalTrigger(microseconds=300000)),
            misfire_grace_time=pb.MisfireGraceTime(unlimited=True),
            target=pb.Target(command=pb.CommandTarget(argv=["/bin/echo", "t" * 1500])))), timeout=T)
        self.assertEqual(tick.id, "tick")
        # Another file takes some of the room; deleting it is what gives
        # space back later.
        ballast = os.path.join(self.mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\0" * (BALLAST_KB << 10))

        # 1. Fill: big jobs, then smaller ones, until even an empty one fails.
        n, failed, i = 0, 0, 0
        t0 = time.time()
        for size in (3000, 300, 30, 0):
            fails = 0
            while fails < 3 and i < 20000 and time.time() - t0 < 60:
                i += 1
                jid = "fill-%05d" % i
                try:
                    acked[jid] = d.sched.AddJob(pb.AddJobRequest(job=job(jid, "x" * size)), timeout=T)
                    n += 1
                    fails = 0
                except grpc.RpcError as e:
                    self.assertFull(e, "AddJob")
                    fails += 1
                    failed += 1
        self.assertGreater(failed, 0, "the %d MB tmpfs never filled" % SIZE_MB)
        self.assertGreater(n, 100)
        self.assertIsNone(d.proc.poll(), "apsd died on a full disk:\n" + d.log_text())
        st = os.statvfs(self.mnt)
        self.assertLess(st.f_bfree * st.f_frsize, 64 << 10, "the tmpfs is not full")

        # 2. The full disk also stops the firing job's writes; then reads
        # still work, writes fail cleanly.
        time.sleep(1.5)
        for _ in range(3):
            with self.assertRaises(grpc.RpcError) as cm:
                d.sched.AddJob(pb.AddJobRequest(job=job("one-more", "y" * 3000)), timeout=T)
            self.assertFull(cm.exception, "AddJob")
        # A change in place may still fit in pages LMDB frees and reuses:
        # either outcome, but whole.
        try:
            acked["fill-00001"] = d.sched.ModifyJob(pb.ModifyJobRequest(
                job=pb.Job(id="fill-00001", name="n" * 200), update_mask={"paths": ["name"]}), timeout=T)
        except grpc.RpcError as e:
            self.assertFull(e, "ModifyJob")
        got = d.sched.GetJob(pb.GetJobRequest(job_id="fill-00001", view=pb.JOB_VIEW_BASIC), timeout=T)
        self.assertEqual(basic(got), basic(acked["fill-00001"]))
        self.check_intact_but_tick(acked, "while full")
        info = d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        self.assertEqual(info.state, pb.SCHEDULER_STATE_RUNNING)
        self.assertIsNone(d.proc.poll(), "apsd died on a full disk:\n" + d.log_text())

        # 3. SIGKILL while full, restart on the full disk: intact.
        d.kill()
        d.start()
        self.check_intact_but_tick(acked, "restarted while full")

        # 4. Removals on the full disk: each whole or refused. (They do
        # not reliably make room: LMDB copies on write, so a delete needs
        # new pages too, and the pages the last commit freed are reusable
        # only after one more commit.)
        removed = 0
        for k in range(2, 12):
            jid = "fill-%05d" % k
            try:
                d.sched.RemoveJob(pb.RemoveJobRequest(job_id=jid), timeout=T)
                del acked[jid]
                removed += 1
            except grpc.RpcError as e:
                self.assertFull(e, "RemoveJob")
        self.check_intact_but_tick(acked, "after removals on the full disk")

        # 5. Space returns (another file on the disk is deleted): writes
        # succeed again, and the job that was firing fires again: its runs
        # that ended while nothing could be written are recorded, its
        # instance slot is free.
        os.unlink(ballast)
        t_space = time.time()
        last = d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T).event_log.last_sequence

        def add_after(jid, size):
            try:
                acked[jid] = d.sched.AddJob(pb.AddJobRequest(job=job(jid, "z" * size)), timeout=T)
                return True
            except grpc.RpcError as e:
                self.assertFull(e, "AddJob")
                return False
        self.assertTrue(wait_for(lambda: add_after("after-ballast", 3000), 5, interval=0.2),
                        "AddJob still fails with %d KB free" % (BALLAST_KB))

        def ticking():
            evs, _ = read_events(d.sched, last)
            return [e for e in evs if e.job_id == "tick" and e.type == ET.EVENT_TYPE_JOB_EXECUTED
                    and secs(e.scheduled_run_times[0]) > t_space]
        fired = wait_for(ticking, RETRY_S + 10, interval=0.2)
        t = d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T)
        self.assertTrue(fired, "the firing job did not run again once space returned: running_instances %d, "
                        "stats %s" % (t.running_instances, t.stats))
        self.assertLessEqual(t.running_instances, 1)
        runs_before = t.stats.runs

        # 6. The file system grows: many more writes succeed.
        r = subprocess.run(["mount", "-o", "remount,size=%dm" % BIG_MB, self.mnt], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        for k in range(200):
            self.assertTrue(add_after("after-grow-%03d" % k, 3000))
        self.assertTrue(wait_for(lambda: d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
                                 > runs_before + 2, 10, interval=0.2), "the firing job stopped")

        # 7. A clean stop and a last restart: everything acknowledged is there.
        self.assertEqual(d.stop(), 0, d.log_text())
        lines = self.mdb_check("after the clean stop")
        d.start()
        evs = self.check_intact_but_tick(acked, "final restart")
        self.assertEqual(d.stop(), 0, d.log_text())
        self.d = None
        FIGURES.append(
            "disk-full: %d jobs filled a %d MB tmpfs, %d writes refused with RESOURCE_EXHAUSTED, reads served, "
            "restart on the full disk intact, %d of 10 removals went through on it, writes and firing resumed "
            "when space returned; %d jobs and %d events verified%s"
            % (n, SIZE_MB, failed + 3, removed, len(acked), len(evs),
               ", mdb_dump read %d lines" % lines if lines is not None else ""))

    def test_reserve_keeps_jobs_firing(self):
        # A bigger tmpfs than the first test's: remount it.
        r = subprocess.run(["mount", "-o", "remount,size=%dm" % RESERVE_DISK_MB, self.mnt], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        conf = os.path.join(self.tmp, "apsd.ini")
        with open(conf, "w") as f:
            f.write("[scheduler]\ndisk_reserve = %d\n" % (RESERVE_KB << 10))
        store = os.path.join(self.mnt, "store")
        self.d = Daemon(self.tmp, store=store, extra=["--config", conf])
        d = self.d
        d.start()
        reserve = os.path.join(store, "reserve")
        self.assertGreaterEqual(os.stat(reserve).st_blocks * 512, RESERVE_KB << 10)
        d.sched.AddJob(pb.AddJobRequest(job=pb.Job(
            id="tick", trigger=pb.Trigger(interval=pb.IntervalTrigger(microseconds=200000)),
            misfire_grace_time=pb.MisfireGraceTime(unlimited=True),
            target=pb.Target(command=pb.CommandTarget(argv=["/bin/echo", "t" * 200])))), timeout=T)
        d.sched.AddJob(pb.AddJobRequest(job=job("victim", "v")), timeout=T)

        def low_space():
            info = d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
            return [s for s in info.jobstores if s.name == "default"][0].low_space

        self.assertFalse(low_space())
        # Another file fills the disk; the firing job's next write finds it
        # full and takes the reserve's space.
        ballast = os.path.join(self.mnt, "ballast")
        with open(ballast, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (64 << 10))
                    f.flush()
            except OSError:
                pass
        t_full = time.time()
        self.assertTrue(wait_for(low_space, 10, interval=0.1), "the store never reported low space:\n"
                        + d.log_text()[-3000:])
        low_s = time.time() - t_full
        # Emptied, not removed: the mark of a reserve given back, for a restart.
        self.assertEqual((os.stat(reserve).st_size, os.stat(reserve).st_blocks), (0, 0))
        runs0 = d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
        time.sleep(2)
        t = d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T)
        self.assertGreaterEqual(t.stats.runs, runs0 + 8, "the job stopped firing on the full disk")
        fired_full = t.stats.runs - runs0

        st = subprocess.run([APSCTL, "--server", d.target, "state"], capture_output=True, text=True, timeout=30)
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertIn("jobstore default: its disk is full and its reserve was given back", st.stdout)
        with self.assertRaises(grpc.RpcError) as cm:
            d.sched.AddJob(pb.AddJobRequest(job=job("one-more", "y")), timeout=T)
        self.assertFull(cm.exception, "AddJob")
        self.assertIn("reserve was given back", cm.exception.details())
        self.assertIn("2 MiB", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            now = time.time()
            d.sched.Backfill(pb.BackfillRequest(job_id="tick", start_time=ts(now - 5), end_time=ts(now - 1)),
                             timeout=T)
        self.assertFull(cm.exception, "Backfill")
        d.sched.ModifyJob(pb.ModifyJobRequest(job=pb.Job(id="victim", name="renamed"),
                                              update_mask={"paths": ["name"]}), timeout=T)
        d.sched.RemoveJob(pb.RemoveJobRequest(job_id="victim"), timeout=T)
        self.assertIsNone(d.proc.poll(), "apsd died on a full disk:\n" + d.log_text())

        # Restarted before space came back: low on space from the start (not
        # a store without a reserve, taking new jobs onto the full disk), and
        # the job goes on firing.
        self.assertEqual(d.stop(), 0, d.log_text())
        log_at = len(d.log_text())
        d.start()
        self.assertTrue(low_space(), "the restart forgot that the reserve was given back")
        self.assertTrue(wait_for(lambda: "disk full: the job store gave its reserve back" in d.log_text()[log_at:],
                                 3, interval=0.05), "the restart did not log the low space:\n" + d.log_text()[log_at:])
        with self.assertRaises(grpc.RpcError) as cm:
            d.sched.AddJob(pb.AddJobRequest(job=job("one-more", "y")), timeout=T)
        self.assertFull(cm.exception, "AddJob")
        runs0 = d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
        self.assertTrue(wait_for(lambda: d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
                                 >= runs0 + 4, 5, interval=0.2), "the job stopped firing after the restart")

        # Space is freed: the reserve is made again, adds work.
        os.unlink(ballast)
        t_free = time.time()

        def adds():
            try:
                d.sched.AddJob(pb.AddJobRequest(job=job("after", "a")), timeout=T)
                return True
            except grpc.RpcError as e:
                self.assertFull(e, "AddJob")
                return False
        self.assertTrue(wait_for(adds, 5, interval=0.2), "AddJob still refused with the disk freed")
        back_s = time.time() - t_free
        self.assertFalse(low_space())
        self.assertGreaterEqual(os.stat(reserve).st_blocks * 512, RESERVE_KB << 10)
        # The daemon's log told both changes (it looks once a second).
        self.assertTrue(wait_for(lambda: "disk space is back" in d.log_text(), 3, interval=0.1), d.log_text())
        self.assertIn("disk full: the job store gave its reserve back", d.log_text())
        runs1 = d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
        self.assertTrue(wait_for(lambda: d.sched.GetJob(pb.GetJobRequest(job_id="tick"), timeout=T).stats.runs
                                 > runs1 + 2, 5, interval=0.2), "the firing job stopped")
        self.assertEqual(d.stop(), 0, d.log_text())
        self.d = None
        FIGURES.append(
            "disk-full with a %d KiB reserve: low space reported %.1f s after the disk filled, the job fired %d "
            "times in 2 s on the full disk, AddJob/Backfill refused, ModifyJob/RemoveJob served, adds back %.1f s "
            "after space was freed" % (RESERVE_KB, low_s, fired_full, back_s))

    def check_intact_but_tick(self, acked, what):
        """check_intact; the firing job only on its target."""
        got = self.d.sched.GetJob(pb.GetJobRequest(job_id="tick", view=pb.JOB_VIEW_BASIC), timeout=T)
        self.assertEqual(got.target.command.argv[1], "t" * 1500)
        want = dict(acked)
        want["tick"] = None
        return self.check_intact(want, what)


if __name__ == "__main__":
    run_tests(FIGURES)
