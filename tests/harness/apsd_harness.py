"""The real apsd for the Python tests (tests/e2e, tests/security,
bindings/python/tests): finds the daemon and the generated modules in the
runfiles (bazel test) or in the checkout's bazel-bin (run by hand), starts
apsd on a free 127.0.0.1 port with a data directory (a temporary one unless
given), waits until it serves, stops it and reads its log; reads a stream on
a thread; encodes the protobuf wire format of hand-made requests. Every wait
is bounded in count and time.

Use: put tests/harness on sys.path (its BUILD target in the test's data) and,
unless the caller brings its own `apsd.v1` (the binding's package does), call
add_proto_path() before importing apsd.v1."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc

# The checkout when run by hand, the workspace of the runfiles tree under
# bazel test: this file is tests/harness/apsd_harness.py below it.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Sanitizer runs (bazel test --config=asan) set APSD_SANITIZED=1: the daemon
# starts slower there.
SANITIZED = os.environ.get("APSD_SANITIZED", "") not in ("", "0")
# What apsd logs once its server runs: every listener is bound by then.
STARTED_LINE = "apsd started"


def find_runfile(rel, bases=()):
    """`rel` in the runfiles tree ($TEST_SRCDIR, else the current directory;
    with or without the workspace's name), then in `bases`."""
    for base in (os.environ.get("TEST_SRCDIR", ""), os.getcwd()) + tuple(bases):
        if not base:
            continue  # (an unset $TEST_SRCDIR: not a path relative to the cwd)
        for cand in (os.path.join(base, rel), os.path.join(base, "apsd", rel)):
            if os.path.exists(cand):
                return cand
    raise FileNotFoundError(rel)


def built(rel, env=None):
    """A build output: $`env` when set, else its runfile, else the checkout's
    bazel-bin/`rel` (which may not exist)."""
    if env and os.environ.get(env):
        return os.environ[env]
    try:
        return find_runfile(rel)
    except FileNotFoundError:
        return os.path.join(ROOT, "bazel-bin", rel)


APSD = built("service/apsd", "APSD_BIN")


def add_proto_path():
    """Puts the root of the generated modules (apsd/v1/*_pb2*.py of
    //proto:apsd_py) first on sys.path and returns it: the runfiles' when
    they hold them, else the checkout's bazel-bin/proto."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            find_runfile("proto/apsd/v1/scheduler_pb2.py"))))
    except FileNotFoundError:
        root = os.path.join(ROOT, "bazel-bin", "proto")
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)
    return root


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port):
    """Whether 127.0.0.1:`port` accepts a TCP connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(pred, timeout=20.0, interval=0.05):
    """Polls pred() until true (returns True) or timeout (returns False)."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class Daemon:
    """One apsd process on 127.0.0.1.

    data_dir: holds the store (data_dir/store) and the log (data_dir/apsd.log,
        appended to across starts); None: a new temporary directory, which
        cleanup() removes (also `tmp`).
    store, log_path: the store's directory and the log file elsewhere than
        in data_dir (e.g. the store on a small tmpfs, the log beside it).
    extra: more apsd flags (a list: it may be extended before start()).
    creds: grpc channel credentials of a TLS daemon (None: plaintext).
    env: the daemon's environment (None: this process's).
    channel_options: options of the channel start() connects (self.channel).
    keep_channel: start() leaves that channel open as self.channel, with the
        stubs self.sched and self.workers on it, until stop(). False for
        tests that bring their own clients (it is closed at once): a
        connection left open makes SIGTERM wait the whole --shutdown-grace.
    ready_timeout: seconds start() waits for the daemon to serve.
    start_time: when start() last spawned the process (time.time())."""

    def __init__(self, data_dir=None, extra=(), creds=None, env=None, channel_options=(),
                 keep_channel=True, ready_timeout=None, prefix="apsd-test-", store=None, log_path=None):
        self.owned = data_dir is None
        self.data_dir = tempfile.mkdtemp(prefix=prefix) if data_dir is None else data_dir
        self.tmp = self.data_dir
        self.store = store or os.path.join(self.data_dir, "store")
        self.log_path = log_path or os.path.join(self.data_dir, "apsd.log")
        self.extra = list(extra)
        self.creds = creds
        self.env = env
        self.channel_options = list(channel_options)
        self.keep_channel = keep_channel
        self.ready_timeout = ready_timeout or (30 if SANITIZED else 15)
        self.port = None
        self.proc = None
        self.log = None
        self.channel = None
        self.sched = None
        self.workers = None
        self.start_time = None

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    def argv(self):
        return [APSD, "--listen", self.target, "--data-dir", self.store] + self.extra

    def channel_for(self, creds=None, options=()):
        """A new channel to the daemon (TLS with `creds`, else plaintext)."""
        if creds is not None:
            return grpc.secure_channel(self.target, creds, options=list(options))
        return grpc.insecure_channel(self.target, options=list(options))

    def start(self, port=None):
        """Starts apsd on `port`, else on a free one, and waits until it serves:
        it logged STARTED_LINE (so the listener is its own, not that of a
        process that took the port meanwhile) and a gRPC channel to it is
        ready. A port taken meanwhile costs an attempt (of 5): a free port
        is picked again, a given one is retried after a pause. Returns self;
        else stops the daemon and raises RuntimeError with its log."""
        why = "no attempt"
        for _ in range(5):
            self.port = port or free_port()
            offset = self._log_size()
            self.log = open(self.log_path, "ab")
            self.start_time = time.time()
            try:
                self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=self.log,
                                             stdin=subprocess.DEVNULL, env=self.env)
            except OSError:
                self.log.close()
                self._remove_owned()
                raise
            why = self._wait_serving(offset)
            if why is None:
                return self
            taken = self.proc.poll() is not None and "Address already in use" in self._read_log(offset)
            self.stop()
            if not taken:
                break
            if port is not None:
                time.sleep(0.5)  # the same port: wait for it to be released
        log = self._read_log(0)
        self._remove_owned()
        raise RuntimeError("apsd did not start (%s):\n%s" % (why, log))

    def _wait_serving(self, offset):
        """None once the daemon started by start() serves, else why not:
        it logged STARTED_LINE (so the listener is its own, not that of a
        process that took the port meanwhile) and a gRPC channel to it is
        ready. A plaintext channel is made as soon as the port accepts, so
        that its handshake overlaps the daemon's last start-up steps (the
        restart-heavy tests/reliability need a fast start); not before: a
        refused connect makes grpc wait 1 s before it retries."""
        early = []  # (channel, its ready future), once the port accepted

        def serving():
            if self.proc.poll() is not None:
                return True
            if not early and self.creds is None and _accepts(self.port):
                ch = self.channel_for(None, self.channel_options)
                early.append((ch, grpc.channel_ready_future(ch)))
            return STARTED_LINE in self._read_log(offset)

        wait_for(serving, self.ready_timeout, 0.002)
        ch, ready = early[0] if early else (None, None)
        why = None
        if self.proc.poll() is not None:
            why = "exit status %r" % self.proc.returncode
        elif STARTED_LINE not in self._read_log(offset):
            why = "no %r in the log within %ss" % (STARTED_LINE, self.ready_timeout)
        else:
            if ch is None:
                ch = self.channel_for(self.creds, self.channel_options)
                ready = grpc.channel_ready_future(ch)
            try:
                ready.result(timeout=self.ready_timeout)
            except grpc.FutureTimeoutError:
                why = "no connection within %ss" % self.ready_timeout
        if why is not None or not self.keep_channel:
            if ch is not None:
                ready.cancel()
                ch.close()
            return why
        self.channel = ch
        from apsd.v1 import scheduler_pb2_grpc, workers_pb2_grpc
        self.sched = scheduler_pb2_grpc.SchedulerStub(self.channel)
        self.workers = workers_pb2_grpc.WorkersStub(self.channel)
        return None

    def restart(self):
        """Stops the daemon and starts it again on the same port and data;
        returns the exit status of the stop."""
        port = self.port
        rc = self.stop()
        self.start(port)
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_text(self):
        """The whole log ("" when there is none)."""
        return self._read_log(0)

    def _read_log(self, offset):
        # start() reads through this, not log_text: a subclass may override
        # log_text (tests/load's keeps the tail).
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends `sig` and waits for the exit (SIGKILL after `timeout` s);
        returns the exit status ("timeout" after a SIGKILL, None when not
        running)."""
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
        if self.channel is not None:
            self.channel.close()  # after the exit: open streams see the daemon's status
        if self.log is not None:
            self.log.close()
        self.proc = None
        return rc

    def kill(self, timeout=10):
        """SIGKILL (a crash: no shutdown at all), then waits for the exit;
        returns the exit status as stop() does."""
        return self.stop(signal.SIGKILL, timeout)

    def cleanup(self):
        """stop(), and removes the data directory if this Daemon made it."""
        rc = self.stop()
        self._remove_owned()
        return rc

    def _remove_owned(self):
        if self.owned:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def thread_sched(pid, name):
    """(policy, rt_priority) of the thread of process `pid` named `name`,
    from /proc/PID/task/TID/stat (fields 41 and 40); None if there is none
    (e.g. the apsd scheduler loop: "aps-loop")."""
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() != name:
                    continue
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        return int(fields[38]), int(fields[37])  # field 3 is fields[0]
    return None


def _is_caught_up(item):
    """Whether a stream item is a SubscribeEvents bookmark with caught_up."""
    try:
        return item.WhichOneof("item") == "bookmark" and item.bookmark.caught_up
    except (AttributeError, ValueError):
        return False


class Collector:
    """Reads a stream (a grpc response stream, or any iterator) on a thread,
    keeping its items in order; what ended it with an error in self.error.
    take: what to keep of an item (None: the item), returning None to
    skip it (e.g. a SubscribeEvents stream's events without its bookmarks)."""

    def __init__(self, stream, take=None):
        self.stream = stream
        self.take = take
        self.items = []
        self.error = None
        self.ended = False
        self.caught_up = False  # a SubscribeEvents bookmark with caught_up came
        self.cv = threading.Condition()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        try:
            for item in self.stream:
                kept = item if self.take is None else self.take(item)
                with self.cv:
                    if kept is not None:
                        self.items.append(kept)
                    self.caught_up = self.caught_up or _is_caught_up(item)
                    self.cv.notify_all()
        except Exception as e:  # noqa: BLE001 - the test reports it
            with self.cv:
                self.error = e
        finally:
            with self.cv:
                self.ended = True
                self.cv.notify_all()

    def snapshot(self):
        with self.cv:
            return list(self.items)

    def wait_caught_up(self, timeout=20.0):
        """Waits for the caught_up bookmark of a SubscribeEvents stream
        asked with send_bookmarks: from then on the daemon has registered
        the subscriber, so a change made now reaches even a live stream (the
        stream and the call making the change travel apart: without this a
        live stream may be registered after the change's event)."""
        end = time.monotonic() + timeout
        with self.cv:
            while not self.caught_up and not self.ended and time.monotonic() < end:
                self.cv.wait(min(0.2, max(0.01, end - time.monotonic())))
            return self.caught_up

    def wait(self, pred, timeout=20.0):
        """Waits until pred(the items so far) is true, or the stream ended,
        or `timeout` s passed; returns pred's last value."""
        end = time.monotonic() + timeout
        with self.cv:
            while not pred(list(self.items)) and not self.ended and time.monotonic() < end:
                self.cv.wait(min(0.2, max(0.01, end - time.monotonic())))
            return pred(list(self.items))

    def close(self):
        """Ends the stream (a grpc stream is cancelled, another iterator
        closed) and joins the thread."""
        cancel = getattr(self.stream, "cancel", None)
        (cancel or self.stream.close)()
        self.th.join(timeout=10)


def varint(n):
    """A base-128 varint on the wire."""
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def ld(field, payload):
    """A length-delimited field (wire type 2) on the wire."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload
