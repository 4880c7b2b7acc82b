"""Shared helpers of the reliability tests: find the daemon and the generated
Python modules in the runfiles (or in bazel-bin when run by hand), start and
kill the real apsd, read the durable event log. The Daemon pattern is the
one of tests/e2e/test_service.py, plus SIGKILL and a fast readiness wait.
Every wait is bounded in count and time."""
import os
import signal
import socket
import subprocess
import sys
import time


def find_runfile(rel):
    """A file of the runfiles tree; by hand (no TEST_SRCDIR), bazel-bin."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    bases = [os.environ.get("TEST_SRCDIR", ""), os.getcwd(), root,
             os.path.join(root, "bazel-bin"), os.path.join(root, "bazel-out", "k8-fastbuild", "bin")]
    for base in bases:
        if not base:
            continue
        for cand in (os.path.join(base, rel), os.path.join(base, "apsd", rel)):
            if os.path.exists(cand):
                return cand
    raise FileNotFoundError(rel)


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    find_runfile("proto/apsd/v1/scheduler_pb2.py")))))

import grpc  # noqa: E402
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2  # noqa: E402,F401 (field_mask_pb2: for the tests)
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402
from apsd.v1 import scheduler_pb2_grpc  # noqa: E402

APSD = os.environ.get("APSD_BIN") or find_runfile("service/apsd")
SANITIZED = os.environ.get("APSD_SANITIZED") == "1"
T = 10  # seconds: the deadline of every RPC
ET = pb.EventType


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class Daemon:
    """One apsd process on a free 127.0.0.1 port over `store_dir`."""

    def __init__(self, store_dir, log_path, extra=()):
        self.store_dir = store_dir
        self.log_path = log_path
        self.extra = list(extra)
        self.proc = None
        self.channel = None
        self.log = None
        self.start_time = None  # when the process was spawned (time.time())

    def start(self, timeout=20):
        for _ in range(5):
            self.port = free_port()
            self.log = open(self.log_path, "ab")
            self.start_time = time.time()
            self.proc = subprocess.Popen(
                [APSD, "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.store_dir] + self.extra,
                stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
            # Poll the port rather than trusting grpc's reconnect backoff
            # (its first retry comes 1 s after a refused connect).
            end = time.time() + timeout
            up = False
            while time.time() < end and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        up = True
                        break
                except OSError:
                    time.sleep(0.005)
            if not up:
                self.log.close()
                if self.proc.poll() is not None:
                    if b"address already in use" in self.log_tail().lower():
                        continue  # the port was taken meanwhile: try another
                    raise RuntimeError("apsd exited with %r:\n%s" % (self.proc.returncode, self.log_text()))
                self.kill()
                raise RuntimeError("apsd did not listen within %ss:\n%s" % (timeout, self.log_text()))
            self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
            self.sched = scheduler_pb2_grpc.SchedulerStub(self.channel)
            return self
        raise RuntimeError("apsd did not start:\n" + self.log_text())

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=4000):
        return self.log_text()[-n:].encode()

    def kill(self):
        """SIGKILL, then wait for the exit. Returns the kill's time."""
        t = time.time()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap(10)
        return t

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the daemon and waits; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self._reap(timeout)

    def _reap(self, timeout):
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            rc = "timeout"
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.log is not None:
            self.log.close()
            self.log = None
        self.proc = None
        return rc


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


def wait_for(pred, timeout, step=0.02):
    end = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= end:
            return v
        time.sleep(step)
