"""Clients that test_firing.py runs as processes of their own, beside the
measuring one, as churn.py: in the measuring process, their gRPC traffic
took the GIL from the reader whose delivery delay is measured (a baseline
worker completing 100 runs/s asynchronously put that delay at 0.8-1 s,
against 40 ms from its own process).

  side_clients.py drain PORT END
      one worker on queue `loadq` completes every run dispatched until END
      (epoch seconds; up to 64 in flight); prints the count.
  side_clients.py stuck PORT OPEN_UNTIL END
      every 2 s until OPEN_UNTIL (epoch seconds), opens a subscriber to all
      events and never reads it, on a channel whose receive window stays
      small (no BDP growth), so that the transport does not absorb
      megabytes of events for them before the daemon's queue fills; at END,
      reads each (what the transport buffered, then its status, within
      30 s); prints a JSON list of [events, status name, details] (status
      "NOT_ENDED" when a stream did not end).

Times are absolute (this process's start-up does not shift them).

Every loop is bounded by its deadline."""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadlib import channel, pb, scheduler_pb2_grpc, wpb, workers_pb2_grpc  # noqa: E402

import grpc  # noqa: E402


def complete_dispatched(workers, end):
    """Completes every run of `loadq` dispatched to a worker until `end`
    (epoch seconds; up to 64 in flight) through the Workers stub `workers`;
    returns the count. Also test_firing.py's in-process drain."""
    req = wpb.AcquireRequest(queue="loadq", worker_id="drain", max_in_flight=64)
    # Long enough for the Completes below; short, so that a dispatch
    # still in flight when the stream's deadline ends it expires soon.
    req.lease_duration.FromSeconds(3)
    futs = []
    try:
        for item in workers.Acquire(req, timeout=max(0.1, end - time.time())):
            if item.WhichOneof("item") == "dispatch":
                d = item.dispatch
                futs.append(workers.Complete.future(
                    wpb.CompleteRequest(run_id=d.run_id, lease_token=d.lease_token), timeout=60))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    for f in futs:
        f.result()
    return len(futs)


def drain(port, end):
    ch = channel(port)
    n = complete_dispatched(workers_pb2_grpc.WorkersStub(ch), end)
    ch.close()
    print(n, flush=True)


def stuck(port, open_until, end):
    ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=[
        ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8192),
        ("grpc.use_local_subchannel_pool", 1)])
    stub = scheduler_pb2_grpc.SchedulerStub(ch)
    streams = []
    while time.time() < open_until:
        streams.append(stub.SubscribeEvents(pb.SubscribeEventsRequest(), timeout=300))
        time.sleep(min(2.0, max(0.0, open_until - time.time())))
    time.sleep(max(0.0, end - time.time()))
    ends = [None] * len(streams)
    got = [0] * len(streams)

    def read(k):
        try:
            for _ in streams[k]:
                got[k] += 1
            ends[k] = [got[k], "OK", ""]
        except grpc.RpcError as e:
            ends[k] = [got[k], e.code().name, e.details() or ""]

    readers = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(len(streams))]
    for th in readers:
        th.start()
    end = time.time() + 30
    deadline = time.time() + 30
    for th in readers:
        th.join(timeout=max(0.1, deadline - time.time()))
    # Taken before the cancels below, which end the streams not cut.
    out = [e if e is not None else [got[k], "NOT_ENDED", ""] for k, e in enumerate(ends)]
    for k, st in enumerate(streams):
        if ends[k] is None:
            st.cancel()
    ch.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "drain":
        drain(int(sys.argv[2]), float(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "stuck":
        stuck(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)
