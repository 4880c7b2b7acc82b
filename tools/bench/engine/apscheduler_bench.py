#!/usr/bin/python3
"""APScheduler 3.9 baseline for tools/bench/engine (run with /usr/bin/python3).

  apscheduler_bench.py adds THREADS SECONDS sqlite|memory DIR [thread|gen]
      durable (SQLAlchemyJobStore on SQLite) or in-memory add_job calls per
      second from THREADS threads; prints "adds_per_s N". Ids "t<k>-<n>"
      (`thread`, the default) or none: APScheduler's uuid4().hex (`gen`)
  apscheduler_bench.py adds_multi THREADS,THREADS,... SECONDS sqlite|memory DIR RUNS [thread|gen]
      the same for each thread count, RUNS times (interleaved), in one
      process (one import); prints "adds threads=T run=R per_s=N" lines
  apscheduler_bench.py lateness JOBS SECONDS [WARMUP]
      JOBS interval jobs (seconds=1), start times spread over one second, a
      no-op function, MemoryJobStore, ThreadPoolExecutor(20); lateness =
      submit time - scheduled time from EVENT_JOB_SUBMITTED, over the runs
      scheduled in SECONDS whole seconds after WARMUP seconds (as
      bench_engine's window); prints "lateness_us p50 p99 max count
      expected submitted add_s" (count < expected: runs coalesced or not
      yet submitted 5 s after the window; submitted: every submission seen;
      add_s: time to add the jobs and start). APS_BENCH_DUMP=FILE also
      writes each sample of the window, "offset_us lateness_us" (offset of
      the scheduled time in the window), as bench_engine does.
"""
import os
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_SUBMITTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler


def noop():
    pass


def bench_adds(threads, seconds, kind, directory, ids="thread", quiet=False):
    if ids not in ("thread", "gen"):
        sys.exit("ids: thread or gen, not %r" % ids)
    if kind == "sqlite":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        path = os.path.join(directory, "jobs.sqlite")
        if os.path.exists(path):
            os.unlink(path)
        store = SQLAlchemyJobStore(url="sqlite:///" + path)
    else:
        store = MemoryJobStore()
    sched = BackgroundScheduler(jobstores={"default": store}, timezone=timezone.utc)
    sched.start(paused=True)
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def worker(k):
        n = 0
        far = datetime(2100, 1, 1, tzinfo=timezone.utc)
        while time.monotonic() < stop:
            sched.add_job(noop, "date", run_date=far, id="t%d-%d" % (k, n) if ids == "thread" else None)
            n += 1
        counts[k] = n

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    sched.shutdown(wait=False)
    if kind == "sqlite":
        store.engine.dispose()
    rate = sum(counts) / elapsed
    if not quiet:
        print("adds_per_s %.0f" % rate)
    return rate


def bench_adds_multi(thread_counts, seconds, kind, directory, runs, ids="thread"):
    for r in range(runs):
        for t in thread_counts:
            rate = bench_adds(t, seconds, kind, directory, ids, quiet=True)
            print("adds threads=%d run=%d per_s=%.0f" % (t, r, rate))
            sys.stdout.flush()


def bench_lateness(jobs, seconds, warmup):
    late = []
    lock = threading.Lock()
    # Adding the jobs takes a while with many: start them after it.
    start = datetime.now(timezone.utc) + timedelta(seconds=2 + jobs / 20000)
    start = start.replace(microsecond=0)
    window_from = start + timedelta(seconds=warmup)
    window_to = window_from + timedelta(seconds=seconds)

    submitted = [0]

    dump = [] if os.environ.get("APS_BENCH_DUMP") else None

    def on_submit(ev):
        now = datetime.now(timezone.utc)
        sched = ev.scheduled_run_times[-1]
        submitted[0] += 1
        if window_from <= sched < window_to:
            d = (now - sched).total_seconds()
            with lock:
                late.append(d)
                if dump is not None:
                    dump.append(((sched - window_from).total_seconds(), d))

    sched = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(20)},
        job_defaults={"misfire_grace_time": 3600, "coalesce": True, "max_instances": 1000},
        timezone=timezone.utc,
    )
    t0 = time.monotonic()
    for i in range(jobs):
        sched.add_job(noop, "interval", seconds=1,
                      start_date=start + timedelta(microseconds=i * 1000000 // jobs))
    sched.add_listener(on_submit, EVENT_JOB_SUBMITTED)
    sched.start()
    add_s = time.monotonic() - t0
    expected = jobs * seconds
    deadline = (window_to + timedelta(seconds=5)).timestamp()
    time.sleep(max(0.0, window_to.timestamp() - time.time()))
    while time.time() < deadline:
        with lock:
            if len(late) >= expected:
                break
        time.sleep(0.05)
    with lock:
        late = sorted(late)
        total = submitted[0]
        if dump is not None:
            with open(os.environ["APS_BENCH_DUMP"], "w") as f:
                for off, d in dump:
                    f.write("%d %d\n" % (off * 1e6, d * 1e6))
    if not late:
        print("lateness_us 0 0 0 0 %d %d %.1f" % (expected, total, add_s))
    else:
        p = lambda q: late[min(len(late) - 1, int(q * len(late)))]
        print("lateness_us %.0f %.0f %.0f %d %d %d %.1f" % (p(0.5) * 1e6, p(0.99) * 1e6,
                                                          late[-1] * 1e6, len(late), expected,
                                                          total, add_s))
    sys.stdout.flush()
    # shutdown() would wait for the scheduler's current pass over every
    # due job (tens of seconds when it is behind): the figure is out.
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "adds":
        bench_adds(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5],
                   sys.argv[6] if len(sys.argv) > 6 else "thread")
    elif sys.argv[1] == "adds_multi":
        bench_adds_multi([int(t) for t in sys.argv[2].split(",")], float(sys.argv[3]),
                         sys.argv[4], sys.argv[5], int(sys.argv[6]),
                         sys.argv[7] if len(sys.argv) > 7 else "thread")
    elif sys.argv[1] == "lateness":
        bench_lateness(int(sys.argv[2]), int(sys.argv[3]),
                       int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    else:
        sys.exit(__doc__)
