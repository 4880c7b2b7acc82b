"""Shared pieces of the load tests: the real apsd on a free 127.0.0.1 port
with a temporary data directory (tests/harness/apsd_harness.py), its memory
figures from /proc, and small helpers. Every wait is bounded in count and
time."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
import apsd_harness  # noqa: E402
from apsd_harness import APSD, SANITIZED, find_runfile, free_port, thread_sched  # noqa: E402,F401 (for the test modules)

apsd_harness.add_proto_path()

import grpc  # noqa: E402
from google.protobuf import duration_pb2, timestamp_pb2  # noqa: E402
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402
from apsd.v1 import scheduler_pb2_grpc  # noqa: E402,F401 (for the test modules)
from apsd.v1 import workers_pb2 as wpb  # noqa: E402,F401 (for the test modules)
from apsd.v1 import workers_pb2_grpc  # noqa: E402,F401 (for the test modules)

T = 20  # seconds: the deadline of every unary RPC
ET = pb.EventType
# Each channel is its own TCP connection (no subchannel sharing between
# channels of different options), so load spreads like separate clients.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]


def channel(port):
    return grpc.insecure_channel("127.0.0.1:%d" % port, options=CHANNEL_OPTIONS)


class Daemon(apsd_harness.Daemon):
    """One apsd process (apsd_harness.Daemon), with its figures from /proc."""

    def __init__(self, data_dir, extra=()):
        super().__init__(data_dir, extra, channel_options=CHANNEL_OPTIONS, ready_timeout=30)

    def log_text(self, tail=6000):
        return super().log_text()[-tail:]

    def stop(self, sig=signal.SIGTERM, timeout=60):
        return super().stop(sig, timeout)

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
