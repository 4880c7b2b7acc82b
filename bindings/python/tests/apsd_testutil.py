"""Test support: finds the apsd binary and the package, runs the real daemon
on a free 127.0.0.1 port with a temporary data directory (the pattern of
tests/e2e/test_service.py). Every wait is bounded."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)                      # bindings/python
ROOT = os.path.dirname(os.path.dirname(SRC))     # the workspace


def _runfile(rel):
    for base in (os.environ.get("TEST_SRCDIR", ""), os.getcwd(), ROOT):
        for cand in (os.path.join(base, rel), os.path.join(base, "apsd", rel)):
            if os.path.exists(cand):
                return cand
    return None


def _setup_path():
    """The assembled package (bazel test, or $APSD_PY_PACKAGE), else the
    source tree (whose __init__ finds the generated modules in bazel-bin)."""
    pkg = os.environ.get("APSD_PY_PACKAGE") or (
        os.environ.get("TEST_SRCDIR") and _runfile("bindings/python/pkg/apsd/__init__.py"))
    root = os.path.dirname(os.path.dirname(pkg)) if pkg and pkg.endswith(".py") else (pkg or SRC)
    if root not in sys.path:
        sys.path.insert(0, root)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    return root


PACKAGE_ROOT = _setup_path()
APSD = os.environ.get("APSD_BIN") or _runfile("service/apsd") or \
    os.path.join(ROOT, "bazel-bin", "service", "apsd")
SANITIZED = os.environ.get("APSD_SANITIZED") == "1"

import grpc  # noqa: E402


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One apsd process on 127.0.0.1. restart() keeps the port and the data."""

    def __init__(self, extra=()):
        self.tmp = tempfile.mkdtemp(prefix="apsd-py-")
        self.data_dir = os.path.join(self.tmp, "store")
        self.log_path = os.path.join(self.tmp, "apsd.log")
        # A client connection left open makes SIGTERM wait the whole grace
        # (default 5 s) even when idle: keep restarts short.
        self.extra = ["--shutdown-grace", "1"] + list(extra)
        self.port = None
        self.proc = None

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    def start(self, port=None):
        for attempt in range(5):
            self.port = port or free_port()
            log = open(self.log_path, "ab")
            if not os.path.exists(APSD):
                log.close()
                break
            self.proc = subprocess.Popen(
                [APSD, "--listen", self.target, "--data-dir", self.data_dir] + self.extra,
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            wait_for(lambda: self.proc.poll() is not None or "apsd started" in self.log_text(), 15, 0.01)
            ch = grpc.insecure_channel(self.target, options=[("grpc.initial_reconnect_backoff_ms", 50),
                                                             ("grpc.min_reconnect_backoff_ms", 50)])
            try:
                grpc.channel_ready_future(ch).result(timeout=15)
            except grpc.FutureTimeoutError:
                pass
            finally:
                ch.close()
            # Make sure the listener is ours: another process may have taken
            # the port between free_port() and the bind.
            if self.proc.poll() is None and "msg=listening" in self.log_text():
                return self
            self.stop()
            if port is not None and attempt < 4:
                time.sleep(0.5)  # the same port: wait for it to be released
        log = self.log_text()
        shutil.rmtree(self.tmp, ignore_errors=True)
        raise RuntimeError("apsd did not start:\n" + log)

    def restart(self):
        port = self.port
        rc = self.stop()
        self.start(port)
        return rc

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=30):
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
        self.proc = None
        return rc

    def cleanup(self):
        rc = self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


def wait_for(pred, timeout=20.0, interval=0.05):
    """Polls pred() until true (returns True) or timeout (returns False)."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class Collector:
    """Iterates an apsd event stream on a thread, keeping the events."""

    def __init__(self, stream):
        self.stream = stream
        self.events = []
        self.error = None
        self.lock = threading.Lock()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        try:
            for ev in self.stream:
                with self.lock:
                    self.events.append(ev)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def wait(self, pred, timeout=20.0):
        return wait_for(lambda: pred(self.snapshot()) or self.error is not None, timeout) and \
            pred(self.snapshot())

    def close(self):
        self.stream.close()
        self.th.join(10)
