"""Shared pieces of the tests/security suites: the real apsd on a free
127.0.0.1 port with a temporary data directory (tests/harness/apsd_harness.py,
re-exported here), raw gRPC calls for requests the Python protobuf library
refuses to build, and LMDB dumps. Every wait is bounded."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
from apsd_harness import (APSD, SANITIZED, Daemon, add_proto_path, built, find_runfile,  # noqa: E402,F401
                          free_port, ld, varint)

add_proto_path()

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402
from apsd.v1 import scheduler_pb2_grpc  # noqa: E402,F401
from apsd.v1 import workers_pb2 as wpb  # noqa: E402,F401

APSD_TOKEN = built("service/apsd-token", "APSD_TOKEN_BIN")
T = 20 if SANITIZED else 10  # seconds: the deadline of every RPC


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
