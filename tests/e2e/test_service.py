"""End-to-end tests of the apsd daemon: the real binary on a free 127.0.0.1
port with a temporary data directory, driven by the Python grpcio client
generated from proto/. Every wait is bounded in count and time."""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness"))
from apsd_harness import (APSD, Collector as _Collector, Daemon, add_proto_path, find_runfile, free_port, ld,  # noqa: E402
                          thread_sched)

add_proto_path()

import grpc  # noqa: E402
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2  # noqa: E402,F401
from apsd.v1 import scheduler_pb2 as pb  # noqa: E402
from apsd.v1 import scheduler_pb2_grpc  # noqa: E402
from apsd.v1 import workers_pb2 as wpb  # noqa: E402

try:
    GRPCURL = find_runfile("external/shared/tools/grpcurl/grpcurl")
except FileNotFoundError:
    GRPCURL = None

T = 10  # seconds: the deadline of every RPC
ET = pb.EventType


def cmd_job(job_id="", argv=("/bin/true",), **kw):
    job = pb.Job(id=job_id, target=pb.Target(command=pb.CommandTarget(argv=list(argv))), **kw)
    return job


def cron(**fields):
    return pb.Trigger(cron=pb.CronTrigger(**fields))


def interval(**fields):
    return pb.Trigger(interval=pb.IntervalTrigger(**fields))


def far_date():
    ts = timestamp_pb2.Timestamp()
    ts.FromSeconds(int(time.time()) + 365 * 86400)
    return pb.Trigger(date=pb.DateTrigger(run_date=ts))


def refused_config(test, text, message):
    """apsd started with `text` as its config file exits nonzero, saying
    `message` on stderr."""
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as f:
        f.write(text)
        f.flush()
        out = subprocess.run([APSD, "--config", f.name], capture_output=True, timeout=30, text=True)
    test.assertNotEqual(out.returncode, 0, text)
    test.assertIn(message, out.stderr)


@contextlib.contextmanager
def daemon_with_config(test, prefix, ini):
    """An apsd started with `ini` as its config file, in a new temporary
    directory: yields the Daemon and the directory; then stops it (checking
    its exit status) and removes the directory."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        path = os.path.join(tmp, "apsd.ini")
        with open(path, "w") as f:
            f.write(ini)
        d = Daemon(tmp, ["--config", path]).start()
        try:
            yield d, tmp
        finally:
            test.assertEqual(d.stop(), 0, d.log_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def events(items):
    """The events among the items of a SubscribeEvents stream."""
    return [i.event for i in items if i.WhichOneof("item") == "event"]


class Collector(_Collector):
    """Reads a SubscribeEvents stream on a thread."""

    def events(self):
        return events(self.snapshot())


class ServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="apsd-e2e-")
        cls.d = Daemon(os.path.join(cls.tmp, "main"))
        os.makedirs(cls.d.data_dir)
        cls.d.start()
        cls.s = cls.d.sched

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc != 0:
            raise AssertionError("apsd exited with %r:\n%s" % (rc, cls.d.log_text()))

    def assertCode(self, code, fn, *args, contains=None, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, timeout=T, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if contains:
            self.assertIn(contains, cm.exception.details())
        return cm.exception

    def last_seq(self):
        return self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T).event_log.last_sequence

    # ---- the basic job RPCs ---------------------------------------------------------

    def test_add_get_list_remove(self):
        job = self.s.AddJob(pb.AddJobRequest(job=cmd_job("basic-1", trigger=cron(hour="9", minute="30"))),
                            timeout=T)
        self.assertEqual(job.id, "basic-1")
        self.assertEqual(job.name, "/bin/true")  # APScheduler names a job after its function
        self.assertEqual(job.trigger.cron.timezone, "UTC")
        self.assertTrue(job.HasField("next_run_time"))
        got = self.s.GetJob(pb.GetJobRequest(job_id="basic-1"), timeout=T)
        self.assertEqual(got.trigger.cron.hour, "9")
        self.assertTrue(got.HasField("stats"))
        basic = self.s.GetJob(pb.GetJobRequest(job_id="basic-1", view=pb.JOB_VIEW_BASIC), timeout=T)
        self.assertFalse(basic.HasField("stats"))
        ids = [j.id for j in self.s.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=T).jobs]
        self.assertIn("basic-1", ids)
        self.s.RemoveJob(pb.RemoveJobRequest(job_id="basic-1"), timeout=T)
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.GetJob, pb.GetJobRequest(job_id="basic-1"))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.RemoveJob, pb.RemoveJobRequest(job_id="basic-1"))

    def test_generated_id_and_memory_store(self):
        before_ms = int(time.time() * 1000)
        job = self.s.AddJob(pb.AddJobRequest(job=cmd_job(trigger=far_date(), jobstore="memory")), timeout=T)
        self.addCleanup(self.s.RemoveJob, pb.RemoveJobRequest(job_id=job.id), timeout=T)
        time.sleep(0.003)  # a later millisecond: the order is the time's
        later = self.s.AddJob(pb.AddJobRequest(job=cmd_job(trigger=far_date())), timeout=T)
        self.addCleanup(self.s.RemoveJob, pb.RemoveJobRequest(job_id=later.id), timeout=T)
        after_ms = int(time.time() * 1000)
        # The milliseconds (12 hex digits), then 128 random bits (32): ids
        # generated later sort after, across stores.
        for j in (job, later):
            self.assertRegex(j.id, "^[0-9a-f]{44}$")
            self.assertTrue(before_ms - 1 <= int(j.id[:12], 16) <= after_ms + 1, j.id)
        self.assertLess(job.id[:12], later.id[:12])
        self.assertEqual(job.jobstore, "memory")

    # ---- error codes -------------------------------------------------------------------

    def test_invalid_arguments_name_the_field(self):
        add = self.s.AddJob
        c = grpc.StatusCode.INVALID_ARGUMENT
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e1", trigger=cron(hour="25"))),
                        contains="job.trigger.cron.hour")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e2", trigger=cron(hour="1", timezone="Mars/Olympus"))),
                        contains="timezone")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e3", argv=(), trigger=far_date())),
                        contains="job.target.command.argv")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e4", trigger=interval(seconds=-5))),
                        contains="job.trigger.interval.seconds")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e5", trigger=pb.Trigger())),
                        contains="job.trigger")
        big = cmd_job("e5b", trigger=far_date())
        big.target.command.max_output_bytes = 16 * 1024 * 1024 + 1  # the executor keeps 16 MiB
        self.assertCode(c, add, pb.AddJobRequest(job=big), contains="job.target.command.max_output_bytes")
        self.assertCode(c, add, pb.AddJobRequest(job=pb.Job(id="e6", trigger=far_date())),
                        contains="job.target")
        self.assertCode(c, add, pb.AddJobRequest(), contains="job")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e7", trigger=far_date(), executor="nope")),
                        contains="job.executor")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e8", trigger=far_date(), jobstore="nope")),
                        contains="job.jobstore")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e9", trigger=far_date(), max_instances=0)),
                        contains="job.max_instances")
        self.assertCode(c, add, pb.AddJobRequest(job=cmd_job("e10", trigger=pb.Trigger(
            all_of=pb.AllOfTrigger(triggers=[cron(hour="1"), cron(day="40")])))),
            contains="job.trigger.all_of.triggers[1].cron.day")
        self.assertCode(c, self.s.RescheduleJob, pb.RescheduleJobRequest(job_id="x"), contains="trigger")
        self.assertCode(c, self.s.GetJob, pb.GetJobRequest(), contains="job_id")
        for i in range(1, 11):
            self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.GetJob, pb.GetJobRequest(job_id="e%d" % i))

    def test_not_found_already_exists_failed_precondition(self):
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.GetJob, pb.GetJobRequest(job_id="missing"))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.PauseJob, pb.PauseJobRequest(job_id="missing"))
        self.s.AddJob(pb.AddJobRequest(job=cmd_job("dup", trigger=far_date())), timeout=T)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.s.AddJob,
                        pb.AddJobRequest(job=cmd_job("dup", trigger=far_date())), contains="job.id")
        # replace_existing replaces (keeping create_time)
        a = self.s.GetJob(pb.GetJobRequest(job_id="dup"), timeout=T)
        b = self.s.AddJob(pb.AddJobRequest(job=cmd_job("dup", name="renamed", trigger=far_date()),
                                           replace_existing=True), timeout=T)
        self.assertEqual(b.name, "renamed")
        self.assertEqual(a.create_time, b.create_time)
        # a paused scheduler runs nothing
        info = self.s.PauseScheduler(pb.PauseSchedulerRequest(), timeout=T)
        self.assertEqual(info.state, pb.SCHEDULER_STATE_PAUSED)
        try:
            self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.s.RunJobNow,
                            pb.RunJobNowRequest(job_id="dup"))
        finally:
            info = self.s.ResumeScheduler(pb.ResumeSchedulerRequest(), timeout=T)
        self.assertEqual(info.state, pb.SCHEDULER_STATE_RUNNING)
        self.s.RemoveJob(pb.RemoveJobRequest(job_id="dup"), timeout=T)

    def test_unimplemented_and_garbage(self):
        call = self.d.channel.unary_unary("/apsd.v1.Scheduler/NoSuchMethod")
        self.assertCode(grpc.StatusCode.UNIMPLEMENTED, call, b"")
        call = self.d.channel.unary_unary("/no.such.Service/Method")
        self.assertCode(grpc.StatusCode.UNIMPLEMENTED, call, b"\x01\x02")
        raw = self.d.channel.unary_unary("/apsd.v1.Scheduler/AddJob")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, raw, b"\x0a\xff\xff\xff")
        # Deeply nested triggers are refused before they can exhaust the stack.
        t = b""
        for _ in range(5000):
            t = ld(5, ld(1, t))  # Trigger{all_of(5){triggers(1)[t]}}
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, raw, ld(1, ld(3, t)))  # AddJobRequest{job{trigger}}
        self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)  # still alive

    # ---- events --------------------------------------------------------------------------

    def test_command_job_events(self):
        after = self.last_seq()
        job = self.s.AddJob(pb.AddJobRequest(job=cmd_job("echo-1", argv=("/bin/echo", "hello")),
                                             request_id="echo-req-1"), timeout=T)
        self.assertEqual(job.trigger.WhichOneof("kind"), "date")
        col = Collector(self.s.SubscribeEvents(pb.SubscribeEventsRequest(
            after_sequence=after, job_ids=["echo-1"]), timeout=60))
        try:
            ok = col.wait(lambda items: any(e.type == ET.Value("EVENT_TYPE_JOB_EXECUTED") for e in events(items)))
            self.assertTrue(ok, [str(e) for e in col.events()] + [str(col.error)])
            types = [e.type for e in col.events()]
            for t in ("EVENT_TYPE_JOB_ADDED", "EVENT_TYPE_JOB_SUBMITTED", "EVENT_TYPE_JOB_EXECUTED"):
                self.assertIn(ET.Value(t), types)
            ex = [e for e in col.events() if e.type == ET.Value("EVENT_TYPE_JOB_EXECUTED")][0]
            self.assertEqual(ex.outcome.stdout_tail, b"hello\n")
            self.assertEqual(ex.outcome.status, pb.RUN_STATUS_SUCCEEDED)
            self.assertEqual(ex.outcome.exit_code, 0)
            seqs = [e.sequence for e in col.events()]
            self.assertEqual(seqs, sorted(seqs))
            self.assertTrue(all(e.job_id == "echo-1" for e in col.events()))
        finally:
            col.close()

    def test_resume_with_after_sequence(self):
        types = [ET.Value("EVENT_TYPE_JOB_ADDED")]
        col = Collector(self.s.SubscribeEvents(pb.SubscribeEventsRequest(
            types=types, send_bookmarks=True), timeout=60))
        self.assertTrue(col.wait_caught_up(), str(col.error))
        self.s.AddJob(pb.AddJobRequest(job=cmd_job("resume-0", trigger=far_date())), timeout=T)
        self.assertTrue(col.wait(lambda items: any(e.job_id == "resume-0" for e in events(items))))
        seen = [e for e in col.events() if e.job_id == "resume-0"][0].sequence
        col.close()
        missed = ["resume-%d" % i for i in range(1, 4)]
        for jid in missed:
            self.s.AddJob(pb.AddJobRequest(job=cmd_job(jid, trigger=far_date())), timeout=T)
        col = Collector(self.s.SubscribeEvents(pb.SubscribeEventsRequest(
            types=types, after_sequence=seen, send_bookmarks=True), timeout=60))
        try:
            ok = col.wait(lambda items: any(i.WhichOneof("item") == "bookmark" and i.bookmark.caught_up
                                            for i in items))
            self.assertTrue(ok, str(col.error))
            got = [e.job_id for e in col.events()]
            self.assertEqual(got, missed)
        finally:
            col.close()
        self.assertCode(grpc.StatusCode.OUT_OF_RANGE, lambda r, timeout: list(self.s.SubscribeEvents(r, timeout=timeout)),
                        pb.SubscribeEventsRequest(after_sequence=10 ** 12))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, lambda r, timeout: list(self.s.SubscribeEvents(r, timeout=timeout)),
                        pb.SubscribeEventsRequest(types=[0]))
        for jid in ["resume-0"] + missed:
            self.s.RemoveJob(pb.RemoveJobRequest(job_id=jid), timeout=T)

    def test_slow_subscriber_does_not_delay_others(self):
        # A never reads; B reads. B must get every event promptly.
        stuck = self.s.SubscribeEvents(pb.SubscribeEventsRequest(), timeout=120)
        col = Collector(self.s.SubscribeEvents(pb.SubscribeEventsRequest(
            types=[ET.Value("EVENT_TYPE_JOB_ADDED")], send_bookmarks=True), timeout=120))
        self.assertTrue(col.wait_caught_up(), str(col.error))
        try:
            n = 600
            ids = ["slow-%04d" % i for i in range(n)]
            errors = []

            def adder(chunk):
                try:
                    for jid in chunk:
                        self.s.AddJob(pb.AddJobRequest(job=cmd_job(jid, trigger=far_date(), name="x" * 200)),
                                      timeout=T)
                except grpc.RpcError as e:
                    errors.append(e)

            th = [threading.Thread(target=adder, args=(ids[k::8],)) for k in range(8)]
            t0 = time.time()
            for t in th:
                t.start()
            for t in th:
                t.join(timeout=60)
            added = time.time()
            self.assertEqual(errors, [])
            ok = col.wait(lambda items: len([e for e in events(items) if e.job_id.startswith("slow-")]) >= n,
                          timeout=30)
            self.assertTrue(ok, "B got %d of %d" % (len(col.events()), n))
            self.assertLess(time.time() - added, 10, "B was delayed")
            self.assertLess(added - t0, 60)
        finally:
            col.close()
            stuck.cancel()
        self.s.RemoveAllJobs(pb.RemoveAllJobsRequest(), timeout=T)

    # ---- pagination, masks, idempotency ----------------------------------------------------------

    def test_pagination_and_filters(self):
        ids = ["page-%02d" % i for i in range(25)]
        for i, jid in enumerate(ids):
            self.s.AddJob(pb.AddJobRequest(job=cmd_job(jid, trigger=far_date(), paused=(i % 5 == 0),
                                                       labels={"team": "a" if i % 2 else "b", "n": str(i)})),
                          timeout=T)
        seen, token, pages = [], "", 0
        while pages < 10:
            r = self.s.ListJobs(pb.ListJobsRequest(page_size=10, page_token=token,
                                                   label_selector="n"), timeout=T)
            seen += [j.id for j in r.jobs]
            pages += 1
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(seen, ids)
        self.assertEqual(pages, 3)
        r = self.s.ListJobs(pb.ListJobsRequest(label_selector="team=a"), timeout=T)
        self.assertEqual([j.id for j in r.jobs], ids[1::2])
        r = self.s.ListJobs(pb.ListJobsRequest(label_selector="team!=a,n"), timeout=T)
        self.assertEqual([j.id for j in r.jobs], ids[0::2])
        r = self.s.ListJobs(pb.ListJobsRequest(label_selector="n in (1,2,3)"), timeout=T)
        self.assertEqual([j.id for j in r.jobs], ids[1:4])
        r = self.s.ListJobs(pb.ListJobsRequest(label_selector="n", paused=True), timeout=T)
        self.assertEqual([j.id for j in r.jobs], ids[0::5])
        self.assertFalse(r.jobs[0].HasField("stats"))
        r = self.s.ListJobs(pb.ListJobsRequest(page_size=10, label_selector="n"), timeout=T)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ListJobs,
                        pb.ListJobsRequest(page_size=10, page_token=r.next_page_token, label_selector="team=a"),
                        contains="page_token")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ListJobs,
                        pb.ListJobsRequest(page_token="!!!"), contains="page_token")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ListJobs,
                        pb.ListJobsRequest(page_size=-1), contains="page_size")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ListJobs,
                        pb.ListJobsRequest(label_selector="bad key=1"), contains="label_selector")
        r = self.s.RemoveAllJobs(pb.RemoveAllJobsRequest(jobstore="default"), timeout=T)
        self.assertGreaterEqual(r.removed_count, 25)

    def test_modify_job_masks(self):
        self.s.AddJob(pb.AddJobRequest(job=cmd_job("mod-1", trigger=cron(hour="3"), labels={"a": "1"})),
                      timeout=T)
        mask = field_mask_pb2.FieldMask
        j = self.s.ModifyJob(pb.ModifyJobRequest(job=pb.Job(id="mod-1", name="new name", coalesce=False),
                                                 update_mask=mask(paths=["name"])), timeout=T)
        self.assertEqual(j.name, "new name")
        self.assertFalse(j.HasField("coalesce"))  # not in the mask: unchanged (default)
        self.assertEqual(j.trigger.cron.hour, "3")
        j = self.s.ModifyJob(pb.ModifyJobRequest(
            job=pb.Job(id="mod-1", coalesce=False, max_instances=3, overlap_policy=pb.OVERLAP_POLICY_QUEUE_ALL,
                       misfire_grace_time=pb.MisfireGraceTime(unlimited=True), labels={"b": "2"}),
            update_mask=mask(paths=["coalesce", "max_instances", "overlap_policy", "misfire_grace_time", "labels"])),
            timeout=T)
        self.assertTrue(j.HasField("coalesce"))
        self.assertFalse(j.coalesce)
        self.assertEqual(j.max_instances, 3)
        self.assertEqual(j.overlap_policy, pb.OVERLAP_POLICY_QUEUE_ALL)
        self.assertTrue(j.misfire_grace_time.unlimited)
        self.assertEqual(dict(j.labels), {"b": "2"})
        self.assertEqual(j.name, "new name")
        j = self.s.ModifyJob(pb.ModifyJobRequest(job=pb.Job(id="mod-1", trigger=cron(hour="4")),
                                                 update_mask=mask(paths=["trigger"])), timeout=T)
        self.assertEqual(j.trigger.cron.hour, "4")
        c = grpc.StatusCode.INVALID_ARGUMENT
        self.assertCode(c, self.s.ModifyJob, pb.ModifyJobRequest(job=pb.Job(id="mod-1"), update_mask=mask(paths=["bogus"])),
                        contains="update_mask")
        self.assertCode(c, self.s.ModifyJob, pb.ModifyJobRequest(job=pb.Job(id="mod-1"), update_mask=mask(paths=["id"])),
                        contains="update_mask")
        self.assertCode(c, self.s.ModifyJob, pb.ModifyJobRequest(job=pb.Job(id="mod-1"), update_mask=mask()),
                        contains="update_mask")
        self.assertCode(c, self.s.ModifyJob, pb.ModifyJobRequest(job=pb.Job(id="mod-1"), update_mask=mask(paths=["trigger"])),
                        contains="job.trigger")
        self.assertCode(c, self.s.ModifyJob, pb.ModifyJobRequest(
            job=pb.Job(id="mod-1", trigger=cron(minute="99")), update_mask=mask(paths=["trigger"])),
            contains="job.trigger.cron.minute")
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.ModifyJob,
                        pb.ModifyJobRequest(job=pb.Job(id="nope", name="x"), update_mask=mask(paths=["name"])))
        j = self.s.GetJob(pb.GetJobRequest(job_id="mod-1"), timeout=T)
        self.assertEqual(j.trigger.cron.hour, "4")  # failed modifications changed nothing
        j = self.s.ModifyJob(pb.ModifyJobRequest(job=cmd_job("mod-1", argv=("/bin/echo", "x"), trigger=cron(hour="5")),
                                                 update_mask=mask(paths=["*"])), timeout=T)
        self.assertEqual(list(j.target.command.argv), ["/bin/echo", "x"])
        self.assertEqual(j.name, "mod-1")  # `*` resets unset fields to their defaults
        self.s.RemoveJob(pb.RemoveJobRequest(job_id="mod-1"), timeout=T)

    def test_request_id_replay(self):
        req = pb.AddJobRequest(job=cmd_job(trigger=far_date(), labels={"rid": "1"}), request_id="rid-add-1")
        a = self.s.AddJob(req, timeout=T)
        b = self.s.AddJob(req, timeout=T)
        self.assertEqual(a.id, b.id)
        r = self.s.ListJobs(pb.ListJobsRequest(label_selector="rid=1"), timeout=T)
        self.assertEqual(len(r.jobs), 1)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.AddJob,
                        pb.AddJobRequest(job=cmd_job(trigger=far_date()), request_id="x" * 65), contains="request_id")
        p = pb.PauseJobRequest(job_id=a.id, request_id="rid-pause-1")
        self.assertTrue(self.s.PauseJob(p, timeout=T).paused)
        self.assertTrue(self.s.PauseJob(p, timeout=T).paused)
        # The same id with a different body is a mistake, not a retry.
        other = pb.AddJobRequest(job=cmd_job(trigger=far_date(), labels={"rid": "2"}), request_id="rid-add-1")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.AddJob, other, contains="different request")
        self.assertEqual(len(self.s.ListJobs(pb.ListJobsRequest(label_selector="rid=2"), timeout=T).jobs), 0)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ResumeJob,
                        pb.ResumeJobRequest(job_id=a.id, request_id="rid-pause-1"), contains="request_id")
        self.assertTrue(self.s.GetJob(pb.GetJobRequest(job_id=a.id), timeout=T).paused)
        self.s.RemoveJob(pb.RemoveJobRequest(job_id=a.id), timeout=T)

    def test_request_id_replay_with_maps_in_another_order(self):
        # A client that builds its retry anew may encode a map in another
        # order (Go's differs each time): it is still the same request. The
        # bytes are built here entry by entry, in the order given (Python's
        # own order follows its hash table).
        def num(msg, field):
            return msg.DESCRIPTOR.fields_by_name[field].number

        def req(order, labels=None):
            labels = labels or {k: "v" + k for k in order}
            cmd = pb.CommandTarget(argv=["/bin/true"]).SerializeToString() + b"".join(
                pb.CommandTarget(env={"E" + k: k}).SerializeToString() for k in order)
            job = (pb.Job(trigger=far_date()).SerializeToString()
                   + ld(num(pb.Job, "target"), ld(num(pb.Target, "command"), cmd))
                   + b"".join(pb.Job(labels={k: labels[k]}).SerializeToString() for k in order))
            return ld(num(pb.AddJobRequest, "job"), job) + pb.AddJobRequest(request_id="rid-maps-1").SerializeToString()

        add = self.d.channel.unary_unary("/apsd.v1.Scheduler/AddJob", response_deserializer=pb.Job.FromString)
        first, retry = req(["a", "b", "c"]), req(["c", "a", "b"])
        self.assertNotEqual(first, retry)
        a = add(first, timeout=T)
        b = add(retry, timeout=T)
        self.assertEqual(a.id, b.id)
        self.assertEqual(dict(b.labels), {"a": "va", "b": "vb", "c": "vc"})
        self.assertEqual(dict(b.target.command.env), {"Ea": "a", "Eb": "b", "Ec": "c"})
        self.assertEqual(len(self.s.ListJobs(pb.ListJobsRequest(label_selector="a=va"), timeout=T).jobs), 1)
        changed = req(["c", "b", "a"], {"a": "va", "b": "vb", "c": "other"})
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, add, changed, contains="different request")
        self.s.RemoveJob(pb.RemoveJobRequest(job_id=a.id), timeout=T)

    def test_request_id_with_a_huge_map(self):
        # The fingerprint sorts map entries: 100,000 of them in reverse
        # order (1.5 MB) must not take a handler thread for long.
        env = b"".join(pb.CommandTarget(env={"K%06d" % i: "v"}).SerializeToString() for i in reversed(range(100000)))
        cmd = pb.CommandTarget(argv=["/bin/true"]).SerializeToString() + env
        job = (pb.Job(trigger=far_date()).SerializeToString()
               + ld(pb.Job.DESCRIPTOR.fields_by_name["target"].number,
                    ld(pb.Target.DESCRIPTOR.fields_by_name["command"].number, cmd)))
        req = ld(pb.AddJobRequest.DESCRIPTOR.fields_by_name["job"].number, job) + \
            pb.AddJobRequest(request_id="rid-huge-1").SerializeToString()
        add = self.d.channel.unary_unary("/apsd.v1.Scheduler/AddJob", response_deserializer=pb.Job.FromString)
        t0 = time.monotonic()
        try:
            j = add(req, timeout=30)
            self.s.RemoveJob(pb.RemoveJobRequest(job_id=j.id), timeout=T)
        except grpc.RpcError:
            pass  # refused or not: the answer's time is what is tested
        self.assertLess(time.monotonic() - t0, 5)
        self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)  # still alive

    def test_remove_request_id_replay(self):
        a = self.s.AddJob(pb.AddJobRequest(job=cmd_job(trigger=far_date())), timeout=T)
        rm = pb.RemoveJobRequest(job_id=a.id, request_id="rid-rm-1")
        self.s.RemoveJob(rm, timeout=T)
        self.s.RemoveJob(rm, timeout=T)  # a retry succeeds instead of NOT_FOUND
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.RemoveJob,
                        pb.RemoveJobRequest(job_id=a.id, request_id="rid-rm-2"))

    # ---- the other RPCs ----------------------------------------------------------------------

    def test_pause_resume_reschedule_run_now(self):
        self.s.AddJob(pb.AddJobRequest(job=cmd_job("pr-1", trigger=cron(hour="2"))), timeout=T)
        j = self.s.PauseJob(pb.PauseJobRequest(job_id="pr-1"), timeout=T)
        self.assertTrue(j.paused)
        self.assertFalse(j.HasField("next_run_time"))
        j = self.s.ResumeJob(pb.ResumeJobRequest(job_id="pr-1"), timeout=T)
        self.assertFalse(j.paused)
        self.assertTrue(j.HasField("next_run_time"))
        j = self.s.RescheduleJob(pb.RescheduleJobRequest(job_id="pr-1", trigger=interval(hours=2)), timeout=T)
        self.assertEqual(j.trigger.interval.hours, 2)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.RescheduleJob,
                        pb.RescheduleJobRequest(job_id="pr-1", trigger=cron(day_of_week="fooday")),
                        contains="trigger.cron.day_of_week")
        r = self.s.RunJobNow(pb.RunJobNowRequest(job_id="pr-1"), timeout=T)
        self.assertTrue(r.HasField("scheduled_run_time"))
        self.assertEqual(len(r.run_id), 32)  # started at once: a free instance slot
        self.assertFalse(r.queued)
        j = self.s.GetJob(pb.GetJobRequest(job_id="pr-1"), timeout=T)
        self.assertEqual(j.trigger.interval.hours, 2)  # the schedule is untouched
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.RunJobNow, pb.RunJobNowRequest(job_id="nope"))
        self.s.RemoveJob(pb.RemoveJobRequest(job_id="pr-1"), timeout=T)

    def test_preview_trigger(self):
        start = timestamp_pb2.Timestamp()
        start.FromJsonString("2026-01-01T00:00:00Z")
        r = self.s.PreviewTrigger(pb.PreviewTriggerRequest(trigger=cron(hour="9", minute="30"), start_time=start,
                                                           count=3), timeout=T)
        self.assertEqual([t.ToJsonString() for t in r.fire_times],
                         ["2026-01-01T09:30:00Z", "2026-01-02T09:30:00Z", "2026-01-03T09:30:00Z"])
        self.assertIn("cron[", r.description)
        self.assertEqual(r.effective_trigger.cron.timezone, "UTC")
        r = self.s.PreviewTrigger(pb.PreviewTriggerRequest(trigger=interval(minutes=5), start_time=start), timeout=T)
        self.assertEqual(len(r.fire_times), 10)
        self.assertEqual(r.fire_times[0].ToJsonString(), "2026-01-01T00:05:00Z")
        c = grpc.StatusCode.INVALID_ARGUMENT
        self.assertCode(c, self.s.PreviewTrigger, pb.PreviewTriggerRequest(trigger=cron(hour="1"), count=1001),
                        contains="count")
        self.assertCode(c, self.s.PreviewTrigger, pb.PreviewTriggerRequest(), contains="trigger")
        self.assertCode(c, self.s.PreviewTrigger, pb.PreviewTriggerRequest(trigger=cron(hour="24")),
                        contains="trigger.cron.hour")

    def test_backfill_and_scheduler_info(self):
        self.s.AddJob(pb.AddJobRequest(job=cmd_job("bf-1", trigger=interval(minutes=10))), timeout=T)
        now = int(time.time())
        start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
        start.FromSeconds(now - 3600)
        end.FromSeconds(now - 60)
        r = self.s.Backfill(pb.BackfillRequest(job_id="bf-1", start_time=start, end_time=end, validate_only=True),
                            timeout=T)
        self.assertEqual(len(r.scheduled_run_times), 0)  # the job's interval starts after now
        c = grpc.StatusCode.INVALID_ARGUMENT
        self.assertCode(c, self.s.Backfill, pb.BackfillRequest(job_id="bf-1", start_time=start), contains="end_time")
        self.assertCode(c, self.s.Backfill, pb.BackfillRequest(job_id="bf-1", start_time=end, end_time=start),
                        contains="end_time")
        self.assertCode(c, self.s.Backfill, pb.BackfillRequest(job_id="bf-1", start_time=start, end_time=end,
                                                               max_runs=-1), contains="max_runs")
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.Backfill,
                        pb.BackfillRequest(job_id="nope", start_time=start, end_time=end))
        info = self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        self.assertEqual(info.state, pb.SCHEDULER_STATE_RUNNING)
        self.assertEqual(info.default_timezone, "UTC")
        self.assertEqual({s.name for s in info.jobstores}, {"default", "memory"})
        self.assertIn("default", {e.name for e in info.executors})
        self.assertGreater(info.event_log.last_sequence, 0)
        self.assertTrue(info.default_coalesce)
        self.assertEqual(info.default_max_instances, 1)
        # Counts come from the store indexes, not a scan.
        self.s.AddJob(pb.AddJobRequest(job=cmd_job("bf-2", trigger=interval(minutes=10))), timeout=T)
        self.s.PauseJob(pb.PauseJobRequest(job_id="bf-2"), timeout=T)
        listed = self.s.ListJobs(pb.ListJobsRequest(jobstore="default", page_size=1000), timeout=T).jobs
        info = self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        store = [st for st in info.jobstores if st.name == "default"][0]
        self.assertEqual(store.job_count, len(listed))
        self.assertEqual(store.paused_job_count, sum(1 for j in listed if j.paused))
        self.assertGreaterEqual(store.paused_job_count, 1)
        wake = min(j.next_run_time.ToMicroseconds() for j in listed if j.HasField("next_run_time"))
        self.assertEqual(info.next_wakeup_time.ToMicroseconds(), wake)
        self.s.RemoveJob(pb.RemoveJobRequest(job_id="bf-2"), timeout=T)
        self.s.RemoveJob(pb.RemoveJobRequest(job_id="bf-1"), timeout=T)

    def test_health_and_reflection(self):
        check = self.d.channel.unary_unary("/grpc.health.v1.Health/Check")
        self.assertEqual(check(b"", timeout=T), b"\x08\x01")  # SERVING
        self.assertCode(grpc.StatusCode.NOT_FOUND, check, b"\x0a\x03foo")
        if GRPCURL is None:
            self.skipTest("no grpcurl")
        out = subprocess.run([GRPCURL, "-plaintext", "127.0.0.1:%d" % self.d.port, "list"],
                             capture_output=True, timeout=30, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("apsd.v1.Scheduler", out.stdout)
        out = subprocess.run([GRPCURL, "-plaintext", "-d", '{"trigger":{"cron":{"hour":"9"}},"count":1}',
                              "127.0.0.1:%d" % self.d.port, "apsd.v1.Scheduler/PreviewTrigger"],
                             capture_output=True, timeout=30, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("fire_times", out.stdout)

    def test_reflection_client_that_does_not_read(self):
        """A reflection client that keeps asking without reading the replies
        (each 2,000 times its request) is cut with RESOURCE_EXHAUSTED once
        16 are queued, instead of the daemon queueing them without bound."""
        import importlib.util
        path = find_runfile("proto/grpc/reflection/v1/reflection_pb2.py")
        spec = importlib.util.spec_from_file_location("apsd_test_reflection_flood", path)
        rpb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rpb)
        call = self.d.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString)
        req = rpb.ServerReflectionRequest(file_by_filename="apsd/v1/scheduler.proto")
        replies = call(iter([req] * 3000), timeout=60)
        time.sleep(3)  # not reading
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in replies:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("replies unread", cm.exception.details())
        self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)  # still serving

    def test_reflection_client_from_reflection_proto(self):
        """A reflection client built from the modules generated from
        proto/grpc/reflection/{v1,v1alpha}/reflection.proto (loaded by path:
        the `grpc` package name is grpcio's), used as grpcurl uses it: list
        the services, fetch the files of a symbol and their imports, build a
        dynamic client from them and make a call with it."""
        import importlib.util
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        for version in ("v1", "v1alpha"):
            path = find_runfile("proto/grpc/reflection/%s/reflection_pb2.py" % version)
            spec = importlib.util.spec_from_file_location("apsd_test_reflection_" + version, path)
            rpb = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(rpb)
            call = self.d.channel.stream_stream(
                "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
                request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                response_deserializer=rpb.ServerReflectionResponse.FromString)

            def ask(**kw):
                return list(call(iter([rpb.ServerReflectionRequest(**kw)]), timeout=T))[0]

            services = {s.name for s in ask(list_services="").list_services_response.service}
            self.assertTrue({"apsd.v1.Scheduler", "apsd.v1.Workers", "grpc.health.v1.Health",
                             "grpc.reflection.v1.ServerReflection",
                             "grpc.reflection.v1alpha.ServerReflection"} <= services, services)
            protos = {}

            def take(resp):
                names = []
                for raw in resp.file_descriptor_response.file_descriptor_proto:
                    fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                    protos[fd.name] = fd
                    names.append(fd.name)
                return names

            pending = take(ask(file_containing_symbol="apsd.v1.Scheduler"))
            self.assertIn("apsd/v1/scheduler.proto", pending)
            while pending:  # imports not sent yet are fetched by name
                for dep in protos[pending.pop()].dependency:
                    if dep not in protos:
                        pending += take(ask(file_by_filename=dep))
            pool = descriptor_pool.DescriptorPool()
            added = set()

            def add(name):
                if name not in added:
                    for dep in protos[name].dependency:
                        add(dep)
                    pool.Add(protos[name])
                    added.add(name)

            for name in list(protos):
                add(name)
            method = pool.FindServiceByName("apsd.v1.Scheduler").methods_by_name["PreviewTrigger"]
            factory = message_factory.MessageFactory(pool)  # protobuf 3.21 (Debian 12)
            req_cls = factory.GetPrototype(method.input_type)
            resp_cls = factory.GetPrototype(method.output_type)
            req = req_cls()
            req.trigger.cron.hour = "9"
            req.count = 2
            resp = self.d.channel.unary_unary(
                "/apsd.v1.Scheduler/PreviewTrigger", request_serializer=req_cls.SerializeToString,
                response_deserializer=resp_cls.FromString)(req, timeout=T)
            self.assertEqual(len(resp.fire_times), 2)
            ext = ask(all_extension_numbers_of_type="apsd.v1.Job")
            self.assertEqual(ext.WhichOneof("message_response"), "all_extension_numbers_response")
            # Unknown names are NOT_FOUND inside the stream.
            for kw in ({"file_containing_symbol": "no.such.Symbol"}, {"file_by_filename": "no/such.proto"}):
                err = ask(**kw).error_response
                self.assertEqual(err.error_code, grpc.StatusCode.NOT_FOUND.value[0], kw)

    # ---- workers ------------------------------------------------------------------------------

    def test_workers_acquire_complete(self):
        info = self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
        if "workers" not in {e.type for e in info.executors}:
            self.skipTest("no workers executor")
        after = self.last_seq()
        args = struct_pb2.ListValue()
        args.extend([1, "two"])
        kwargs = struct_pb2.Struct()
        kwargs.update({"k": [True, None]})
        self.s.AddJob(pb.AddJobRequest(job=pb.Job(id="remote-1", target=pb.Target(remote=pb.RemoteTarget(
            task="mod:func", args=args, kwargs=kwargs, queue="q1")))), timeout=T)
        stream = self.d.workers.Acquire(wpb.AcquireRequest(queue="q1", worker_id="w-1"), timeout=60)
        try:
            item = next(stream)
            self.assertEqual(item.WhichOneof("item"), "dispatch")
            d = item.dispatch
            # Leased to this worker: running 1, pending 0, one worker attached.
            ex = [e for e in self.s.GetScheduler(pb.GetSchedulerRequest(), timeout=T).executors
                  if e.type == "workers"][0]
            self.assertEqual((ex.running, ex.pending, ex.connected_workers), (1, 0, 1))
            self.assertEqual(d.job_id, "remote-1")
            self.assertEqual(d.task, "mod:func")
            self.assertEqual(list(d.args), [1, "two"])
            self.assertEqual(d.kwargs["k"][0], True)
            r = self.d.workers.ExtendLease(wpb.ExtendLeaseRequest(run_id=d.run_id, lease_token=d.lease_token),
                                           timeout=T)
            self.assertTrue(r.HasField("lease_deadline"))
            self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.d.workers.Complete,
                            wpb.CompleteRequest(run_id=d.run_id, lease_token="0" * 32))
            rv = struct_pb2.Value(string_value="done")
            self.d.workers.Complete(wpb.CompleteRequest(run_id=d.run_id, lease_token=d.lease_token,
                                                        return_value=rv), timeout=T)
            self.assertCode(grpc.StatusCode.NOT_FOUND, self.d.workers.Complete,
                            wpb.CompleteRequest(run_id="f" * 32, lease_token="0" * 32))
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.d.workers.Complete, wpb.CompleteRequest())
        finally:
            stream.cancel()
        col = Collector(self.s.SubscribeEvents(pb.SubscribeEventsRequest(
            after_sequence=after, job_ids=["remote-1"], types=[ET.Value("EVENT_TYPE_JOB_EXECUTED")]), timeout=60))
        try:
            self.assertTrue(col.wait(lambda items: len(events(items)) >= 1), str(col.error))
            self.assertEqual(col.events()[0].outcome.return_value.string_value, "done")
            self.assertEqual(col.events()[0].outcome.worker_id, "w-1")
        finally:
            col.close()
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda r, timeout: next(self.d.workers.Acquire(r, timeout=timeout)),
                        wpb.AcquireRequest(queue="q1"), contains="worker_id")


class SecurityTest(unittest.TestCase):
    """Bearer tokens with roles, and TLS."""

    def test_tokens_and_tls(self):
        import hashlib
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-sec-")
        try:
            tokens = os.path.join(tmp, "tokens")
            with open(tokens, "w") as f:
                f.write("# roles\nread %s\nwrite %s\n" % (hashlib.sha256(b"reader-token").hexdigest(),
                                                           hashlib.sha256(b"writer-token").hexdigest()))
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            tls = shutil.which("openssl") is not None and subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                 "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                capture_output=True, timeout=60).returncode == 0
            extra = ["--token-file", tokens] + (["--tls-cert", cert, "--tls-key", key] if tls else [])
            creds = None
            if tls:
                with open(cert, "rb") as f:
                    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            d = Daemon(tmp, extra, creds=creds).start()
            try:
                s = scheduler_pb2_grpc.SchedulerStub(d.channel)
                read = (("authorization", "Bearer reader-token"),)
                write = (("authorization", "Bearer writer-token"),)
                with self.assertRaises(grpc.RpcError) as cm:
                    s.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(grpc.RpcError) as cm:
                    s.GetScheduler(pb.GetSchedulerRequest(), timeout=T,
                                   metadata=(("authorization", "Bearer wrong"),))
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                s.GetScheduler(pb.GetSchedulerRequest(), timeout=T, metadata=read)
                with self.assertRaises(grpc.RpcError) as cm:
                    s.AddJob(pb.AddJobRequest(job=cmd_job("sec-1", trigger=far_date())), timeout=T, metadata=read)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
                j = s.AddJob(pb.AddJobRequest(job=cmd_job("sec-1", trigger=far_date())), timeout=T, metadata=write)
                self.assertEqual(j.id, "sec-1")
                self.assertEqual(s.GetJob(pb.GetJobRequest(job_id="sec-1"), timeout=T, metadata=write).id, "sec-1")
                if tls:
                    plain = grpc.insecure_channel("127.0.0.1:%d" % d.port)
                    with self.assertRaises(grpc.RpcError):
                        scheduler_pb2_grpc.SchedulerStub(plain).GetScheduler(
                            pb.GetSchedulerRequest(), timeout=3, metadata=read)
                    plain.close()
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class SlowSubscriberTest(unittest.TestCase):
    """A subscriber that never reads is cut with RESOURCE_EXHAUSTED once its
    queue is full, while a reading one gets every event."""

    def test_cut_never_reading_subscriber(self):
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-slow-")
        try:
            d = Daemon(tmp, ["--subscriber-queue", "64"]).start()
            try:
                s = d.sched
                stuck = s.SubscribeEvents(pb.SubscribeEventsRequest(), timeout=120)
                executed = ET.Value("EVENT_TYPE_JOB_EXECUTED")
                col = Collector(s.SubscribeEvents(pb.SubscribeEventsRequest(types=[executed], send_bookmarks=True),
                                                  timeout=120))
                self.assertTrue(col.wait_caught_up(), str(col.error))
                now = int(time.time())
                start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
                start.FromSeconds(now - 600)
                end.FromSeconds(now - 1)
                # Each run prints 64 KiB: far more than the transport buffers.
                s.AddJob(pb.AddJobRequest(job=pb.Job(
                    id="big", max_instances=10, trigger=far_date(),
                    target=pb.Target(command=pb.CommandTarget(argv=["/usr/bin/head", "-c", "65536", "/dev/zero"])))),
                    timeout=T)
                n = 300
                r = s.Backfill(pb.BackfillRequest(job_id="big", start_time=start, end_time=end, max_runs=n),
                               timeout=T)
                self.assertEqual(len(r.scheduled_run_times), 0)  # a date trigger: nothing in the past
                s.ModifyJob(pb.ModifyJobRequest(job=pb.Job(id="big", trigger=pb.Trigger(
                    interval=pb.IntervalTrigger(seconds=1, start_date=start))),
                    update_mask=field_mask_pb2.FieldMask(paths=["trigger"])), timeout=T)
                r = s.Backfill(pb.BackfillRequest(job_id="big", start_time=start, end_time=end, max_runs=n),
                               timeout=T)
                self.assertEqual(len(r.scheduled_run_times), n)
                self.assertTrue(r.truncated)
                ok = col.wait(lambda items: len(events(items)) >= n, timeout=90)
                self.assertTrue(ok, "the reading subscriber got %d of %d" % (len(col.events()), n))
                self.assertEqual(len(col.events()[0].outcome.stdout_tail), 65536)
                got = 0
                with self.assertRaises(grpc.RpcError) as cm:
                    for _ in stuck:
                        got += 1
                        if got > 10 * n:
                            break
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 cm.exception.details())
                self.assertIn("after_sequence", cm.exception.details())
                col.close()
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class PendingAddsTest(unittest.TestCase):
    """AddJob does not hold an engine thread while its commit is on its way;
    --engine-queue bounds the adds waiting for a commit: beyond it
    RESOURCE_EXHAUSTED, and every add answered OK is in the store."""

    def test_bound_on_adds_waiting_for_commit(self):
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-adds-")
        try:
            d = Daemon(tmp, ["--engine-queue", "2"]).start()
            try:
                s = d.sched
                n = 300
                futs = [s.AddJob.future(pb.AddJobRequest(job=pb.Job(
                    id="p%03d" % i, trigger=far_date(),
                    target=pb.Target(command=pb.CommandTarget(argv=["/bin/true"])))), timeout=T)
                    for i in range(n)]
                ok, busy = [], 0
                for i, f in enumerate(futs):
                    try:
                        self.assertEqual(f.result().id, "p%03d" % i)
                        ok.append("p%03d" % i)
                    except grpc.RpcError as e:
                        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.details())
                        self.assertIn("waiting for their commit", e.details())
                        busy += 1
                self.assertGreater(busy, 0)
                self.assertGreater(len(ok), 0)
                self.assertEqual(len(ok) + busy, n)
                got = s.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=T)
                self.assertEqual(sorted(j.id for j in got.jobs), sorted(ok))
                # Nothing stays counted: one at a time, every add goes through.
                for i in range(5):
                    s.AddJob(pb.AddJobRequest(job=pb.Job(
                        id="q%d" % i, trigger=far_date(),
                        target=pb.Target(command=pb.CommandTarget(argv=["/bin/true"])))), timeout=T)
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class RestartTest(unittest.TestCase):
    """SIGTERM exits 0 and the store reopens with every acknowledged job."""

    def test_sigterm_and_reopen(self):
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-restart-")
        try:
            d = Daemon(tmp).start()
            ids = []
            for i in range(50):
                ids.append(d.sched.AddJob(pb.AddJobRequest(job=cmd_job("keep-%02d" % i, trigger=cron(hour="1"))),
                                          timeout=T).id)
            stream = d.sched.SubscribeEvents(pb.SubscribeEventsRequest(), timeout=60)
            col = Collector(stream)
            time.sleep(0.2)
            rc = d.stop()
            self.assertEqual(rc, 0, d.log_text())
            col.th.join(timeout=10)
            self.assertIsNotNone(col.error)
            self.assertEqual(col.error.code(), grpc.StatusCode.UNAVAILABLE)
            d2 = Daemon(tmp).start()
            try:
                got = [j.id for j in d2.sched.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=T).jobs]
                self.assertEqual(got, ids)
            finally:
                # The channel stays open, idle: SIGTERM must not wait out
                # the 5 s grace period for it to close.
                t0 = time.monotonic()
                self.assertEqual(d2.stop(), 0, d2.log_text())
                self.assertLess(time.monotonic() - t0, 3.0, "SIGTERM waited for an idle connection")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_refuses_lost_store(self):
        """An empty data file where the store was in use (a copy that wrote
        nothing) is refused at start with what to do, not opened as a new,
        empty store; the file is left alone, and put back it opens with
        every job."""
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-lost-")
        try:
            # A small reserve: made whatever the temporary disk's free space.
            conf = os.path.join(tmp, "apsd.ini")
            with open(conf, "w") as f:
                f.write("[scheduler]\ndisk_reserve = 65536\n")
            d = Daemon(tmp, extra=["--config", conf]).start()
            for i in range(200):
                d.sched.AddJob(pb.AddJobRequest(job=cmd_job("keep-%03d" % i, argv=["/bin/echo", "x" * 1000],
                                                            trigger=cron(hour="1"))), timeout=T)
            self.assertEqual(d.stop(), 0, d.log_text())
            self.assertTrue(os.path.exists(os.path.join(d.store, "reserve")))
            path = os.path.join(d.store, "data.mdb")
            with open(path, "rb") as f:
                whole = f.read()
            os.truncate(path, 0)
            out = subprocess.run([APSD, "--listen", "127.0.0.1:%d" % free_port(), "--data-dir", d.store,
                                  "--config", conf], capture_output=True, timeout=30, text=True)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertIn("its data file is missing or empty, but the store was in use", out.stderr)
            self.assertIn("restore data.mdb from a copy", out.stderr)
            self.assertEqual(os.path.getsize(path), 0)
            with open(path, "wb") as f:
                f.write(whole)
            d2 = Daemon(tmp, extra=["--config", conf]).start()
            try:
                got = d2.sched.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=T).jobs
                self.assertEqual(len(got), 200)
            finally:
                self.assertEqual(d2.stop(), 0, d2.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_refuses_open_listener_and_bad_flags(self):
        out = subprocess.run([APSD, "--listen", "0.0.0.0:1", "--data-dir", "/nonexistent"],
                             capture_output=True, timeout=30, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--insecure-listen", out.stderr)
        out = subprocess.run([APSD, "--help"], capture_output=True, timeout=30, text=True)
        self.assertEqual(out.returncode, 0)
        for flag in ("--listen", "--data-dir", "--config", "--tls-cert", "--token-file", "[executor NAME]"):
            self.assertIn(flag, out.stdout)
        out = subprocess.run([APSD, "--bogus"], capture_output=True, timeout=30, text=True)
        self.assertEqual(out.returncode, 2)


class LoopPriorityTest(unittest.TestCase):
    """--loop-priority / [scheduler] loop_priority: the scheduler loop (and
    the commit-ahead thread) wait for due times at SCHED_FIFO, as the kernel
    reports; 0 is normal scheduling; out of range is refused."""

    SCHED_OTHER, SCHED_FIFO = 0, 1

    def run_daemon(self, extra, conf=None):
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-prio-")
        try:
            if conf is not None:
                path = os.path.join(tmp, "apsd.ini")
                with open(path, "w") as f:
                    f.write(conf)
                extra = extra + ["--config", path]
            d = Daemon(tmp, extra).start()
            try:
                pid = d.proc.pid
                return (thread_sched(pid, "aps-loop"), thread_sched(pid, "aps-hold"), d.log_text())
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_loop_priority(self):
        if os.geteuid() != 0:
            self.skipTest("needs root for SCHED_FIFO")
        loop, hold, log = self.run_daemon([])
        self.assertEqual(loop, (self.SCHED_FIFO, 10), "the default")
        self.assertEqual(hold, (self.SCHED_FIFO, 10))
        self.assertIn("scheduler loop waits at real-time priority", log)
        loop, hold, log = self.run_daemon(["--loop-priority", "7"])
        self.assertEqual(loop, (self.SCHED_FIFO, 7))
        loop, _, log = self.run_daemon(["--loop-priority", "0"])
        self.assertEqual(loop, (self.SCHED_OTHER, 0))
        self.assertNotIn("real-time", log)
        loop, _, _ = self.run_daemon([], conf="[scheduler]\nloop_priority = 3\n")
        self.assertEqual(loop, (self.SCHED_FIFO, 3))
        # The flag wins over the file.
        loop, _, _ = self.run_daemon(["--loop-priority", "4"], conf="[scheduler]\nloop_priority = 3\n")
        self.assertEqual(loop, (self.SCHED_FIFO, 4))

    def test_out_of_range(self):
        out = subprocess.run([APSD, "--loop-priority", "100"], capture_output=True, timeout=30, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--loop-priority: 0-99", out.stderr)
        refused_config(self, "[scheduler]\nloop_priority = -1\n", "loop_priority: 0-99")


class CommitAheadTest(unittest.TestCase):
    """[scheduler] commit_ahead / commit_ahead_max: how long before its time
    a run of an LMDB job is committed (its JOB_SUBMITTED event published),
    while it still starts at its time; 0 commits it at its time; values out
    of range are refused."""

    def submitted_and_started(self, conf):
        """Adds a date job 2.5 s ahead in a daemon with `conf`; returns its
        run time, when this client received JOB_SUBMITTED, and when the
        command started (all wall-clock seconds)."""
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-ahead-")
        try:
            path = os.path.join(tmp, "apsd.ini")
            with open(path, "w") as f:
                f.write(conf)
            stamp = os.path.join(tmp, "started")
            d = Daemon(tmp, ["--config", path]).start()
            try:
                col = Collector(d.sched.SubscribeEvents(pb.SubscribeEventsRequest(
                    job_ids=["ahead-1"], send_bookmarks=True), timeout=60),
                    take=lambda item: (time.time(), item))
                try:
                    self.assertTrue(col.wait_caught_up())
                    run_at = time.time() + 2.5
                    ts = timestamp_pb2.Timestamp()
                    ts.FromNanoseconds(int(run_at * 1e9))
                    argv = ("/bin/sh", "-c", "date +%s.%N > " + stamp)
                    d.sched.AddJob(pb.AddJobRequest(job=cmd_job(
                        "ahead-1", argv=argv, trigger=pb.Trigger(date=pb.DateTrigger(run_date=ts)))),
                        timeout=T)

                    def got(kind):
                        return [t for t, i in col.snapshot() if i.WhichOneof("item") == "event"
                                and i.event.type == ET.Value(kind)]
                    self.assertTrue(col.wait(lambda items: got("EVENT_TYPE_JOB_EXECUTED"), timeout=20),
                                    d.log_text())
                    submitted = got("EVENT_TYPE_JOB_SUBMITTED")[0]
                finally:
                    col.close()
                with open(stamp) as f:
                    started = float(f.read())
                return run_at, submitted, started
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_one_second_ahead(self):
        run_at, submitted, started = self.submitted_and_started(
            "[scheduler]\ncommit_ahead = 1\ncommit_ahead_max = 1\n")
        # committed between 0.975 s (runs are gathered from the lead less 25 ms) and 1 s ahead
        self.assertLess(submitted, run_at - 0.7)
        self.assertGreaterEqual(started, run_at)  # never early
        self.assertLess(started, run_at + 1.0)

    def test_zero_is_at_its_time(self):
        run_at, submitted, started = self.submitted_and_started("[scheduler]\ncommit_ahead = 0\n")
        self.assertGreaterEqual(submitted, run_at)
        self.assertGreaterEqual(started, run_at)

    def test_out_of_range(self):
        for key in ("commit_ahead = 61", "commit_ahead = -1", "commit_ahead_max = soon"):
            refused_config(self, "[scheduler]\n" + key + "\n", key.split(" ")[0] + ": 0-60 seconds")



class PassSpacingTest(unittest.TestCase):
    """[scheduler] pass_spacing: a run due soon after the last hand-off of
    runs waits that long from it (here 0.4 s; by default 250 us); values out
    of range are refused. Both runs are committed ahead (commit_ahead 1 s),
    so that they wait in the commit-ahead thread, which spaces its hand-offs
    (a pass after a's time, such as the one a's end wakes, would take b at
    once)."""

    def test_second_run_waits_for_the_spacing(self):
        with daemon_with_config(self, "apsd-e2e-spacing-", "[scheduler]\npass_spacing = 0.4\ncommit_ahead = 1\n") as (d, tmp):
            run_at = time.time() + 2.5
            for k, at in (("a", run_at), ("b", run_at + 0.05)):
                ts = timestamp_pb2.Timestamp()
                ts.FromNanoseconds(int(at * 1e9))
                argv = ("/bin/sh", "-c", "date +%s.%N > " + os.path.join(tmp, k + ".tmp")
                        + " && mv " + os.path.join(tmp, k + ".tmp") + " " + os.path.join(tmp, k))
                d.sched.AddJob(pb.AddJobRequest(job=cmd_job(
                    "spacing-" + k, argv=argv,
                    trigger=pb.Trigger(date=pb.DateTrigger(run_date=ts)))), timeout=T)
            started = {}
            deadline = time.time() + 20
            while len(started) < 2 and time.time() < deadline:
                for k in ("a", "b"):
                    if k not in started and os.path.exists(os.path.join(tmp, k)):
                        with open(os.path.join(tmp, k)) as f:
                            started[k] = float(f.read())
                time.sleep(0.02)
            self.assertEqual(sorted(started), ["a", "b"], d.log_text())
            self.assertGreaterEqual(started["a"], run_at)
            self.assertLess(started["a"], run_at + 0.3)  # no hand-off in the 0.4 s before it
            self.assertGreaterEqual(started["b"], run_at + 0.4)

    def test_out_of_range(self):
        for key in ("pass_spacing = 2", "pass_spacing = -1", "pass_spacing = soon"):
            refused_config(self, "[scheduler]\n" + key + "\n", "pass_spacing: 0-1 seconds")


SUBMITTED, ERROR = ET.Value("EVENT_TYPE_JOB_SUBMITTED"), ET.Value("EVENT_TYPE_JOB_ERROR")


def add_held_command(test, d, job_id, argv, **job):
    """Adds command job `job_id` running `argv` (more Job fields in `job`),
    every 60 s from 2.5 s from now, with a live stream of its events, and
    waits for its first JOB_SUBMITTED: on a daemon with commit_ahead 1 s,
    its run committed ahead. Returns (the run's time, the open Collector,
    that event); the caller closes the Collector."""
    run_at = time.time() + 2.5
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(run_at * 1e9))
    col = Collector(d.sched.SubscribeEvents(pb.SubscribeEventsRequest(job_ids=[job_id]), timeout=60))
    try:
        d.sched.AddJob(pb.AddJobRequest(job=cmd_job(
            job_id, argv=argv, trigger=interval(seconds=60, start_date=ts), **job)), timeout=T)
        ok = col.wait(lambda items: any(e.type == SUBMITTED for e in events(items)))
        test.assertTrue(ok, [str(e) for e in col.events()] + [d.log_text()])
    except BaseException:
        col.close()
        raise
    return run_at, col, [e for e in col.events() if e.type == SUBMITTED][0]


class WithdrawnRunTest(unittest.TestCase):
    """A change to a job before the time of its run committed ahead (here
    commit_ahead 1 s) withdraws that run, as APScheduler would not have
    submitted it yet: RemoveJob before the time, and the command never
    starts; the stream shows JOB_SUBMITTED, then JOB_ERROR, status
    CANCELLED, saying why, and no JOB_EXECUTED."""

    def test_remove_before_the_time(self):
        with daemon_with_config(self, "apsd-e2e-withdraw-", "[scheduler]\ncommit_ahead = 1\n") as (d, tmp):
            mark = os.path.join(tmp, "ran")
            run_at, col, _ = add_held_command(self, d, "held", ("/usr/bin/touch", mark))
            try:
                self.assertLess(time.time(), run_at - 0.1)  # committed ahead, not started
                d.sched.RemoveJob(pb.RemoveJobRequest(job_id="held"), timeout=T)
                ok = col.wait(lambda items: any(e.type == ERROR for e in events(items)))
                self.assertTrue(ok, [str(e) for e in col.events()])
                time.sleep(max(0.0, run_at + 0.5 - time.time()))
                self.assertFalse(os.path.exists(mark))
                err = [e for e in col.events() if e.type == ERROR][0]
                self.assertEqual(err.outcome.status, pb.RUN_STATUS_CANCELLED)
                self.assertEqual(err.outcome.error, "withdrawn before its time: the job was removed")
                types = [e.type for e in col.events()]
                self.assertNotIn(ET.Value("EVENT_TYPE_JOB_EXECUTED"), types)
                self.assertLess(types.index(SUBMITTED), types.index(ERROR))
            finally:
                col.close()


class CrashBeforeTheTimeTest(unittest.TestCase):
    """apsd killed (SIGKILL) after a run was committed ahead (commit_ahead
    1 s) and before its time: the run never started, so the restarted
    daemon withdraws it (JOB_ERROR, CANCELLED, "... the scheduler stopped
    first ...") and runs that time again from the job's schedule, on time:
    the command runs once, at its time, and nothing is reported
    interrupted."""

    def test_kill_then_restart(self):
        with daemon_with_config(self, "apsd-e2e-crash-ahead-", "[scheduler]\ncommit_ahead = 1\n") as (d, tmp):
            mark = os.path.join(tmp, "ran")
            # (Unlimited grace: a slow restart runs it late, not never.)
            run_at, col, first = add_held_command(
                self, d, "again", ("/bin/sh", "-c", 'date +%s.%N >> "$0"', mark),
                misfire_grace_time=pb.MisfireGraceTime(unlimited=True))
            col.close()
            self.assertEqual(d.kill(), -9)
            self.assertLess(time.time(), run_at - 0.05)  # committed ahead, killed before its time
            d.start()
            ready = time.time()
            deadline = run_at + 10
            while not os.path.exists(mark) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            with open(mark) as f:
                ran = [float(x) for x in f.read().split()]
            self.assertEqual(len(ran), 1, ran)
            self.assertGreaterEqual(ran[0], run_at - 0.01)
            if ready < run_at - 0.2:
                self.assertLess(ran[0], run_at + 1.0)  # on time
            col = Collector(d.sched.SubscribeEvents(pb.SubscribeEventsRequest(
                job_ids=["again"], after_sequence=0, send_bookmarks=True), timeout=60))
            try:
                ok = col.wait(lambda items: ET.Value("EVENT_TYPE_JOB_EXECUTED") in
                              [e.type for e in events(items)])
                self.assertTrue(ok, [str(e) for e in col.events()])
                evs = col.events()
            finally:
                col.close()
            errs = [e for e in evs if e.type == ERROR]
            self.assertEqual(len(errs), 1, [str(e) for e in evs])
            self.assertEqual(errs[0].run_id, first.run_id)
            self.assertEqual(errs[0].outcome.status, pb.RUN_STATUS_CANCELLED)
            self.assertTrue(errs[0].outcome.error.startswith(
                "withdrawn before its time: the scheduler stopped first"), errs[0].outcome.error)
            subs = [e for e in evs if e.type == SUBMITTED]
            self.assertEqual(len(subs), 2)
            self.assertNotEqual(subs[1].run_id, first.run_id)
            self.assertEqual(subs[1].scheduled_run_times, first.scheduled_run_times)
            job = d.sched.GetJob(pb.GetJobRequest(job_id="again"), timeout=T)
            self.assertEqual(job.stats.failures, 0)
            self.assertEqual(job.stats.runs, 1)


class HealthWatchLimitTest(unittest.TestCase):
    """[limits] max_health_watches: Health.Watch streams stay open until the
    client leaves, so their number is bounded; one over it gets the status,
    then RESOURCE_EXHAUSTED naming the key; a stream that leaves frees its
    place. Bad values are refused."""

    def test_limit(self):
        with daemon_with_config(self, "apsd-e2e-watch-", "[limits]\nmax_health_watches = 2\n") as (d, tmp):
            watch = d.channel.unary_stream("/grpc.health.v1.Health/Watch")
            held = [watch(b"", timeout=60) for _ in range(2)]
            for w in held:
                self.assertEqual(next(w), b"\x08\x01")  # SERVING, then held

            def refused():
                w = watch(b"", timeout=60)
                self.assertEqual(next(w), b"\x08\x01")
                with self.assertRaises(grpc.RpcError) as cm:
                    next(w)
                return cm.exception

            err = refused()
            self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("max_health_watches", err.details())
            held[0].cancel()
            # The daemon sees the cancel a moment later: then a new
            # stream is held (open until its 1 s deadline).
            deadline = time.time() + 10
            while True:
                w = watch(b"", timeout=1.0)
                self.assertEqual(next(w), b"\x08\x01")
                with self.assertRaises(grpc.RpcError) as cm:
                    next(w)
                if cm.exception.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertLess(time.time(), deadline, "the cancelled stream kept its place")
                time.sleep(0.05)
            held[1].cancel()

    def test_out_of_range(self):
        for key in ("max_health_watches = 0", "max_health_watches = many"):
            refused_config(self, "[limits]\n" + key + "\n", "max_health_watches: 1-100000")


class DiskReserveTest(unittest.TestCase):
    """[scheduler] disk_reserve: the LMDB store's directory holds `reserve`,
    32 MiB of allocated blocks by default, the size given, or none with 0;
    GetScheduler's low_space is off while it is there; bad values are
    refused. (tests/reliability/disk_full_test.py fills a disk.)"""

    def reserve_with(self, conf):
        """The reserve file's stat (None if absent) and GetScheduler's
        default store, in a daemon started with `conf`."""
        with daemon_with_config(self, "apsd-e2e-reserve-", conf) as (d, _):
            reserve = os.path.join(d.store, "reserve")
            st = os.stat(reserve) if os.path.exists(reserve) else None
            info = d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T)
            return st, [s for s in info.jobstores if s.name == "default"][0]

    def test_sizes(self):
        st = os.statvfs(tempfile.gettempdir())
        if st.f_bavail * st.f_frsize < 128 << 20:
            self.skipTest("less than 128 MiB free: no room for a 32 MiB reserve (twice that must be free)")
        for conf, size in (("", 32 << 20), ("[scheduler]\ndisk_reserve = 1048576\n", 1 << 20),
                           ("[scheduler]\ndisk_reserve = 0\n", None)):
            st, store = self.reserve_with(conf)
            self.assertFalse(store.low_space, conf)
            if size is None:
                self.assertIsNone(st, conf)
            else:
                self.assertEqual(st.st_size, size, conf)
                self.assertGreaterEqual(st.st_blocks * 512, size, "%r: a hole, not allocated" % conf)

    def test_out_of_range(self):
        for value in ("-1", "lots", "2000000000000"):
            refused_config(self, "[scheduler]\ndisk_reserve = %s\n" % value, "disk_reserve: bytes")


class WriteWindowTest(unittest.TestCase):
    """[scheduler] write_window (store_lmdb.c): the store's data file grows
    past what reusing freed pages takes (commits write at its end), the
    jobs are kept across a restart; bad values are refused."""

    def run_with(self, conf):
        """The data file's size after 300 adds and 150 removals in a daemon
        started with `conf`, and the jobs left after a restart."""
        with daemon_with_config(self, "apsd-e2e-window-", conf) as (d, _):
            for i in range(300):
                d.sched.AddJob(pb.AddJobRequest(job=cmd_job("w-%03d" % i, name="x" * 500,
                                                            trigger=far_date())), timeout=T)
            for i in range(0, 300, 2):
                d.sched.RemoveJob(pb.RemoveJobRequest(job_id="w-%03d" % i), timeout=T)
            size = os.path.getsize(os.path.join(d.store, "data.mdb"))
            d.restart()
            ids = [j.id for j in d.sched.ListJobs(pb.ListJobsRequest(page_size=1000),
                                                  timeout=T).jobs]
            return size, ids

    def test_file_grows_and_jobs_kept(self):
        without, ids = self.run_with("")
        self.assertEqual(ids, ["w-%03d" % i for i in range(1, 300, 2)])
        with_window, ids = self.run_with("[scheduler]\nwrite_window = 262144\n")
        self.assertEqual(ids, ["w-%03d" % i for i in range(1, 300, 2)])
        print("write window: data file %d bytes without, %d with 256 KiB" % (without, with_window),
              file=sys.stderr)
        # About 5 MB of pages written through a 256 KiB window: the file
        # holds up to two windows more than LMDB's own reuse leaves.
        self.assertGreaterEqual(with_window, without + (128 << 10), (without, with_window))
        self.assertLessEqual(with_window, without + (4 << 20), (without, with_window))

    def test_out_of_range(self):
        for value in ("-1", "lots", "2000000000000"):
            refused_config(self, "[scheduler]\nwrite_window = %s\n" % value, "write_window: bytes")


class WorkerLeaseConfigTest(unittest.TestCase):
    """[executor NAME] lease is the lease of a dispatch whose Acquire asks
    for none (it was always 30 s)."""

    def test_configured_lease(self):
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-lease-")
        try:
            path = os.path.join(tmp, "apsd.ini")
            with open(path, "w") as f:
                f.write("[executor default]\ntype = processpool\n"
                        "[executor workers]\ntype = workers\nlease = 300\n")
            d = Daemon(tmp, ["--config", path]).start()
            try:
                d.sched.AddJob(pb.AddJobRequest(job=pb.Job(id="leased", target=pb.Target(
                    remote=pb.RemoteTarget(task="m:f", queue="ql")))), timeout=T)
                stream = d.workers.Acquire(wpb.AcquireRequest(queue="ql", worker_id="w"), timeout=60)
                try:
                    item = next(stream)
                    self.assertEqual(item.dispatch.lease_duration.seconds, 300)
                finally:
                    stream.cancel()
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class NetworkFsConfigTest(unittest.TestCase):
    """[scheduler] allow_network_fs: a boolean (a store on a network file
    system is refused without it: engine/tests/test_store.c, through a test
    hook for the file system's type, since this machine has none)."""

    def test_values(self):
        tmp = tempfile.mkdtemp(prefix="apsd-e2e-netfs-")
        try:
            path = os.path.join(tmp, "apsd.ini")
            with open(path, "w") as f:
                f.write("[scheduler]\nallow_network_fs = true\n")
            d = Daemon(tmp, ["--config", path]).start()
            try:
                job = d.sched.AddJob(pb.AddJobRequest(job=cmd_job(trigger=far_date())), timeout=T)
                self.assertEqual(d.sched.GetJob(pb.GetJobRequest(job_id=job.id), timeout=T).id, job.id)
            finally:
                self.assertEqual(d.stop(), 0, d.log_text())
            with open(path, "w") as f:
                f.write("[scheduler]\nallow_network_fs = maybe\n")
            out = subprocess.run([APSD, "--config", path], capture_output=True, timeout=30, text=True)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("allow_network_fs: not a boolean", out.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
