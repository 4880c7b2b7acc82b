"""A worker that takes runs and never completes them, for test_faults.py:
Acquire on --queue, print `D <run_id> <lease_token>` per dispatch (flushed),
then wait to be killed (SIGKILL: the process vanishes with its TCP
connection) or, on SIGTERM, close its channel without a Complete and exit 0.
Bounded: it exits by itself after --max-seconds."""
import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadlib import channel, wpb, workers_pb2_grpc  # noqa: E402

import grpc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--worker-id", required=True)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--max-in-flight", type=int, default=1000)
    ap.add_argument("--max-seconds", type=float, default=120)
    a = ap.parse_args()
    ch = channel(a.port)
    stub = workers_pb2_grpc.WorkersStub(ch)
    req = wpb.AcquireRequest(queue=a.queue, worker_id=a.worker_id, max_in_flight=a.max_in_flight)
    req.lease_duration.FromMilliseconds(int(a.lease * 1000))
    stream = stub.Acquire(req, timeout=a.max_seconds)
    stop = threading.Event()

    def on_term(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_term)

    def read():
        try:
            for item in stream:
                if item.WhichOneof("item") == "dispatch":
                    d = item.dispatch
                    sys.stdout.write("D %s %s\n" % (d.run_id, d.lease_token))
                    sys.stdout.flush()
        except grpc.RpcError:
            pass
        stop.set()

    threading.Thread(target=read, daemon=True).start()
    print("READY", flush=True)
    stop.wait(a.max_seconds)
    ch.close()  # the stream ends with CANCELLED; the leases it held stay leased
    sys.stdout.write("CLOSED\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
