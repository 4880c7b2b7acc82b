"""Shared pieces of the load tests: the real apsd on a free 127.0.0.1 port
with a temporary data directory (the pattern of tests/e2e/test_service.py,
copied), its memory figures from /proc, and small helpers. Every wait is
bounded in count and time."""
import os
import signal
import socket
import subprocess
import sys
import time


def find_runfile(rel):
    for base in (os.environ.get("TEST_SRCDIR", ""), os.getcwd()):
        for cand in (os.path.join(base, rel), os.path.join(base, "apsd", rel)):
            if os.path.exists(cand):
                return cand
    raise FileNotFoundError(rel)


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    find_runfile("proto/apsd/v1/scheduler_pb2.py")))))

import grpc  # noqa: E402
from google.protobuf import duration_pb2, timestamp_pb2  # noqa: E402
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402
from apsd.v1 import scheduler_pb2_grpc  # noqa: E402
from apsd.v1 import workers_pb2 as wpb  # noqa: E402,F401 (for the test modules)
from apsd.v1 import workers_pb2_grpc  # noqa: E402

# APSD_BIN runs the tests against another build of the daemon.
APSD = os.environ.get("APSD_BIN") or find_runfile("service/apsd")
T = 20  # seconds: the deadline of every unary RPC
ET = pb.EventType
# ASan runs (bazel test --config=asan) set this: loads scale down.
SANITIZED = os.environ.get("APSD_SANITIZED", "") not in ("", "0")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def channel(port):
    # Each channel is its own TCP connection (no subchannel sharing between
    # channels of different options), so load spreads like separate clients.
    return grpc.insecure_channel("127.0.0.1:%d" % port, options=[
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", 64 << 20)])


class Daemon:
    """One apsd process."""

    def __init__(self, data_dir, extra=()):
        self.data_dir = data_dir
        self.extra = list(extra)
        self.port = None
        self.proc = None
        self.log_path = os.path.join(data_dir, "apsd.log")

    def start(self):
        for _ in range(5):
            self.port = free_port()
            self.log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [APSD, "--listen", "127.0.0.1:%d" % self.port, "--data-dir",
                 os.path.join(self.data_dir, "store")] + self.extra,
                stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
            self.channel = channel(self.port)
            try:
                grpc.channel_ready_future(self.channel).result(timeout=30)
            except grpc.FutureTimeoutError:
                self.channel.close()
                if self.proc.poll() is not None:
                    self.log.close()
                    continue  # the port was taken meanwhile: try another
                self.stop()
                raise
            self.sched = scheduler_pb2_grpc.SchedulerStub(self.channel)
            self.workers = workers_pb2_grpc.WorkersStub(self.channel)
            return self
        raise RuntimeError("apsd did not start:\n" + self.log_text())

    def log_text(self, tail=6000):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-tail:]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        """VmRSS and VmHWM (peak RSS) in KiB, from /proc."""
        out = {}
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                        out[k] = int(v.split()[0])
        except (OSError, ValueError, AttributeError):
            pass
        return out

    def cpu_seconds(self):
        """User + system CPU time the daemon used so far (all threads)."""
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            return (int(rest[11]) + int(rest[12])) / float(os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError, AttributeError):
            return 0.0

    def fds(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except OSError:
            return -1

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            rc = "timeout"
        self.channel.close()
        self.log.close()
        self.proc = None
        return rc


class RssSampler:
    """Samples a daemon's VmRSS on a thread; VmHWM gives the true peak."""

    def __init__(self, daemon, period=0.1):
        import threading
        self.d = daemon
        self.period = period
        self.samples = []  # (seconds since t0, VmRSS KiB, RssAnon KiB)
        self.t0 = time.time()
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop_ev.wait(self.period):
            st = self.d.status()
            if "VmRSS" in st:
                self.samples.append((time.time() - self.t0, st["VmRSS"], st.get("RssAnon", 0)))

    def stop(self):
        self.stop_ev.set()
        self.th.join(timeout=5)

    def peak(self):
        return max((r for _, r, _ in self.samples), default=0)


def ts(seconds_float):
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(round(seconds_float * 1e9)))
    return t


def dur(seconds_float):
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(seconds_float * 1e9)))
    return d


def us(timestamp):
    """A Timestamp as integer microseconds."""
    return timestamp.seconds * 1000000 + timestamp.nanos // 1000


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def mib(kib):
    return kib / 1024.0


def children_of(pid):
    """Pids whose parent is pid, with their state letter, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        if len(rest) > 2 and int(rest[1]) == pid:
            out.append((int(name), rest[0]))
    return out


def procs_in_group(pgid):
    """Pids of process group pgid, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        if len(rest) > 2 and int(rest[2]) == pgid:
            out.append(int(name))
    return out
