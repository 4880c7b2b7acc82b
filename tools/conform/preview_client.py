#!/usr/bin/python3
"""tools/conformance --server HOST:PORT FILE.jsonl...: the trigger vectors
through a running apsd's PreviewTrigger RPC (apsd.v1.Scheduler). Each
vector's trigger JSON goes over the wire unchanged; the fire times must
equal `expect` (as instants), and `"error": true` vectors must be refused
with INVALID_ARGUMENT. Prints each failing vector, then "N passed, M failed".

Needs the generated modules: PYTHONPATH with bazel-bin/proto (the wrapper
script sets it) and Debian's python3-grpcio (run with /usr/bin/python3).
"""
import datetime
import json
import sys

import grpc
from google.protobuf import json_format

from apsd.v1 import scheduler_pb2 as pb
from apsd.v1 import scheduler_pb2_grpc as pbg


MAX_EXPECT = 8


def instant(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_vector(stub, vec):
    # Up to 8 expected times; fewer means no more: ask one past them.
    req = pb.PreviewTriggerRequest(count=MAX_EXPECT + 1)
    req.start_time.FromDatetime(instant(vec["now"]).astimezone(datetime.timezone.utc).replace(tzinfo=None))
    try:
        json_format.ParseDict(vec["trigger"], req.trigger)
    except json_format.ParseError as e:
        return vec.get("error", False), "bad trigger JSON: %s" % e
    try:
        resp = stub.PreviewTrigger(req, timeout=10)
    except grpc.RpcError as e:
        if vec.get("error") and e.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return True, None
        return False, "%s: %s" % (e.code().name, e.details())
    if vec.get("error"):
        return False, "expected an error, got %d fire times" % len(resp.fire_times)
    got = [t.ToDatetime().replace(tzinfo=datetime.timezone.utc) for t in resp.fire_times]
    want = [instant(t) for t in vec["expect"]]
    if len(want) == MAX_EXPECT:
        got = got[:MAX_EXPECT]
    if got != want:
        return False, "expected %s\n  actual:   %s" % (
            [w.isoformat() for w in want], [g.isoformat() for g in got])
    return True, None


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    server, files = argv[1], argv[2:]
    passed = failed = 0
    with grpc.insecure_channel(server) as ch:
        stub = pbg.SchedulerStub(ch)
        for path in files:
            with open(path) as f:
                for line in f:
                    if not line.strip():
                        continue
                    vec = json.loads(line)
                    ok, why = run_vector(stub, vec)
                    if ok:
                        passed += 1
                    else:
                        failed += 1
                        print("FAIL %s: %s" % (vec.get("id", "?"), why))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
