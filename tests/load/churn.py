"""The client side of the subscriber and worker churn, run as its own process
by test_firing.py (so that its CPU use does not take the GIL from the
measuring client): grpc.aio over a few channels.

- `--subs` event subscribers, each in a loop until `--seconds` are over:
  subscribe with a random filter (one job; one job and its terminal types;
  scheduler event types with bookmarks; a few jobs and one type), sometimes
  resuming with after_sequence of its previous stream, read for a random
  time, then cancel (or let a short deadline end it). Each stream checks
  what it gets: increasing sequences, only what its filter asked for.
  Every few seconds one channel is closed under its open streams (a client
  process that dies) and replaced.
- `--workers` workers on queue `--queue`: Acquire, Complete most dispatches
  at once, cancel the stream at random moments; a dispatch still held then
  is completed after the cancel (leases outlive the stream) or abandoned
  (its lease expires: the daemon reports it LEASE_EXPIRED).

Every loop is bounded by the deadline. Prints one JSON object of counts."""
import argparse
import asyncio
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadlib import ET, pb, scheduler_pb2_grpc, wpb, workers_pb2_grpc  # noqa: E402

import grpc  # noqa: E402
from grpc import aio  # noqa: E402

C = grpc.StatusCode
JOB_TYPES = {ET.Value(n) for n in ET.keys() if n.startswith("EVENT_TYPE_JOB_")}
RARE_TYPES = [ET.Value("EVENT_TYPE_SCHEDULER_PAUSED"), ET.Value("EVENT_TYPE_SCHEDULER_RESUMED"),
              ET.Value("EVENT_TYPE_ALL_JOBS_REMOVED")]


class Counts(dict):
    def inc(self, k, n=1):
        self[k] = self.get(k, 0) + n


def make_channel(port):
    return aio.insecure_channel("127.0.0.1:%d" % port, options=[("grpc.use_local_subchannel_pool", 1)])


class Churn:
    def __init__(self, a):
        self.a = a
        self.end = time.monotonic() + a.seconds
        self.n = Counts()
        self.problems = []
        self.chans = []  # made in main(): aio channels belong to the running loop
        self.job_ids = ["%s%05d" % (a.job_prefix, i) for i in range(a.n_jobs)]
        self.dispatched = set()  # run ids seen in a dispatch: one run is never dispatched twice

    def problem(self, msg):
        if len(self.problems) < 50:
            self.problems.append(msg)

    # ---- subscribers ---------------------------------------------------------------

    async def one_stream(self, rnd, ch, last_seq):
        # The filters: one job (the daemon's engine matches it), one job
        # and its terminal types, scheduler events only, or a few jobs (the
        # engine matches the type, the service the ids: costlier per event).
        kind = {"mix": rnd.random(), "one": 0.0, "five": 0.95, "rare": 0.8}[self.a.kind]
        req = pb.SubscribeEventsRequest()
        jobs = set()
        types = set()
        if kind < 0.6:
            jobs = {rnd.choice(self.job_ids)}
        elif kind < 0.75:
            jobs = {rnd.choice(self.job_ids)}
            types = {ET.Value("EVENT_TYPE_JOB_EXECUTED"), ET.Value("EVENT_TYPE_JOB_ERROR")}
        elif kind < 1.0 - self.a.multi_fraction:
            types = set(RARE_TYPES)
            req.send_bookmarks = True
        else:
            jobs = set(rnd.sample(self.job_ids, 5))
            types = {ET.Value("EVENT_TYPE_JOB_SUBMITTED")}
        req.job_ids.extend(sorted(jobs))
        req.types.extend(sorted(types))
        after = None
        if last_seq and rnd.random() < self.a.resume_fraction:
            # A resume replays from the durable log what the filter wants
            # since last_seq: the daemon reads every event since then.
            after = last_seq
            req.after_sequence = after
            req.continue_after_gap = True
            req.send_bookmarks = True
            self.n.inc("resumes")
        life = min(rnd.uniform(self.a.life_min, self.a.life_max), max(0.05, self.end - time.monotonic()))
        by_deadline = rnd.random() < 0.15
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        call = stub.SubscribeEvents(req, timeout=life if by_deadline else life + 30)
        self.n.inc("connects")
        seen = after or 0
        got = 0

        async def read():
            nonlocal seen, got
            async for item in call:
                k = item.WhichOneof("item")
                if k == "event":
                    e = item.event
                    got += 1
                    if e.sequence <= seen:
                        self.problem("sequence %d after %d" % (e.sequence, seen))
                    seen = e.sequence
                    if jobs and e.job_id not in jobs:
                        self.problem("event of job %r on a stream for %s" % (e.job_id, sorted(jobs)))
                    if types and e.type not in types:
                        self.problem("event type %d on a stream for %s" % (e.type, sorted(types)))
                    if jobs and e.type not in JOB_TYPES:
                        self.problem("non-job event %d on a job stream" % e.type)
                elif k == "bookmark":
                    self.n.inc("bookmarks")
                    seen = max(seen, item.bookmark.sequence)
                elif k == "gap":
                    self.n.inc("gaps")
                    seen = item.gap.first_available_sequence - 1

        task = asyncio.ensure_future(read())
        code = None
        try:
            if by_deadline:
                await asyncio.wait_for(asyncio.shield(task), life + 30)
            else:
                done, _ = await asyncio.wait([task], timeout=life)
                if not done:
                    call.cancel()
                    self.n.inc("cancels")
                await asyncio.wait_for(asyncio.shield(task), 30)
            code = C.OK
        except grpc.RpcError as e:
            code = e.code()
        except asyncio.CancelledError:
            code = C.CANCELLED
        except asyncio.TimeoutError:
            code = "hang"
            call.cancel()
        if not task.done():
            task.cancel()
        self.n.inc("events", got)
        name = code.name if hasattr(code, "name") else str(code)
        self.n.inc("end_" + name)
        if code == C.RESOURCE_EXHAUSTED:
            await asyncio.sleep(0.05)  # the limit: a slot frees soon
        elif code not in (C.CANCELLED, C.DEADLINE_EXCEEDED, C.UNAVAILABLE, C.OK):
            self.problem("stream ended with %s" % name)
        return seen

    async def subscriber(self, k):
        rnd = random.Random(self.a.seed * 1000 + k)
        await asyncio.sleep(rnd.uniform(0, 0.5))
        last = 0
        while time.monotonic() < self.end:
            i = rnd.randrange(len(self.chans))
            try:
                last = await self.one_stream(rnd, self.chans[i], last) or last
            except Exception as e:  # noqa: BLE001 (a closed channel raises several kinds)
                self.n.inc("end_channel_closed")
                if "closed" not in str(e).lower():
                    self.problem("subscriber %d: %r" % (k, e))
                await asyncio.sleep(0.1)

    async def channel_killer(self):
        rnd = random.Random(self.a.seed)
        while time.monotonic() < self.end - 1:
            await asyncio.sleep(rnd.uniform(1.5, 3))
            i = rnd.randrange(len(self.chans))
            old = self.chans[i]
            self.chans[i] = make_channel(self.a.port)
            await old.close(grace=None)  # cancels every call on it: a client that dies
            self.n.inc("channels_killed")

    # ---- workers -------------------------------------------------------------------

    async def worker(self, k):
        rnd = random.Random(self.a.seed * 7919 + k)
        ch = make_channel(self.a.port)
        stub = workers_pb2_grpc.WorkersStub(ch)
        held = []
        try:
            while time.monotonic() < self.end:
                req = wpb.AcquireRequest(queue=self.a.queue, worker_id="churn-w%d" % k,
                                         max_in_flight=rnd.randint(1, 20))
                req.lease_duration.FromMilliseconds(int(self.a.lease * 1000))
                call = stub.Acquire(req, timeout=60)
                self.n.inc("acquires")
                life = rnd.uniform(0.2, 2.0)
                deadline = time.monotonic() + life

                async def read():
                    async for item in call:
                        if item.WhichOneof("item") != "dispatch":
                            self.n.inc("cancel_msgs")
                            continue
                        d = item.dispatch
                        self.n.inc("dispatches")
                        if d.run_id in self.dispatched:
                            self.n.inc("redelivered")
                        self.dispatched.add(d.run_id)
                        if rnd.random() < 0.9:
                            await self.complete(stub, d)
                        else:
                            held.append(d)
                        if time.monotonic() >= deadline:
                            return

                task = asyncio.ensure_future(read())
                try:
                    await asyncio.wait_for(asyncio.shield(task), max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                except grpc.RpcError as e:
                    if e.code() not in (C.CANCELLED, C.UNAVAILABLE):
                        self.problem("acquire ended with %s: %s" % (e.code().name, e.details()))
                call.cancel()
                self.n.inc("acquire_cancels")
                try:
                    await asyncio.wait_for(task, 30)
                except (grpc.RpcError, asyncio.CancelledError, asyncio.TimeoutError):
                    pass
                # Dispatches held across the cancel: most are completed now,
                # the rest abandoned to lease expiry.
                for d in held:
                    if rnd.random() < 0.5:
                        await self.complete(stub, d)
                    else:
                        self.n.inc("abandoned")
                held.clear()
        finally:
            await ch.close(grace=None)

    async def complete(self, stub, d):
        try:
            await stub.Complete(wpb.CompleteRequest(run_id=d.run_id, lease_token=d.lease_token), timeout=30)
            self.n.inc("completed")
        except grpc.RpcError as e:
            if e.code() == C.FAILED_PRECONDITION:
                self.n.inc("complete_too_late")  # the lease expired first
            else:
                self.problem("Complete: %s %s" % (e.code().name, e.details()))

    async def main(self):
        self.chans = [make_channel(self.a.port) for _ in range(self.a.channels)]
        tasks = [asyncio.ensure_future(self.subscriber(k)) for k in range(self.a.subs)]
        tasks += [asyncio.ensure_future(self.worker(k)) for k in range(self.a.workers)]
        if not self.a.no_kill:
            tasks.append(asyncio.ensure_future(self.channel_killer()))
        done, pending = await asyncio.wait(tasks, timeout=self.a.seconds + 60)
        for t in pending:
            t.cancel()
            self.problem("a churn task did not end in time")
        for t in done:
            if t.exception() is not None:
                self.problem("task failed: %r" % t.exception())
        for ch in self.chans:
            await ch.close(grace=None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--subs", type=int, default=500)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--queue", default="loadq")
    ap.add_argument("--lease", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--channels", type=int, default=10)
    ap.add_argument("--n-jobs", type=int, default=10000)
    ap.add_argument("--job-prefix", default="j")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--life-min", type=float, default=0.05, help="stream life, seconds")
    ap.add_argument("--life-max", type=float, default=1.5)
    ap.add_argument("--no-kill", action="store_true", help="do not close channels")
    ap.add_argument("--kind", choices=("mix", "one", "five", "rare"), default="mix",
                    help="subscriber filters: a mix, or all one job / five jobs / rare types")
    ap.add_argument("--multi-fraction", type=float, default=0.05,
                    help="streams that filter on five job ids")
    ap.add_argument("--resume-fraction", type=float, default=0.03,
                    help="streams that resume with after_sequence of the previous one")
    a = ap.parse_args()
    c = Churn(a)
    t0 = time.monotonic()
    asyncio.run(c.main())
    out = dict(c.n)
    out["elapsed"] = round(time.monotonic() - t0, 2)
    out["problems"] = c.problems
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
