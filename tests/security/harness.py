"""Shared pieces of the tests/security suites: the real apsd on a free
127.0.0.1 port with a temporary data directory (the pattern of
tests/e2e/test_service.py), raw gRPC calls for requests the Python
protobuf library refuses to build, and LMDB dumps. Every wait is bounded."""
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


def _proto_root():
    # Run directly from the tree (/usr/bin/python3 tests/security/x.py), the
    # generated modules are in bazel-bin/proto.
    try:
        return os.path.dirname(os.path.dirname(os.path.dirname(find_runfile("proto/apsd/v1/scheduler_pb2.py"))))
    except FileNotFoundError:
        return os.path.join(os.getcwd(), "bazel-bin", "proto")


sys.path.insert(0, _proto_root())

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402
from apsd.v1 import scheduler_pb2_grpc  # noqa: E402
from apsd.v1 import workers_pb2 as wpb  # noqa: E402,F401
from apsd.v1 import workers_pb2_grpc  # noqa: E402


def _binary(env, rel):
    if os.environ.get(env):
        return os.environ[env]
    try:
        return find_runfile(rel)
    except FileNotFoundError:
        return os.path.join(os.getcwd(), "bazel-bin", rel)


APSD = _binary("APSD_BIN", "service/apsd")
APSD_TOKEN = _binary("APSD_TOKEN_BIN", "service/apsd-token")
SANITIZED = os.environ.get("APSD_SANITIZED") == "1"
T = 20 if SANITIZED else 10  # seconds: the deadline of every RPC


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One apsd process on 127.0.0.1. `creds` = grpc channel credentials for
    a TLS daemon (None: plaintext); `metadata` = what the readiness probe
    sends (a token when tokens are on)."""

    def __init__(self, data_dir, extra=(), creds=None, env=None):
        self.data_dir = data_dir
        self.store = os.path.join(data_dir, "store")
        self.extra = list(extra)
        self.creds = creds
        self.env = env
        self.port = None
        self.proc = None
        self.channel = None
        self.log = None
        self.log_path = os.path.join(data_dir, "apsd.log")

    def argv(self):
        return [APSD, "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.store] + self.extra

    def channel_for(self, creds=None, options=()):
        target = "127.0.0.1:%d" % self.port
        if creds is not None:
            return grpc.secure_channel(target, creds, options=list(options))
        return grpc.insecure_channel(target, options=list(options))

    def start(self):
        for _ in range(5):
            self.port = free_port()
            self.log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=self.log,
                                         stdin=subprocess.DEVNULL, env=self.env)
            self.channel = self.channel_for(self.creds)
            try:
                grpc.channel_ready_future(self.channel).result(timeout=30 if SANITIZED else 15)
            except grpc.FutureTimeoutError:
                self.channel.close()
                if self.proc.poll() is not None:
                    self.log.close()
                    if b"Address already in use" in open(self.log_path, "rb").read()[-2000:]:
                        continue  # the port was taken meanwhile: try another
                    raise RuntimeError("apsd exited with %r:\n%s" % (self.proc.returncode, self.log_text()))
                self.stop()
                raise
            self.sched = scheduler_pb2_grpc.SchedulerStub(self.channel)
            self.workers = workers_pb2_grpc.WorkersStub(self.channel)
            return self
        raise RuntimeError("apsd did not start:\n" + self.log_text())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

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
        if self.channel is not None:
            self.channel.close()
        if self.log is not None:
            self.log.close()
        self.proc = None
        return rc


def raw_call(channel, method, data, timeout=None, metadata=None, stream=False):
    """Sends `data` (bytes, not checked by any protobuf library) to `method`
    (`Scheduler/AddJob` or a full `/pkg.Service/Method`). Returns
    (code, details, response bytes or None)."""
    if method.startswith("/"):
        path = method
    else:
        path = "/apsd.v1." + (method if "/" in method else "Scheduler/" + method)
    try:
        if stream:
            it = channel.unary_stream(path)(data, timeout=timeout or T, metadata=metadata)
            try:
                first = next(it)
            finally:
                it.cancel()
            return grpc.StatusCode.OK, "", first
        resp = channel.unary_unary(path)(data, timeout=timeout or T, metadata=metadata)
        return grpc.StatusCode.OK, "", resp
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromSeconds(int(seconds))
    return t


def far_date(years=1):
    return pb.Trigger(date=pb.DateTrigger(run_date=ts(time.time() + years * 365 * 86400)))


def cmd_job(job_id="", argv=("/bin/true",), trigger=None, **kw):
    return pb.Job(id=job_id, trigger=trigger if trigger is not None else far_date(),
                  target=pb.Target(command=pb.CommandTarget(argv=list(argv))), **kw)


def varint(n):
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


def mdb_dump(env_dir):
    """Every named database of the LMDB environment in env_dir, as
    {name: {key bytes: value bytes}} (mdb_dump -a, hex format)."""
    out = subprocess.run(["mdb_dump", "-a", env_dir], capture_output=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("mdb_dump: " + out.stderr.decode("utf-8", "replace"))
    dbs, cur, name, in_data, key = {}, None, None, False, None
    for line in out.stdout.decode("ascii").split("\n"):
        if not in_data:
            if line.startswith("database="):
                name = line[len("database="):]
            elif line == "HEADER=END":
                in_data, cur, key = True, {}, None
            continue
        if line == "DATA=END":
            dbs[name if name is not None else ""] = cur
            in_data, name = False, None
            continue
        if not line.startswith(" "):
            continue
        b = bytes.fromhex(line[1:])
        if key is None:
            key = b
        else:
            cur[key] = b
            key = None
    return dbs
