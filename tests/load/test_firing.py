"""Load test of the daemon's firing path (issue 8 item 2): 10,000 jobs fire
per second, first alone (the baseline), then while 500 event subscribers
connect and disconnect in a loop, subscribers that never read are cut,
clients cancel SubscribeEvents and Acquire streams mid-stream (workers
abandon leased runs), and channels close under open streams. Asserts that
memory stays bounded, firing lateness stays under loose bounds (the real
figures are printed: `load:` lines), nothing is lost (every fire time of
every job is run exactly once, every run ends exactly once), the subscriber
limit answers RESOURCE_EXHAUSTED without leaking slots, and SIGTERM exits 0.

The jobs: interval jobs of 1 s on the `memory` job store with start times
spread over the second. apsd has no no-op target over the wire (a
threadpool's C functions have no wire form), so the cheapest real target is
taken: a command whose program does not exist, which the process executor
ends without forking (JOB_ERROR, RUN_STATUS_START_FAILED) after the whole
path (due index, run record, JOB_SUBMITTED, executor, completion, stats).
misfire_grace_time is unlimited and coalesce false, so that a late run is
still run, once per fire time, and "nothing lost" is exact whatever the
machine's load (as tools/bench/engine does). Two readers subscribe to a
sample of the jobs (1,000) and to the remote jobs before anything fires
and must get every event of them: the event log is sized to keep the whole
test, so a reader fed late, or cut as too slow when this process is starved
of CPU (it then resumes with after_sequence; counted), still gets
everything. The delivery delay is printed, and loosely bounded. In the
measured windows every other client runs in a process of its own
(churn.py, side_clients.py), so that the delay is the daemon's, not that
of this process's threads taking its GIL from the reader.

APSD_SANITIZED=1 (ASan runs) scales the loads down. LOAD_SCALE=F multiplies
the job and subscriber counts (e.g. 0.1 for a quick run); LOAD_BASELINE_S and
LOAD_WINDOW_S set the measured windows; LOAD_DUMP=FILE writes every sampled
firing (scheduled time, lateness) as JSON, for diagnosis (late runs that
cluster on a period point at their cause)."""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadlib import (ET, SANITIZED, T, Daemon, RssSampler, mib, pb, percentile,  # noqa: E402
                     thread_sched, ts, us)
import side_clients  # noqa: E402

import grpc  # noqa: E402

SCALE = float(os.environ.get("LOAD_SCALE", "1"))
N_JOBS = int((2000 if SANITIZED else 10000) * SCALE)  # = fires per second
N_SUBS = int(os.environ.get("LOAD_SUBS") or (100 if SANITIZED else 500) * SCALE)  # churning subscribers
# LOAD_BASELINE_S / LOAD_WINDOW_S shorten the measured windows (quick runs
# while investigating; the defaults are the test's).
BASELINE = float(os.environ.get("LOAD_BASELINE_S") or 6.0)   # seconds measured without churn
WARMUP = 3.0                                                 # churn seconds not measured
WINDOW = float(os.environ.get("LOAD_WINDOW_S") or (10.0 if SANITIZED else 15.0))  # churn, measured
N_SAMPLE = min(1000, N_JOBS // 10)                    # jobs whose events are all read
N_REMOTE = max(10, N_JOBS // 100)                     # remote jobs for the Acquire churn
N_WORKERS = 5
LIFE_MIN, LIFE_MAX = 0.2, 3.0                         # a churning subscriber's life (s)
LEASE = 1.0                                           # seconds (the daemon's minimum)
SUB_QUEUE = 1024                                      # --subscriber-queue
# --max-subscribers: room above the churning subscribers for the readers,
# the never-reading ones, and streams the clients cancelled that the daemon
# has not released yet.
MAX_SUBS = N_SUBS + 100
# The event log keeps every event of the test (about 600,000; the default,
# 100,000, is 5 s at 20,000 events/s): the reading subscribers may fall
# behind while the daemon is overloaded, and must still get every event of
# their jobs, late.
EVENT_LOG = 2000000
# Loose bounds for a loaded 2-core CI machine; the real figures are printed.
# The engine's own target is p99 < 2 ms at 10,000 jobs/s (tools/bench); the
# share of runs later than that is printed too.
TARGET_P99_US = 2000
# Alone, the p99 was 5-12 ms while the event log's writer committed back to
# back (~500-800 fdatasync/s: in a VM, flush storms stall every vCPU for up
# to ~15 ms at the host's 100 ms accounting period), 0.5-1.5 ms with those
# commits batched over 10 ms (2.7 ms, and up to ~50 ms before, with other
# loads on the machine).
BASE_P50_MAX_MS, BASE_P99_MAX_MS = 250.0, (1500.0 if SANITIZED else 500.0)  # 10,000 jobs/s alone
CHURN_P50_MAX_MS, CHURN_P99_MAX_MS = 3000.0, 8000.0  # and 500 churning subscribers
# Event delivery to a reading subscriber (arrival - event time), without and
# with the churn: tens of ms on a quiet machine; a p50 of seconds meant a
# daemon matching every event against every subscriber (the p99 with the
# churn also counts a reader that this busy process let fall behind, cut
# and resumed: printed, not asserted).
BASE_DELIVERY_P99_MAX_MS = 5000.0
# With the churn: 0.4-3.0 s here (the churn's clients and the daemon, whose
# one pump thread feeds every stream, share the 2 cores; churn.py at nice
# 10 gave 0.16-5.3 s and made the churn's own workers seconds late).
CHURN_DELIVERY_P50_MAX_MS = 6000.0
PEAK_RSS_MAX_MB = 768.0
RSS_GROWTH_MAX_MB = 128.0  # over the second half of the churn

NOOP = "/nonexistent/apsd-load-noop"  # START_FAILED without a fork
SIDE_CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "side_clients.py")
TERMINAL = {ET.Value("EVENT_TYPE_JOB_EXECUTED"), ET.Value("EVENT_TYPE_JOB_ERROR"),
            ET.Value("EVENT_TYPE_JOB_MISSED")}
SUBMITTED = ET.Value("EVENT_TYPE_JOB_SUBMITTED")


def job_id(i):
    return "j%05d" % i


def lateness(events, w0, w1):
    """Lateness lists (microseconds, sorted) of the runs scheduled in
    [w0, w1): JOB_SUBMITTED time - scheduled time (firing), and the run's
    start time - scheduled time (from its JOB_EXECUTED/JOB_ERROR outcome)."""
    fire, start = [], []
    lo, hi = w0 * 1e6, w1 * 1e6
    for e in events:
        if e.type == SUBMITTED:
            for t in e.scheduled_run_times:
                if lo <= us(t) < hi:
                    fire.append(us(e.time) - us(t))
        elif e.type in TERMINAL and e.HasField("outcome") and e.outcome.HasField("start_time"):
            srt = us(e.scheduled_run_times[0])
            if lo <= srt < hi:
                start.append(us(e.outcome.start_time) - srt)
    return sorted(fire), sorted(start)


def loop_sched(pid):
    """The aps-loop thread's scheduling policy, as the kernel reports it
    (the daemon asks for SCHED_FIFO 10 while it waits: --loop-priority)."""
    got = thread_sched(pid, "aps-loop")
    if got is None:
        return "not found"
    return "SCHED_FIFO %d" % got[1] if got[0] == 1 else "normal (policy %d)" % got[0]


class StreamReader:
    """Reads one SubscribeEvents stream on a thread, keeping every event,
    when it arrived (delivery delay: arrival - event time), and the newest
    sequence the daemon examined for it (events and bookmarks).

    `open_stream(after)` opens the stream (after: None, or the sequence to
    resume after). A reader the daemon cut as too slow (this process may
    be starved of CPU for a moment: the daemon feeds it as fast as events
    happen) resumes with after_sequence, as clients are told to: nothing is
    lost (the event log keeps the whole test). The resumes are counted."""

    MAX_RESUMES = 50

    def __init__(self, open_stream, name):
        self.open_stream = open_stream
        self.stream = open_stream(None)
        self.name = name
        self.events = []
        self.delays = []  # microseconds
        self.gaps = []
        self.examined = 0
        self.resumes = 0
        self.error = None
        self.closing = False
        self.lock = threading.Lock()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while True:
            try:
                for item in self.stream:
                    k = item.WhichOneof("item")
                    if k == "event":
                        self.events.append(item.event)
                        self.delays.append(time.time() * 1e6 - us(item.event.time))
                        self.examined = max(self.examined, item.event.sequence)
                    elif k == "bookmark":
                        self.examined = max(self.examined, item.bookmark.sequence)
                    elif k == "gap":
                        self.gaps.append(item.gap)
                return
            except grpc.RpcError as e:
                with self.lock:
                    cut = (not self.closing and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                           and "after_sequence" in (e.details() or "")
                           and self.resumes < self.MAX_RESUMES)
                    if cut:
                        self.resumes += 1
                        self.stream = self.open_stream(self.examined)
                if not cut:
                    self.error = e
                    return

    def close(self):
        with self.lock:
            self.closing = True
            self.stream.cancel()
        self.th.join(timeout=30)


class FiringLoadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="apsd-load-")
        conf = os.path.join(cls.tmp, "apsd.ini")
        with open(conf, "w") as f:
            # The default executors, with room for every remote run leased at
            # once (the default is 10).
            f.write("[scheduler]\nevent_max_count = %d\n"
                    "[executor default]\ntype = processpool\n"
                    "[executor workers]\ntype = workers\nmax_workers = 1000\n" % EVENT_LOG)
        cls.d = Daemon(cls.tmp, ["--config", conf, "--heartbeat", "1", "--max-subscribers", str(MAX_SUBS),
                                 "--subscriber-queue", str(SUB_QUEUE)])
        cls.d.start()
        cls.s = cls.d.sched
        cls.rss = RssSampler(cls.d)
        cls.figures = {}

    @classmethod
    def tearDownClass(cls):
        cls.rss.stop()
        st = cls.d.status()
        rc = cls.d.stop()
        log = cls.d.log_text()
        if os.environ.get("LOAD_KEEP"):
            print("load: kept %s" % cls.tmp, flush=True)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        print("load: daemon exit status %r, peak RSS (VmHWM) %.1f MB" % (rc, mib(st.get("VmHWM", 0))),
              flush=True)
        if rc != 0:
            raise AssertionError("apsd exited with %r:\n%s" % (rc, log))

    # ---- helpers ----------------------------------------------------------------------

    def add_jobs(self, jobs):
        """AddJob for each job, 128 in flight; returns the seconds taken."""
        t0 = time.time()
        futs = []
        for job in jobs:
            futs.append(self.s.AddJob.future(pb.AddJobRequest(job=job), timeout=120))
            if len(futs) >= 128:
                for f in futs:
                    f.result()
                futs = []
        for f in futs:
            f.result()
        return time.time() - t0

    def list_all(self):
        jobs, token = [], ""
        for _ in range(1000):
            r = self.s.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token, view=pb.JOB_VIEW_FULL),
                                timeout=60)
            jobs += r.jobs
            token = r.next_page_token
            if not token:
                return jobs
        raise AssertionError("ListJobs did not end")

    def executors_idle(self):
        # (apsd leaves ExecutorInfo.running/pending at 0 for now: the job
        # records' running_instances are checked as well.)
        info = self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        return all(e.running == 0 and e.pending == 0 for e in info.executors), info

    # ---- the test -----------------------------------------------------------------------

    def test_1_fire_rate_under_subscriber_churn(self):
        t_test = time.time()
        base = math.ceil(time.time()) + 3 + N_JOBS / 1500.0  # after the adds, with margin
        grace = pb.MisfireGraceTime(unlimited=True)
        jobs = [pb.Job(id=job_id(i), jobstore="memory", coalesce=False, max_instances=100,
                       misfire_grace_time=grace,
                       trigger=pb.Trigger(interval=pb.IntervalTrigger(seconds=1, start_date=ts(base + i / N_JOBS))),
                       target=pb.Target(command=pb.CommandTarget(argv=[NOOP])))
                for i in range(N_JOBS)]
        jobs += [pb.Job(id="r%03d" % i, jobstore="memory", coalesce=False, max_instances=100,
                        misfire_grace_time=grace,
                        trigger=pb.Trigger(interval=pb.IntervalTrigger(
                            seconds=1, start_date=ts(base + (i + 0.5) / N_REMOTE))),
                        target=pb.Target(remote=pb.RemoteTarget(task="load:noop", queue="loadq")))
                 for i in range(N_REMOTE)]
        # The readers subscribe first: they see every event of their jobs.
        sample_ids = [job_id(i) for i in range(0, N_JOBS, N_JOBS // N_SAMPLE)][:N_SAMPLE]
        remote_ids = ["r%03d" % i for i in range(N_REMOTE)]
        t_end = time.time() + 600

        def opener(ids):
            def open_stream(after):
                req = pb.SubscribeEventsRequest(job_ids=ids, send_bookmarks=True)
                if after is not None:
                    req.after_sequence = after
                return self.s.SubscribeEvents(req, timeout=max(1.0, t_end - time.time()))
            return open_stream

        sample = StreamReader(opener(sample_ids), "sample")
        remote = StreamReader(opener(remote_ids), "remote")
        added = self.add_jobs(jobs)
        added_at = time.time()
        print("load: %d jobs added in %.2f s (%.0f/s, memory store)" % (len(jobs), added, len(jobs) / added),
              flush=True)
        start = max(base, added_at)
        # Baseline: 10,000 jobs/s, the two readers, one worker (a process of
        # its own, as every client but the readers: side_clients.py).
        base_w = (start + 2, start + 2 + BASELINE)
        worker = subprocess.Popen([sys.executable, SIDE_CLIENTS, "drain", str(self.d.port), str(base_w[1])],
                                  stdout=subprocess.PIPE, text=True)
        cpu = [(time.time(), self.d.cpu_seconds())]
        while time.time() < base_w[1]:
            time.sleep(0.05)
        try:
            out, _ = worker.communicate(timeout=90)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        self.assertEqual(worker.returncode, 0, "the baseline worker failed (exit %r)" % worker.returncode)
        base_done = [int(out.split()[-1])]
        rss_base = self.d.status().get("VmRSS", 0)
        cpu.append((time.time(), self.d.cpu_seconds()))
        phases = {"adds+baseline": time.time() - t_test}

        churn_start = time.time()
        cpu.append((churn_start, self.d.cpu_seconds()))
        churn_seconds = WARMUP + WINDOW
        churn_w = (churn_start + WARMUP, churn_start + churn_seconds)
        # (the child keeps its own copies of the files: ours close at once)
        with open(os.path.join(self.tmp, "churn.out"), "wb") as out, \
                open(os.path.join(self.tmp, "churn.err"), "wb") as err:
            churn = subprocess.Popen(
                [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "churn.py"),
                 "--port", str(self.d.port), "--subs", str(N_SUBS), "--workers", str(N_WORKERS),
                 "--queue", "loadq", "--lease", str(LEASE), "--seconds", str(churn_seconds),
                 "--n-jobs", str(N_JOBS), "--channels", "10", "--life-min", str(LIFE_MIN),
                 "--life-max", str(LIFE_MAX)],
                stdout=out, stderr=err)
        # Subscribers that never read: one every 2 s, all events (20,000/s),
        # until 3 s before the churn's end (enough events follow to fill its
        # queue); side_clients.py then reads what each got and how it ended.
        stuck_p = subprocess.Popen([sys.executable, SIDE_CLIENTS, "stuck", str(self.d.port),
                                    str(churn_w[1] - 3), str(churn_w[1])],
                                   stdout=subprocess.PIPE, text=True)
        try:
            rss_mid = None
            while time.time() < churn_w[1]:
                time.sleep(min(0.5, max(0.0, churn_w[1] - time.time())))
                if rss_mid is None and time.time() >= churn_w[0] + WINDOW / 2:
                    rss_mid = self.d.status().get("VmRSS", 0)
            rss_end = self.d.status().get("VmRSS", 0)
            cpu.append((time.time(), self.d.cpu_seconds()))
            load_avg = os.getloadavg()[0]
            churn.wait(timeout=120)
            stuck_out, _ = stuck_p.communicate(timeout=90)
        finally:
            for p in (churn, stuck_p):
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
        with open(os.path.join(self.tmp, "churn.err"), "rb") as f:
            err = f.read().decode("utf-8", "replace")
        self.assertEqual(churn.returncode, 0, err[-3000:])
        with open(os.path.join(self.tmp, "churn.out"), "rb") as f:
            c = json.loads(f.read().decode().strip().splitlines()[-1])
        self.assertTrue(self.d.alive(), self.d.log_text())
        phases["churn"] = time.time() - churn_start
        t_phase = time.time()

        # Each stuck subscriber was cut with RESOURCE_EXHAUSTED after at most
        # SUB_QUEUE events (plus what the transport buffered).
        # (The scheduler still fires: a cut needs events to arrive.)
        self.assertEqual(stuck_p.returncode, 0, "the stuck subscribers' process failed (exit %r)" % stuck_p.returncode)
        stuck = json.loads(stuck_out.strip().splitlines()[-1])
        cut = at_limit = 0
        stuck_bad = []
        for got, code, details in stuck:
            if code == "NOT_ENDED":
                stuck_bad.append("not cut")
            elif code == "RESOURCE_EXHAUSTED" and "too many subscribers" in details:
                at_limit += 1  # refused at the limit (streams not yet released): not stuck at all
            elif code != "RESOURCE_EXHAUSTED" or "after_sequence" not in details:
                stuck_bad.append("%s: %s" % (code, details))
            elif got > SUB_QUEUE + 2000:  # the queue plus the small receive window
                stuck_bad.append("cut after %d events" % got)
            else:
                cut += 1

        phases["stuck checks"] = time.time() - t_phase
        t_phase = time.time()
        # Quiesce: no new fires, every run finished and recorded. The remote
        # runs left in the queue (abandoned, or never taken) are drained by
        # one worker.
        self.s.PauseScheduler(pb.PauseSchedulerRequest(), timeout=T)
        drained = base_done[0]
        end = time.time() + 90
        while True:
            drained += self.drain_remote(0.5)
            idle, info = self.executors_idle()
            busy = [j.id for j in self.list_all() if j.running_instances or j.queued_runs] if idle else ["?"]
            if not busy or time.time() > end:
                break
        self.assertEqual(busy[:10], [], str(info))
        # The readers catch up: every event up to the newest was examined
        # for them (bookmarks every idle second say so).
        t_catch = time.time()
        last = self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T).event_log.last_sequence
        end = time.time() + 120
        while (sample.examined < last or remote.examined < last) and time.time() < end:
            time.sleep(0.1)
        # (Asserted after the figures are printed.)
        caught_up = [(r.name, r.examined, last, r.error and "%s: %s" % (r.error.code(), r.error.details()))
                     for r in (sample, remote) if r.examined < last]
        phases["readers catching up"] = time.time() - t_catch
        sample.close()
        remote.close()
        rss_quiet = self.d.status().get("VmRSS", 0)
        phases["quiesce"] = time.time() - t_phase

        # ---- figures first (printed whatever the checks say) ----
        all_jobs = self.list_all()
        total_runs = total_fires = 0
        bad = []
        for j in all_jobs:
            start_us = us(j.trigger.interval.start_date)
            fires = (us(j.next_run_time) - start_us) // 1000000
            st = j.stats
            total_runs += st.runs
            total_fires += fires
            if (st.runs != fires or st.misses or st.max_instance_skips or st.coalesced
                    or j.running_instances or j.queued_runs):
                bad.append("%s: fires %d runs %d misses %d skips %d coalesced %d running %d" % (
                    j.id, fires, st.runs, st.misses, st.max_instance_skips, st.coalesced, j.running_instances))
        blat, bstart = lateness(sample.events, *base_w)
        if os.environ.get("LOAD_DUMP"):
            # Diagnosis: each firing (scheduled time in us, lateness in us).
            with open(os.environ["LOAD_DUMP"], "w") as f:
                json.dump({"base": list(base_w), "churn": list(churn_w), "fires": [
                    (us(t), us(e.time) - us(t)) for e in sample.events if e.type == SUBMITTED
                    for t in e.scheduled_run_times]}, f)
        lat, start_lat = lateness(sample.events, *churn_w)
        rlat = lateness(remote.events, *churn_w)[1]
        rexec = sum(1 for e in remote.events if e.type == ET.Value("EVENT_TYPE_JOB_EXECUTED"))
        rexp = sum(1 for e in remote.events if e.type == ET.Value("EVENT_TYPE_JOB_ERROR")
                   and e.outcome.status == pb.RUN_STATUS_LEASE_EXPIRED)
        st = self.d.status()
        hwm = st.get("VmHWM", 0)
        ms = lambda v, p: percentile(v, p) / 1000.0  # noqa: E731
        # Runs later than the engine's p99 target (2 ms), in % of the runs.
        over = lambda v: 100.0 * sum(1 for x in v if x > TARGET_P99_US) / max(1, len(v))  # noqa: E731
        print("load: %d subscribers churning (%d connects, %d cancelled, %d ended by deadline, %d channels "
              "closed under their streams, %d RESOURCE_EXHAUSTED at the limit), %d never-reading subscribers "
              "cut (%d refused at the limit), %d jobs/s for %.0f s" % (
                  N_SUBS, c.get("connects", 0), c.get("cancels", 0), c.get("end_DEADLINE_EXCEEDED", 0),
                  c.get("channels_killed", 0), c.get("end_RESOURCE_EXHAUSTED", 0), cut, at_limit, N_JOBS,
                  WARMUP + WINDOW), flush=True)
        print("load: baseline, %d jobs/s alone for %.0f s: firing lateness (JOB_SUBMITTED time - scheduled "
              "time, %d runs of %d sampled jobs) p50 %.2f ms p99 %.2f ms max %.2f ms (%.2f%% of runs > 2 ms); "
              "executor start lateness p50 %.2f ms p99 %.2f ms" % (
                  N_JOBS, BASELINE, len(blat), len(sample_ids), ms(blat, 50), ms(blat, 99), ms(blat, 100),
                  over(blat), ms(bstart, 50), ms(bstart, 99)),
              flush=True)
        print("load: with the churn, %d jobs/s for %.0f s: firing lateness (%d runs) p50 %.2f ms p99 %.2f ms "
              "max %.2f ms (%.2f%% of runs > 2 ms); executor start lateness p50 %.2f ms p99 %.2f ms" % (
                  N_JOBS, WINDOW, len(lat), ms(lat, 50), ms(lat, 99), ms(lat, 100), over(lat), ms(start_lat, 50),
                  ms(start_lat, 99)), flush=True)
        slices = []
        for k in range(int(WARMUP + WINDOW) // 3):
            part = lateness(sample.events, churn_start + 3 * k, churn_start + 3 * k + 3)[0]
            slices.append("%.0f" % ms(part, 50) if part else "-")
        rss_series = []
        for k in range(int(WARMUP + WINDOW) // 3 + 1):
            t = churn_start + 3 * k
            pts = [(r, a) for (ts_, r, a) in self.rss.samples if t - 1.5 <= self.rss.t0 + ts_ < t + 1.5]
            rss_series.append("%.0f/%.0f" % (mib(max(pts)[0]), mib(max(pts)[1])) if pts else "-")
        print("load: during the churn, every 3 s: firing lateness p50 (ms) %s; RSS/anon (MB) %s" % (
            " ".join(slices), " ".join(rss_series)), flush=True)
        dl = sorted(d for e, d in zip(sample.events, sample.delays) if churn_w[0] * 1e6 <= us(e.time) < churn_w[1] * 1e6)
        bdl = sorted(d for e, d in zip(sample.events, sample.delays) if base_w[0] * 1e6 <= us(e.time) < base_w[1] * 1e6)
        print("load: event delivery delay to the sampling reader (arrival - event time): baseline p50 %.1f ms "
              "p99 %.1f ms; with the churn p50 %.1f ms p99 %.1f ms max %.1f ms (readers cut as too slow and "
              "resumed: sample %d, remote %d)" % (
                  ms(bdl, 50), ms(bdl, 99), ms(dl, 50), ms(dl, 99), ms(dl, 100), sample.resumes,
                  remote.resumes), flush=True)
        print("load: %d/%d fire times run (all %d jobs, from their stats), %d sampled events read; remote: "
              "%d dispatches, %d Acquire streams cancelled, %d completed by churning workers + %d drained at "
              "the end = %d JOB_EXECUTED, %d lease-expired, dispatch lateness p50 %.1f ms" % (
                  total_runs, total_fires, len(all_jobs), len(sample.events), c.get("dispatches", 0),
                  c.get("acquire_cancels", 0), c.get("completed", 0), drained, rexec, rexp, ms(rlat, 50)),
              flush=True)
        print("load: RSS %.1f MB after the baseline, %.1f MB mid-churn, %.1f MB at its end, %.1f MB quiet "
              "(anon %.1f MB, file %.1f MB); peak RSS (VmHWM) %.1f MB" % (
                  mib(rss_base), mib(rss_mid or 0), mib(rss_end), mib(rss_quiet),
                                             mib(st.get("RssAnon", 0)), mib(st.get("RssFile", 0)), mib(hwm)),
              flush=True)

        rate = lambda a, b: 100.0 * (b[1] - a[1]) / max(1e-3, b[0] - a[0])  # noqa: E731
        print("load: daemon CPU (all threads, %% of one core): baseline %.0f%%, with the churn %.0f%%; churn "
              "clients received %d events; machine load average %.1f at the churn's end (%d cores)" % (
                  rate(cpu[0], cpu[1]), rate(cpu[2], cpu[3]), c.get("events", 0), load_avg,
                  os.cpu_count() or 0), flush=True)
        print("load: phases (s): %s" % ", ".join("%s %.1f" % kv for kv in phases.items()), flush=True)
        print("load: scheduler loop thread: %s" % loop_sched(self.d.proc.pid), flush=True)

        self.assertEqual(caught_up, [], "readers that did not catch up (name, examined, last, error)")
        # ---- nothing lost: every job, from its stats ----
        self.assertEqual(len(all_jobs), N_JOBS + N_REMOTE)
        self.assertEqual(bad[:20], [])
        # ---- nothing lost: every event of the sampled jobs ----
        self.assertEqual(sample.gaps, [], "the sample subscriber fell behind the event log")
        self.assertEqual(sample.error.code(), grpc.StatusCode.CANCELLED, str(sample.error))
        self.check_events(sample, sample_ids, all_jobs)
        self.check_remote(remote, remote_ids, all_jobs, c, drained)
        # ---- the rest ----
        self.assertEqual(c["problems"], [])
        # A real churn: each subscriber reconnects after a life of LIFE_MIN to
        # LIFE_MAX s; at least half the connects that makes in the time.
        self.assertGreater(c.get("connects", 0), N_SUBS * churn_seconds / ((LIFE_MIN + LIFE_MAX) / 2) / 2)
        self.assertEqual(stuck_bad, [], "never-reading subscribers")
        self.assertGreater(cut, 0)
        self.assertGreater(len(blat), 0)
        self.assertGreater(len(lat), 0)
        self.assertLess(ms(bdl, 99), BASE_DELIVERY_P99_MAX_MS)
        self.assertLess(ms(dl, 50), CHURN_DELIVERY_P50_MAX_MS)
        self.assertLess(ms(blat, 50), BASE_P50_MAX_MS)
        self.assertLess(ms(blat, 99), BASE_P99_MAX_MS)
        self.assertLess(ms(lat, 50), CHURN_P50_MAX_MS)
        self.assertLess(ms(lat, 99), CHURN_P99_MAX_MS)
        self.assertLess(mib(hwm), PEAK_RSS_MAX_MB)
        if rss_mid:
            self.assertLess(mib(rss_end - rss_mid), RSS_GROWTH_MAX_MB)

    def drain_remote(self, seconds=1.0):
        """Completes every remote run of `loadq` dispatched for a while
        (up to 64 in flight); returns the count."""
        return side_clients.complete_dispatched(self.d.workers, time.time() + seconds)

    def check_events(self, reader, ids, all_jobs):
        """Every fire time of each sampled job has exactly one JOB_SUBMITTED
        and one terminal event."""
        by_id = {j.id: j for j in all_jobs}
        subm = {}    # job -> [scheduled us]
        runs = {}    # run_id -> (job, [scheduled us])
        ends = {}    # (run_id, scheduled us) -> count
        seq = 0
        for e in reader.events:
            self.assertGreater(e.sequence, seq)
            seq = e.sequence
            self.assertIn(e.job_id, by_id)
            if e.type == SUBMITTED:
                srts = [us(t) for t in e.scheduled_run_times]
                subm.setdefault(e.job_id, []).extend(srts)
                self.assertNotIn(e.run_id, runs)
                runs[e.run_id] = (e.job_id, srts)
            elif e.type in TERMINAL:
                self.assertEqual(len(e.scheduled_run_times), 1)
                k = (e.run_id, us(e.scheduled_run_times[0]))
                ends[k] = ends.get(k, 0) + 1
        for jid in ids:
            j = by_id[jid]
            start_us = us(j.trigger.interval.start_date)
            want = list(range(start_us, us(j.next_run_time), 1000000))
            self.assertEqual(sorted(subm.get(jid, [])), want, jid)
        for run_id, (jid, srts) in runs.items():
            for srt in srts:
                self.assertEqual(ends.get((run_id, srt), 0), 1, "run %s of %s at %d" % (run_id, jid, srt))
        self.assertEqual(sum(ends.values()), sum(len(s) for _, s in runs.values()))

    def check_remote(self, reader, ids, all_jobs, c, drained):
        """Every remote run ends once: JOB_EXECUTED (completed by a worker)
        or JOB_ERROR RUN_STATUS_LEASE_EXPIRED (abandoned; not redelivered)."""
        self.assertEqual(reader.gaps, [])
        by_id = {j.id: j for j in all_jobs}
        runs, ends = {}, {}
        executed = expired = 0
        executed_runs = set()  # one Complete ends a run, with one event per run time
        for e in reader.events:
            if e.type == SUBMITTED:
                runs[e.run_id] = [us(t) for t in e.scheduled_run_times]
            elif e.type in TERMINAL:
                k = (e.run_id, us(e.scheduled_run_times[0]))
                ends[k] = ends.get(k, 0) + 1
                if e.type == ET.Value("EVENT_TYPE_JOB_EXECUTED"):
                    executed += 1
                    executed_runs.add(e.run_id)
                else:
                    self.assertEqual(e.type, ET.Value("EVENT_TYPE_JOB_ERROR"), str(e))
                    self.assertEqual(e.outcome.status, pb.RUN_STATUS_LEASE_EXPIRED, str(e))
                    expired += 1
        for jid in ids:
            j = by_id[jid]
            self.assertEqual(j.stats.runs, (us(j.next_run_time) - us(j.trigger.interval.start_date)) // 1000000)
        for run_id, srts in runs.items():
            for srt in srts:
                self.assertEqual(ends.get((run_id, srt), 0), 1, run_id)
        self.assertEqual(sum(ends.values()), sum(len(s) for s in runs.values()))
        self.assertEqual(len(executed_runs), c.get("completed", 0) + drained)
        self.assertGreaterEqual(expired, c.get("abandoned", 0) + c.get("complete_too_late", 0))
        self.assertEqual(c.get("redelivered", 0), 0)

    def fill_subscribers(self, limit):
        """Opens streams until one is refused; returns (open streams, error)."""
        held = []
        for _ in range(limit):
            st = self.s.SubscribeEvents(pb.SubscribeEventsRequest(
                types=[ET.Value("EVENT_TYPE_SCHEDULER_PAUSED")], send_bookmarks=True), timeout=120)
            try:
                item = next(st)  # an accepted stream starts with a bookmark
                self.assertEqual(item.WhichOneof("item"), "bookmark")
                held.append(st)
            except grpc.RpcError as e:
                return held, e
        return held, None

    def test_2_subscriber_limit(self):
        """Beyond --max-subscribers: RESOURCE_EXHAUSTED, and every slot of
        the streams that ended before (cancelled, cut, closed) is free."""
        # Paused (as test 1 leaves it): no event, so no stream can fall
        # behind and end by itself while the slots are counted.
        self.s.PauseScheduler(pb.PauseSchedulerRequest(), timeout=T)
        counts = []
        for _ in range(2):
            time.sleep(1.0)  # the pump releases streams cancelled just before
            held, err = self.fill_subscribers(MAX_SUBS + 10)
            try:
                self.assertIsNotNone(err, "no limit after %d subscribers" % len(held))
                self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, err.details())
                self.assertIn("too many subscribers", err.details())
                counts.append(len(held))
                # Still serving while full.
                self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
            finally:
                for st in held:
                    st.cancel()
        print("load: subscriber limit %d: %s streams accepted (before and after closing them), the next one "
              "RESOURCE_EXHAUSTED" % (MAX_SUBS, counts), flush=True)
        self.assertEqual(counts, [MAX_SUBS, MAX_SUBS], "subscriber slots leaked")
        self.s.ResumeScheduler(pb.ResumeSchedulerRequest(), timeout=T)


if __name__ == "__main__":
    unittest.main(verbosity=2)
