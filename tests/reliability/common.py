"""What the reliability tests share beyond tests/harness/apsd_harness.py (the
real apsd on a free 127.0.0.1 port, its readiness wait, stop, log; the
generated modules on sys.path): a Daemon whose kill() returns the kill's
time, timestamps in microseconds, the event log read up to now, every job
through all pages. Every wait is bounded in count and time."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import apsd_harness  # noqa: E402
from apsd_harness import SANITIZED, wait_for  # noqa: E402,F401 (for the tests)

apsd_harness.add_proto_path()

import grpc  # noqa: E402,F401 (for the tests)
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2  # noqa: E402,F401 (field_mask_pb2: for the tests)
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402

T = 10  # seconds: the deadline of every RPC
ET = pb.EventType


def ts(seconds):
    """A Timestamp at `seconds` (float, epoch), in whole microseconds (the
    engine's resolution)."""
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(round(seconds * 1e6)))
    return t


def secs(t):
    """A Timestamp as float seconds."""
    return t.seconds + t.nanos / 1e9


def dur(seconds):
    d = duration_pb2.Duration()
    d.FromMicroseconds(int(round(seconds * 1e6)))
    return d


class Daemon(apsd_harness.Daemon):
    """apsd over `data_dir`, which the test owns and removes: the store in
    data_dir/store (or `store`: the disk-full test's is on a tmpfs), the log
    data_dir/apsd.log, appended to across the many restarts. start_time is
    when the last start() spawned it (the crash test's restart time);
    kill() is SIGKILL and returns the kill's time (time.time())."""

    def __init__(self, data_dir, store=None, extra=()):
        super().__init__(data_dir, extra, store=store)

    def kill(self, timeout=10):
        t = time.time()
        super().kill(timeout)
        return t


def read_events(sched, after, timeout=30):
    """Every event of the log after sequence `after`, up to the newest one
    when the call is made (the replay ends with a caught-up bookmark).
    Returns (events, gap or None)."""
    stream = sched.SubscribeEvents(pb.SubscribeEventsRequest(after_sequence=after, send_bookmarks=True),
                                   timeout=timeout)
    events, gap = [], None
    try:
        for item in stream:
            kind = item.WhichOneof("item")
            if kind == "event":
                events.append(item.event)
            elif kind == "gap":
                gap = item.gap
            elif kind == "bookmark" and item.bookmark.caught_up:
                break
    finally:
        stream.cancel()
    return events, gap


def list_jobs(sched, view=pb.JOB_VIEW_BASIC):
    """Every job, through all pages (bounded)."""
    jobs, token = [], ""
    for _ in range(10000):
        r = sched.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token, view=view), timeout=T)
        jobs.extend(r.jobs)
        token = r.next_page_token
        if not token:
            return jobs
    raise AssertionError("ListJobs did not end")


def run_tests(figures, argv=None):
    """unittest.main over argv (default sys.argv), then the figure lines the
    tests appended to `figures`, one per line after the report (tools/test
    prints them); exits 0 if every test passed."""
    prog = unittest.main(argv=argv or sys.argv, verbosity=2, exit=False)
    sys.stderr.flush()
    for line in figures:
        print(line, flush=True)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
