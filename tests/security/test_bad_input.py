"""The bad-input suite: a table of malformed and hostile requests sent to
the real apsd through a real gRPC client, each with the status code it must
get; afterwards the store must be unchanged except for the table's valid
rows.

What "unchanged" means, precisely (see check_store):
- Through the API: ListJobs (every page, JOB_VIEW_FULL) before and after
  the table. Every job listed before is listed after with byte-identical
  serialized Job messages (timestamps, stats and all); the only new ids are
  those of the valid rows. The event log (replayed with SubscribeEvents
  from the sequence before the table) holds only JOB_ADDED events of valid
  rows: a refused request emits nothing.
- On disk: `mdb_dump -a` of the LMDB environment, taken with the daemon
  stopped, once after seeding and once after the table (the daemon restarts
  in between, so the restart must not change anything either):
    jobs:   every key of the first dump with a byte-identical value; the
            new keys are exactly the valid rows' ids.
    due:    every entry of the first dump kept; new entries only for the
            valid rows' ids (the key is next-run (8 bytes) + id).
    meta:   identical, except `store/event_seq` (the event counter: the
            restart logs SCHEDULER_STARTED/SHUTDOWN) and new `req/` keys
            (request-id records) only for valid rows that carry one.
    events: every event of the first dump kept byte-identical (history is
            never rewritten); new events are appended after it.

Run: bazel test //tests/security:bad_input_test, or from the tree root
(after bazel build //service:apsd //proto:apsd_py):
    /usr/bin/python3 tests/security/test_bad_input.py
"""
import base64
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, T, cmd_job, far_date, grpc, ld, mdb_dump, pb, raw_call, ts,  # noqa: E402
                     varint, wpb)
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2  # noqa: E402

C = grpc.StatusCode
IA, NF, AE, RE, PD, FP, OR, UN = (C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED,
                                  C.PERMISSION_DENIED, C.FAILED_PRECONDITION, C.OUT_OF_RANGE, C.UNIMPLEMENTED)
OK = C.OK
MIB = 1 << 20
Y2099 = 4070908800  # 2099-01-01T00:00:00Z


class Row:
    """One request of the table. `build(ctx)` returns a protobuf message
    (sent with the generated stub) or bytes (sent as they are, through a
    generic call: what the protobuf library would refuse to serialize).
    `adds` = the job ids a valid row creates; `rid` = its request_id."""

    def __init__(self, name, rpc, build, expect, contains=None, adds=(), rid=None, stream=False, bug=None):
        self.name, self.rpc, self.build, self.expect = name, rpc, build, expect
        self.contains, self.adds, self.rid, self.stream = contains, tuple(adds), rid, stream
        self.bug = bug  # a known, reported daemon bug: a wrong code is listed, not failed


# ---- request builders ------------------------------------------------------------------

def cron(**f):
    return pb.Trigger(cron=pb.CronTrigger(**f))


def interval(**f):
    return pb.Trigger(interval=pb.IntervalTrigger(**f))


def cal(**f):
    return pb.Trigger(calendar_interval=pb.CalendarIntervalTrigger(**f))


_bid = [0]


def bid():
    """A fresh id for a request that must fail: if one is wrongly accepted,
    the rows after it are not disturbed."""
    _bid[0] += 1
    return "bad-%03d" % _bid[0]


def add(job, **kw):
    return pb.AddJobRequest(job=job, **kw)


def add_trig(trigger, job_id=None):
    return add(cmd_job(job_id or bid(), trigger=trigger))


def nested(kind, depth, leaf):
    """`depth` levels of all_of/any_of around `leaf` (depth 0 = leaf)."""
    t = leaf
    for i in range(depth):
        k = kind if kind != "mix" else ("all_of" if i % 2 else "any_of")
        cls = pb.AllOfTrigger if k == "all_of" else pb.AnyOfTrigger
        t = pb.Trigger(**{k: cls(triggers=[t])})
    return t


def patched(msg, marker, replacement):
    """`msg` serialized with the bytes `marker` (same length) replaced: how
    invalid UTF-8 and NUL bytes reach the daemon, since the Python protobuf
    library refuses to serialize them in `string` fields."""
    data = msg.SerializeToString()
    assert len(marker) == len(replacement) and data.count(marker) == 1, (marker, data)
    return data.replace(marker, replacement)


def remote_job(job_id, args=None, kwargs=None, task="mod:fn", queue=""):
    return pb.Job(id=job_id, trigger=far_date(), target=pb.Target(remote=pb.RemoteTarget(
        task=task, args=args, kwargs=kwargs, queue=queue)))


def deep_struct(depth):
    s = struct_pb2.Struct()
    cur = s
    for _ in range(depth):
        cur = cur.get_or_create_struct("k")
    return s


def fnv_filter_hash(jobstore="", label_selector="", paused=None):
    """service/scheduler_rpc.c filter_hash: what a page token starts with."""
    h, m = 1469598103934665603, (1 << 64) - 1
    for part in (jobstore, label_selector):
        for c in part.encode():
            h = ((h ^ c) * 1099511628211) & m
        h = ((h ^ 0xFF) * 1099511628211) & m
    p = 2 if paused is None else int(paused)
    return ((h ^ p) * 1099511628211) & m


def page_token(cursor, **filters):
    raw = fnv_filter_hash(**filters).to_bytes(8, "big") + cursor
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def mask(*paths):
    return field_mask_pb2.FieldMask(paths=list(paths))


def dur(seconds, nanos=0):
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


# Raw wire forms (field numbers from scheduler.proto): AddJobRequest.job = 1;
# Job.trigger = 3; Trigger.all_of = 5; AllOfTrigger.triggers = 1.

def raw_deep_trigger(levels):
    t = b""
    for _ in range(levels):
        t = ld(5, ld(1, t))
    return ld(1, ld(3, t))


def make_rows(ctx):
    now = int(time.time())
    good = far_date()
    rows = []

    def r(*a, **kw):
        rows.append(Row(*a, **kw))

    # -- cron fields -------------------------------------------------------------------
    r("cron hour 25", "AddJob", lambda: add_trig(cron(hour="25")), IA, "job.trigger.cron.hour")
    r("cron minute */0", "AddJob", lambda: add_trig(cron(minute="*/0")), IA, "job.trigger.cron.minute")
    r("cron second 60", "AddJob", lambda: add_trig(cron(second="60")), IA, "job.trigger.cron.second")
    r("cron month 13", "AddJob", lambda: add_trig(cron(month="13")), IA, "job.trigger.cron.month")
    r("cron day 0", "AddJob", lambda: add_trig(cron(day="0")), IA, "job.trigger.cron.day")
    r("cron day_of_week fooday", "AddJob", lambda: add_trig(cron(day_of_week="fooday")), IA, "day_of_week")
    r("cron week 54", "AddJob", lambda: add_trig(cron(week="54")), IA, "job.trigger.cron.week")
    r("cron year 10000", "AddJob", lambda: add_trig(cron(year="10000")), IA, "job.trigger.cron.year")
    r("cron range 5-3", "AddJob", lambda: add_trig(cron(hour="5-3")), IA, "job.trigger.cron.hour")
    r("cron day last xyz", "AddJob", lambda: add_trig(cron(day="last xyz")), IA, "job.trigger.cron.day")
    r("cron 5000-term list", "AddJob", lambda: add_trig(cron(minute=",".join(["1"] * 5000))), IA,
      "job.trigger.cron.minute")
    r("crontab 3 fields", "AddJob", lambda: add_trig(cron(crontab="* * *")), IA, "crontab")
    r("crontab with hour", "AddJob", lambda: add_trig(cron(crontab="* * * * *", hour="1")), IA, "crontab")
    r("cron hour NUL suffix", "AddJob",
      lambda: patched(add_trig(cron(hour="9XX")), b"9XX", b"9\x00x"), IA, "job.trigger.cron.hour")
    # -- time zones ---------------------------------------------------------------------
    r("tz unknown", "AddJob", lambda: add_trig(cron(hour="1", timezone="Mars/Olympus")), IA, "timezone")
    r("tz path traversal", "AddJob",
      lambda: add_trig(cron(hour="1", timezone="../../../../etc/passwd")), IA, "timezone")
    r("tz absolute path", "AddJob", lambda: add_trig(cron(hour="1", timezone="/etc/localtime")), IA,
      "timezone")
    r("tz 10 KiB name", "AddJob", lambda: add_trig(interval(hours=1, timezone="A" * 10240)), IA, "timezone")
    r("tz NUL suffix", "AddJob",
      lambda: patched(add_trig(pb.Trigger(date=pb.DateTrigger(run_date=ts(now + 86400 * 365), timezone="UTCXXXX"))),
                      b"UTCXXXX", b"UTC\x00/.."), IA, "timezone")
    r("tz unknown in PreviewTrigger", "PreviewTrigger",
      lambda: pb.PreviewTriggerRequest(trigger=cal(days=1, timezone="Nowhere/Zone")), IA, "timezone")
    # -- intervals ----------------------------------------------------------------------
    r("interval seconds -5", "AddJob", lambda: add_trig(interval(seconds=-5)), IA, "interval.seconds")
    r("interval days -1", "AddJob", lambda: add_trig(interval(days=-1)), IA, "interval.days")
    r("interval microseconds -1", "AddJob", lambda: add_trig(interval(microseconds=-1)), IA,
      "interval.microseconds")
    r("interval weeks INT32_MAX", "AddJob", lambda: add_trig(interval(weeks=2 ** 31 - 1)), IA, "interval")
    r("interval every field INT32_MAX", "AddJob", lambda: add_trig(interval(
        weeks=2 ** 31 - 1, days=2 ** 31 - 1, hours=2 ** 31 - 1, minutes=2 ** 31 - 1, seconds=2 ** 31 - 1,
        microseconds=2 ** 31 - 1)), IA, "interval")
    r("interval INT32_MIN", "AddJob", lambda: add_trig(interval(hours=-2 ** 31)), IA, "interval.hours")
    r("calendar_interval all zero", "AddJob", lambda: add_trig(cal(hour=1)), IA, "calendar_interval")
    r("calendar_interval hour 24", "AddJob", lambda: add_trig(cal(days=1, hour=24)), IA,
      "calendar_interval.hour")
    r("calendar_interval years INT32_MAX", "AddJob", lambda: add_trig(cal(years=2 ** 31 - 1)), IA,
      "calendar_interval")
    r("jitter negative", "AddJob",
      lambda: add_trig(pb.Trigger(interval=pb.IntervalTrigger(hours=1), jitter=dur(-1))), IA, "jitter")
    r("jitter beyond Duration range", "AddJob",
      lambda: add_trig(pb.Trigger(interval=pb.IntervalTrigger(hours=1), jitter=dur(315576000001))), IA,
      "jitter")
    r("jitter inside all_of", "AddJob", lambda: add_trig(pb.Trigger(all_of=pb.AllOfTrigger(triggers=[
        pb.Trigger(cron=pb.CronTrigger(hour="1"), jitter=dur(5))]))), IA, "jitter")
    # -- end before start, out-of-range times ------------------------------------------------
    r("calendar end before start", "AddJob", lambda: add_trig(cal(
        days=1, start_date=ts(Y2099), end_date=ts(Y2099 - 86400 * 3))), IA, "end_date")
    r("backfill end before start", "Backfill", lambda: pb.BackfillRequest(
        job_id="seed-interval", start_time=ts(now - 60), end_time=ts(now - 3600)), IA, "end_time")
    r("backfill end in the future", "Backfill", lambda: pb.BackfillRequest(
        job_id="seed-interval", start_time=ts(now - 60), end_time=ts(now + 3600)), IA, "end_time")
    r("backfill max_runs above limit", "Backfill", lambda: pb.BackfillRequest(
        job_id="seed-interval", start_time=ts(now - 3600), end_time=ts(now - 60), max_runs=10 ** 6), IA,
      "max_runs")
    r("timestamp before year 1", "AddJob", lambda: add_trig(pb.Trigger(date=pb.DateTrigger(
        run_date=pb_ts(-62135596801, 0)))), IA, "run_date")
    r("timestamp nanos 1e9", "AddJob", lambda: add_trig(pb.Trigger(date=pb.DateTrigger(
        run_date=pb_ts(Y2099, 10 ** 9)))), IA, "run_date")
    r("timestamp INT64_MAX seconds", "AddJob", lambda: add_trig(pb.Trigger(date=pb.DateTrigger(
        run_date=pb_ts(2 ** 63 - 1, 0)))), IA, "run_date")
    # -- argv, env, cwd --------------------------------------------------------------------
    r("argv empty", "AddJob", lambda: add(cmd_job(bid(), argv=())), IA, "job.target.command.argv")
    r("argv[0] empty", "AddJob", lambda: add(cmd_job(bid(), argv=("", "x"))), IA, "argv[0]")
    r("argv over the message limit", "AddJob", lambda: add(cmd_job(bid(), argv=["x" * 1024] * 4200)), RE)
    r("argv 5 MiB string", "AddJob", lambda: add(cmd_job(bid(), argv=("/bin/echo", "y" * (5 * MIB)))), RE)
    r("env key with =", "AddJob", lambda: add(pb.Job(id=bid(), trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], env={"A=B": "1"})))), IA, "env")
    r("env key empty", "AddJob", lambda: add(pb.Job(id=bid(), trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], env={"": "1"})))), IA, "env")
    r("cwd relative", "AddJob", lambda: add(pb.Job(id=bid(), trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], cwd="../..")))), IA, "cwd")
    r("command timeout negative", "AddJob", lambda: add(pb.Job(id=bid(), trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], timeout=dur(-1))))), IA, "timeout")
    r("max_output_bytes 4 GiB", "AddJob", lambda: add(pb.Job(id="bug-output", trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], max_output_bytes=2 ** 32 - 1)))), IA, "max_output_bytes")
    # -- NUL bytes and invalid UTF-8 in strings (raw bytes) ---------------------------------------
    r("id invalid UTF-8", "AddJob", lambda: patched(add(cmd_job("bXXd")), b"XX", b"\xff\xfe"), IA, "job.id")
    r("id NUL", "AddJob", lambda: patched(add(cmd_job("seed-cronXX")), b"XX", b"\x00x"), IA, "job.id")
    r("name invalid UTF-8", "AddJob", lambda: patched(add(cmd_job(bid(), name="nXX")), b"XX", b"\xc3\x28"),
      IA, "job.name")
    r("argv invalid UTF-8", "AddJob",
      lambda: patched(add(cmd_job(bid(), argv=("/bin/echo", "aXXb"))), b"XX", b"\xff\xfe"), IA, "argv")
    r("argv[0] NUL truncation", "AddJob",
      lambda: patched(add(cmd_job(bid(), argv=("/bin/trueXXsh",))), b"XX", b"\x00/"), IA, "argv")
    r("argv overlong '/'", "AddJob",
      lambda: patched(add(cmd_job(bid(), argv=("/bin/echo", "..XX..",))), b"XX", b"\xc0\xaf"), IA, "argv")
    r("argv UTF-16 surrogate", "AddJob",
      lambda: patched(add(cmd_job(bid(), argv=("/bin/echo", "XXX",))), b"XXX", b"\xed\xa0\x80"), IA, "argv")
    r("env value invalid UTF-8", "AddJob", lambda: patched(add(pb.Job(id=bid(), trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], env={"K": "vXX"})))), b"vXX", b"v\xf5\x80"), IA, "env")
    r("cwd NUL", "AddJob", lambda: patched(add(pb.Job(id=bid(), trigger=good, target=pb.Target(
        command=pb.CommandTarget(argv=["/bin/true"], cwd="/tmpXXetc")))), b"XX", b"\x00/"), IA, "cwd")
    r("label value invalid UTF-8", "AddJob",
      lambda: patched(add(cmd_job(bid(), labels={"k": "vXX"})), b"vXX", b"v\xe2\x82"), IA, "labels")
    r("remote task invalid UTF-8", "AddJob",
      lambda: patched(add(remote_job(bid(), task="mod:fXX")), b"XX", b"\xff\xff"), IA, "task")
    r("remote kwargs key invalid UTF-8", "AddJob",
      lambda: patched(add(remote_job(bid(), kwargs=struct_dict({"kXX": 1}))), b"kXX", b"k\x80\x80"), IA)
    r("remote args string NUL", "AddJob",
      lambda: patched(add(remote_job(bid(), args=list_value(["aXXb"]))), b"XX", b"\x00\x00"), IA)
    r("GetJob id NUL (prefix of a real id)", "GetJob",
      lambda: patched(pb.GetJobRequest(job_id="seed-cronXX"), b"XX", b"\x00z"), IA, "job_id")
    r("RemoveJob id NUL (prefix of a real id)", "RemoveJob",
      lambda: patched(pb.RemoveJobRequest(job_id="seed-dateXX"), b"XX", b"\x00z"), IA, "job_id")
    r("PauseJob id invalid UTF-8", "PauseJob",
      lambda: patched(pb.PauseJobRequest(job_id="seed-cXXn"), b"XX", b"\xfe\xff"), IA, "job_id")
    r("label_selector invalid UTF-8", "ListJobs",
      lambda: patched(pb.ListJobsRequest(label_selector="teamXX"), b"XX", b"\xff\x00"), IA)
    r("request_id invalid UTF-8", "AddJob",
      lambda: patched(add(cmd_job(bid()), request_id="ridXX"), b"XX", b"\xff\xfe"), IA, "request_id")
    r("update_mask path NUL", "ModifyJob", lambda: patched(pb.ModifyJobRequest(
        job=pb.Job(id="seed-cron", name="renamed"), update_mask=mask("nameXX")), b"nameXX", b"name\x00x"), IA)
    # -- nesting ---------------------------------------------------------------------------
    r("all_of 9 levels", "AddJob", lambda: add_trig(nested("all_of", 9, cron(year="2099"))), IA, "all_of")
    r("any_of 9 levels", "AddJob", lambda: add_trig(nested("any_of", 9, cron(year="2099"))), IA, "any_of")
    r("all_of/any_of 50 levels", "AddJob", lambda: add_trig(nested("mix", 50, cron(year="2099"))), IA)
    r("all_of 5000 levels (raw)", "AddJob", lambda: raw_deep_trigger(5000), IA)
    r("any_of 65 children", "AddJob", lambda: add_trig(pb.Trigger(any_of=pb.AnyOfTrigger(
        triggers=[cron(year="2099", hour=str(i % 24)) for i in range(65)]))), IA, "any_of")
    r("all_of empty", "AddJob", lambda: add_trig(pb.Trigger(all_of=pb.AllOfTrigger())), IA, "all_of")
    r("all_of with a bad child", "AddJob", lambda: add_trig(pb.Trigger(all_of=pb.AllOfTrigger(
        triggers=[cron(hour="1"), cron(day="40")]))), IA, "all_of.triggers[1].cron.day")
    r("kwargs nested 100 deep", "AddJob", lambda: add(remote_job(bid(), kwargs=deep_struct(100))), IA)
    # -- labels ----------------------------------------------------------------------------
    r("65 labels", "AddJob", lambda: add(cmd_job(bid(), labels={"k%d" % i: "v" for i in range(65)})), IA,
      "labels")
    r("5000 labels", "AddJob", lambda: add(cmd_job(bid(), labels={"k%d" % i: "v" for i in range(5000)})), IA,
      "labels")
    r("label key 64 chars", "AddJob", lambda: add(cmd_job(bid(), labels={"k" * 64: "v"})), IA, "labels")
    r("label key starts with -", "AddJob", lambda: add(cmd_job(bid(), labels={"-k": "v"})), IA, "labels")
    r("label value with a space", "AddJob", lambda: add(cmd_job(bid(), labels={"k": "a b"})), IA, "labels")
    r("label selector syntax", "ListJobs", lambda: pb.ListJobsRequest(label_selector="team in (a"), IA,
      "label_selector")
    # -- sizes -----------------------------------------------------------------------------
    r("message 4 MiB + 1 KiB (name)", "AddJob", lambda: add(cmd_job(bid(), name="n" * (4 * MIB + 1024))), RE)
    r("raw 5 MiB garbage", "AddJob", lambda: b"\x0a" + varint(5 * MIB) + b"\x00" * (5 * MIB), RE)
    r("name 1025 bytes", "AddJob", lambda: add(cmd_job(bid(), name="n" * 1025)), IA, "job.name")
    r("id 201 bytes", "AddJob", lambda: add(cmd_job("i" * 201)), IA, "job.id")
    r("id with a space", "AddJob", lambda: add(cmd_job("a b")), IA, "job.id")
    r("request_id 65 bytes", "AddJob", lambda: add(cmd_job(bid()), request_id="r" * 65), IA, "request_id")
    r("SubscribeEvents 1001 job_ids", "SubscribeEvents",
      lambda: pb.SubscribeEventsRequest(job_ids=["j%d" % i for i in range(1001)]), IA, "job_ids", stream=True)
    r("PreviewTrigger count 1001", "PreviewTrigger",
      lambda: pb.PreviewTriggerRequest(trigger=cron(hour="1"), count=1001), IA, "count")
    # -- unknown enum values -----------------------------------------------------------------
    r("overlap_policy 99", "AddJob", lambda: add(cmd_job(bid(), overlap_policy=99)), IA, "overlap_policy")
    r("overlap_policy -1", "AddJob", lambda: add(cmd_job(bid(), overlap_policy=-1)), IA, "overlap_policy")
    r("GetJob view 7", "GetJob", lambda: pb.GetJobRequest(job_id="seed-cron", view=7), IA, "view")
    r("ListJobs view -3", "ListJobs", lambda: pb.ListJobsRequest(view=-3), IA, "view")
    r("SubscribeEvents type 999", "SubscribeEvents", lambda: pb.SubscribeEventsRequest(types=[999]), IA,
      "types", stream=True)
    r("SubscribeEvents type UNSPECIFIED", "SubscribeEvents", lambda: pb.SubscribeEventsRequest(types=[0]), IA,
      "types", stream=True)
    # -- missing oneofs and required fields --------------------------------------------------------
    r("Trigger without a kind", "AddJob", lambda: add_trig(pb.Trigger()), IA, "job.trigger")
    r("Trigger with only jitter", "AddJob", lambda: add_trig(pb.Trigger(jitter=dur(5))), IA, "job.trigger")
    r("Target without a kind", "AddJob", lambda: add(pb.Job(id=bid(), trigger=good, target=pb.Target())), IA,
      "job.target")
    r("Job without a target", "AddJob", lambda: add(pb.Job(id=bid(), trigger=good)), IA, "job.target")
    r("AddJob without a job", "AddJob", lambda: pb.AddJobRequest(), IA, "job")
    r("misfire unlimited=false", "AddJob", lambda: add(cmd_job(
        bid(), misfire_grace_time=pb.MisfireGraceTime(unlimited=False))), IA, "misfire_grace_time")
    r("misfire duration 0", "AddJob", lambda: add(cmd_job(
        bid(), misfire_grace_time=pb.MisfireGraceTime(duration=dur(0)))), IA, "misfire_grace_time")
    r("max_instances 0", "AddJob", lambda: add(cmd_job(bid(), max_instances=0)), IA, "max_instances")
    r("paused together with next_run_time", "AddJob", lambda: add(cmd_job(
        bid(), paused=True, next_run_time=ts(Y2099))), IA)
    r("RescheduleJob without trigger", "RescheduleJob", lambda: pb.RescheduleJobRequest(job_id="seed-cron"),
      IA, "trigger")
    r("PreviewTrigger without trigger", "PreviewTrigger", lambda: pb.PreviewTriggerRequest(), IA, "trigger")
    r("GetJob without id", "GetJob", lambda: pb.GetJobRequest(), IA, "job_id")
    r("Backfill without end_time", "Backfill",
      lambda: pb.BackfillRequest(job_id="seed-interval", start_time=ts(now - 60)), IA, "end_time")
    r("Workers.Complete empty", "Workers/Complete", lambda: wpb.CompleteRequest(), IA)
    r("Workers.Acquire without worker_id", "Workers/Acquire", lambda: wpb.AcquireRequest(queue="q"), IA,
      "worker_id", stream=True)
    # -- duplicates ------------------------------------------------------------------------------
    r("duplicate id", "AddJob", lambda: add(cmd_job("seed-cron")), AE, "job.id")
    r("duplicate id in another job store", "AddJob", lambda: add(cmd_job("seed-date", jobstore="memory")), AE,
      "job.id")
    r("duplicate map key (labels)", "AddJob",
      lambda: patched(add(cmd_job(bid(), labels={"aa": "1", "ab": "2"})), b"\x0a\x02ab", b"\x0a\x02aa"), IA,
      "labels")
    # -- page tokens -------------------------------------------------------------------------------
    r("page_token not base64", "ListJobs", lambda: pb.ListJobsRequest(page_token="!!!"), IA, "page_token")
    r("page_token from other filters", "ListJobs",
      lambda: pb.ListJobsRequest(page_size=5, page_token=ctx["token_team"], label_selector="team=b"), IA,
      "page_token")
    r("page_token from another job store", "ListJobs",
      lambda: pb.ListJobsRequest(page_size=5, page_token=ctx["token_team"], jobstore="default",
                                 label_selector="team"), IA, "page_token")
    r("page_token from the paused filter", "ListJobs",
      lambda: pb.ListJobsRequest(page_size=5, page_token=ctx["token_team"], paused=False,
                                 label_selector="team"), IA, "page_token")
    r("page_token: a job id", "ListJobs", lambda: pb.ListJobsRequest(page_token="seed-cron"), IA, "page_token")
    r("page_token: 8 bytes only", "ListJobs",
      lambda: pb.ListJobsRequest(page_token=page_token(b"")), IA, "page_token")
    r("page_token: forged, 256-byte cursor", "ListJobs",
      lambda: pb.ListJobsRequest(page_token=page_token(b"z" * 256)), IA, "page_token")
    r("page_token: 401 characters", "ListJobs", lambda: pb.ListJobsRequest(page_token="A" * 401), IA,
      "page_token")
    r("page_size negative", "ListJobs", lambda: pb.ListJobsRequest(page_size=-1), IA, "page_size")
    # -- malformed protobuf ----------------------------------------------------------------------
    r("garbage bytes", "AddJob", lambda: b"\x0a\xff\xff\xff", IA)
    r("truncated message", "AddJob", lambda: add(cmd_job(bid())).SerializeToString()[:-3], IA)
    r("job sent as a varint", "AddJob", lambda: b"\x08\x01", IA)
    r("field number 0", "AddJob", lambda: b"\x80\x00\x2a" + add(cmd_job(bid())).SerializeToString(), IA)
    r("unknown method", "/apsd.v1.Scheduler/NoSuchMethod", lambda: b"", UN)
    r("unknown service", "/no.such.Service/Method", lambda: b"\x01", UN)
    # -- changes refused on existing jobs --------------------------------------------------------------
    r("ModifyJob bad trigger on a seed", "ModifyJob", lambda: pb.ModifyJobRequest(
        job=pb.Job(id="seed-cron", trigger=cron(minute="99")), update_mask=mask("trigger")), IA,
      "job.trigger.cron.minute")
    r("ModifyJob mask id", "ModifyJob", lambda: pb.ModifyJobRequest(
        job=pb.Job(id="seed-cron", name="x"), update_mask=mask("id")), IA, "update_mask")
    r("ModifyJob mask sub-path", "ModifyJob", lambda: pb.ModifyJobRequest(
        job=pb.Job(id="seed-cron", trigger=cron(hour="2")), update_mask=mask("trigger.cron")), IA, "update_mask")
    r("ModifyJob unset target", "ModifyJob", lambda: pb.ModifyJobRequest(
        job=pb.Job(id="seed-cron"), update_mask=mask("target")), IA, "target")
    r("replace_existing with a bad trigger", "AddJob", lambda: add(
        cmd_job("seed-cron", trigger=cron(hour="99")), replace_existing=True), IA, "job.trigger.cron.hour")
    r("RescheduleJob bad trigger on a seed", "RescheduleJob", lambda: pb.RescheduleJobRequest(
        job_id="seed-interval", trigger=interval(seconds=-1)), IA, "trigger.interval.seconds")
    r("unknown jobstore", "AddJob", lambda: add(cmd_job(bid(), jobstore="nope")), IA, "job.jobstore")
    r("unknown executor", "AddJob", lambda: add(cmd_job(bid(), executor="nope")), IA, "job.executor")
    r("remote target on a process executor", "AddJob",
      lambda: add(pb.Job(id=bid(), trigger=good, executor="default",
                         target=pb.Target(remote=pb.RemoteTarget(task="m:f")))), IA, "job.executor")
    r("RemoveAllJobs unknown jobstore", "RemoveAllJobs", lambda: pb.RemoveAllJobsRequest(jobstore="nope"), IA,
      "jobstore")
    r("RemoveJob missing", "RemoveJob", lambda: pb.RemoveJobRequest(job_id="no-such-job"), NF)
    r("SubscribeEvents after_sequence 10^15", "SubscribeEvents",
      lambda: pb.SubscribeEventsRequest(after_sequence=10 ** 15), OR, stream=True)
    # -- valid rows: at the limits, accepted and stored ---------------------------------------------------
    v_id = "\u5b9a" * 66 + "ok"  # 198 + 2 = 200 bytes of UTF-8
    assert len(v_id.encode()) == 200
    r("valid: 64 labels", "AddJob", lambda: add(cmd_job("valid-labels", labels={
        "k%02d" % i: "v" for i in range(64)})), OK, adds=["valid-labels"])
    r("valid: all_of 8 levels", "AddJob", lambda: add(cmd_job("valid-depth", trigger=nested(
        "mix", 8, cron(year="2099", hour="9")))), OK, adds=["valid-depth"])
    r("valid: 200-byte UTF-8 id", "AddJob", lambda: add(cmd_job(v_id)), OK, adds=[v_id])
    r("valid: shell metacharacters kept verbatim", "AddJob", lambda: add(cmd_job(
        "valid-meta", argv=("/bin/echo", "$HOME;touch /tmp/x", "`id`", "\u5b9a\u65f6"))), OK, adds=["valid-meta"])
    # APScheduler 3 accepts an interval or cron trigger that ends before it
    # starts: the job has no next run time and is stored paused.
    r("valid: interval end before start", "AddJob", lambda: add_trig(interval(
        hours=1, start_date=ts(Y2099), end_date=ts(Y2099 - 86400)), "valid-end-1"), OK, adds=["valid-end-1"])
    r("valid: cron end before start", "AddJob", lambda: add_trig(cron(
        hour="1", start_date=ts(Y2099), end_date=ts(Y2099 - 86400)), "valid-end-2"), OK, adds=["valid-end-2"])
    # One job for the add and its replay: cmd_job's default date is taken
    # from the clock in whole seconds, so two calls a second apart made a
    # different request (refused as request_id reuse).
    rid_job = cmd_job("valid-rid")
    r("valid: with request_id", "AddJob", lambda: add(rid_job, request_id="rid-1"), OK,
      adds=["valid-rid"], rid="rid-1")
    r("valid: request_id replay", "AddJob", lambda: add(rid_job, request_id="rid-1"), OK,
      rid="rid-1")
    r("request_id reused with another body", "AddJob", lambda: add(cmd_job("valid-rid-2"), request_id="rid-1"),
      IA, "request_id")
    r("request_id of an AddJob reused by RemoveJob", "RemoveJob",
      lambda: pb.RemoveJobRequest(job_id="seed-date", request_id="rid-1"), IA, "request_id")
    r("request_id of an AddJob reused by PauseJob", "PauseJob",
      lambda: pb.PauseJobRequest(job_id="seed-cron", request_id="rid-1"), IA, "request_id")
    return rows


def pb_ts(seconds, nanos):
    t = timestamp_pb2.Timestamp()
    t.seconds, t.nanos = seconds, nanos
    return t


def struct_dict(d):
    s = struct_pb2.Struct()
    s.update(d)
    return s


def list_value(items):
    lv = struct_pb2.ListValue()
    lv.extend(items)
    return lv


# ---- the test --------------------------------------------------------------------------------------

def send(d, row, req):
    """Sends one row's request; returns (code, details)."""
    if isinstance(req, (bytes, bytearray)):
        code, details, _ = raw_call(d.channel, row.rpc, bytes(req), stream=row.stream)
        return code, details
    service = "workers" if row.rpc.startswith("Workers/") else "sched"
    fn = getattr(getattr(d, service), row.rpc.split("/")[-1])
    try:
        if row.stream:
            it = fn(req, timeout=T)
            try:
                next(it)
            finally:
                it.cancel()
        else:
            fn(req, timeout=T)
        return C.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def list_all(d):
    """Every job, JOB_VIEW_FULL, as {id: serialized Job}; pages of 7."""
    jobs, token = {}, ""
    for _ in range(1000):
        r = d.sched.ListJobs(pb.ListJobsRequest(page_size=7, page_token=token, view=pb.JOB_VIEW_FULL), timeout=T)
        for j in r.jobs:
            jobs[j.id] = j.SerializeToString(deterministic=True)
        token = r.next_page_token
        if not token:
            return jobs
    raise AssertionError("ListJobs did not end")


def events_since(d, after):
    """The events logged after sequence `after`, read until caught up."""
    out, err = [], []
    stream = d.sched.SubscribeEvents(pb.SubscribeEventsRequest(after_sequence=after, send_bookmarks=True),
                                     timeout=60)

    def run():
        try:
            for item in stream:
                if item.WhichOneof("item") == "event":
                    out.append(item.event)
                elif item.WhichOneof("item") == "bookmark" and item.bookmark.caught_up:
                    return
                elif item.WhichOneof("item") == "gap":
                    err.append("gap")
                    return
        except grpc.RpcError as e:
            err.append(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout=30)
    stream.cancel()
    th.join(timeout=10)
    if err or th.is_alive():
        raise AssertionError("event replay failed: %r" % (err,))
    return out


def seed(d):
    s = d.sched
    s.AddJob(add(cmd_job("seed-cron", trigger=cron(year="2099", hour="9"), labels={"team": "a"})), timeout=T)
    s.AddJob(add(cmd_job("seed-interval", trigger=interval(hours=1, start_date=ts(Y2099)),
                         labels={"team": "b"})), timeout=T)
    s.AddJob(add(cmd_job("seed-date", argv=("/bin/echo", "x"))), timeout=T)
    s.AddJob(add(cmd_job("seed-paused", trigger=cron(hour="3"), paused=True, labels={"team": "a"})), timeout=T)
    s.AddJob(add(remote_job("seed-remote", args=list_value([1, "two"]), kwargs=struct_dict({"k": [True]}))),
             timeout=T)
    for i in range(30):
        s.AddJob(add(cmd_job("bulk-%02d" % i, labels={"team": "ab"[i % 2], "n": str(i)})), timeout=T)


class BadInputTest(unittest.TestCase):
    def test_table(self):
        tmp = tempfile.mkdtemp(prefix="apsd-sec-bad-")
        d = None
        try:
            d = Daemon(tmp).start()
            seed(d)
            self.assertEqual(d.stop(), 0, d.log_text())
            dump_before = mdb_dump(d.store)
            d = Daemon(tmp).start()
            ctx = {}
            r = d.sched.ListJobs(pb.ListJobsRequest(page_size=5, label_selector="team"), timeout=T)
            ctx["token_team"] = r.next_page_token
            self.assertTrue(ctx["token_team"])
            jobs_before = list_all(d)
            seq_before = d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T).event_log.last_sequence

            rows = make_rows(ctx)
            self.assertGreaterEqual(len(rows), 60)
            wrong, known, valid_ids, rids, t0 = [], [], set(), set(), time.time()
            for row in rows:
                req = row.build()
                code, details = send(d, row, req)
                ok = code == row.expect and (row.contains is None or row.contains in details)
                if not ok and row.bug:
                    known.append("%-45s got %s, documented %s: known bug: %s" % (
                        row.name, code.name, row.expect.name, row.bug))
                elif row.bug:
                    wrong.append("%-45s now gives %s: the known bug is fixed, drop bug= from the row" % (
                        row.name, code.name))
                elif not ok:
                    wrong.append("%-45s got %s %r, want %s%s" % (
                        row.name, code.name, details[:160], row.expect.name,
                        " containing %r" % row.contains if row.contains else ""))
                if code == C.OK:
                    valid_ids.update(row.adds)
                    if row.rid:
                        rids.add(row.rid)
                if not d.alive():
                    wrong.append("apsd died after row %r:\n%s" % (row.name, d.log_text()[-3000:]))
                    break
            took = time.time() - t0
            n_valid = sum(1 for row in rows if row.expect == C.OK)
            self.assertTrue(d.alive(), "\n".join(wrong))

            # Through the API.
            try:
                jobs_after = list_all(d)
            except grpc.RpcError as e:  # e.g. a stored string the client cannot parse
                wrong.append("ListJobs after the table: %s %s" % (e.code().name, e.details()))
                jobs_after = {}
            changed = sorted(k for k in jobs_before if jobs_after.get(k) != jobs_before[k])
            added = set(jobs_after) - set(jobs_before)
            events = events_since(d, seq_before)
            stray = [(ev.sequence, pb.EventType.Name(ev.type), ev.job_id) for ev in events
                     if ev.type != pb.EVENT_TYPE_JOB_ADDED or ev.job_id not in valid_ids]
            rc = d.stop()
            self.assertEqual(rc, 0, d.log_text()[-3000:])
            dump_after = mdb_dump(d.store)
            store_problems = compare_dumps(dump_before, dump_after, valid_ids, rids)

            n_expected = sum(1 for row in rows) - len(known) - len([w for w in wrong if not w.startswith("apsd")])
            for k in known:
                print("KNOWN BUG: " + k)
            print("bad-input: %d requests tried, %d expected codes, %d known bugs, store unchanged except %d "
                  "valid rows (%d new jobs, %d events) in %.1f s" % (
                      len(rows), n_expected, len(known), n_valid, len(added), len(events), took))
            problems = list(wrong)
            if changed:
                problems.append("jobs changed through the API: %r" % changed)
            if added != valid_ids:
                problems.append("new jobs %r, expected exactly the valid rows' %r" % (sorted(added), sorted(valid_ids)))
            if stray:
                problems.append("events not from valid rows: %r" % stray)
            if len([e for e in events if e.type == pb.EVENT_TYPE_JOB_ADDED]) != len(valid_ids):
                problems.append("%d JOB_ADDED events for %d valid jobs" % (len(events), len(valid_ids)))
            problems += store_problems
            self.assertEqual(problems, [], "\n" + "\n".join(problems))
        finally:
            if d is not None:
                d.stop()
            shutil.rmtree(tmp, ignore_errors=True)


def compare_dumps(before, after, valid_ids, rids):
    """The LMDB rules of the module docstring; returns the violations."""
    problems = []
    ids = {i.encode() for i in valid_ids}
    for db in ("jobs", "due", "meta", "events"):
        if db not in before or db not in after:
            problems.append("LMDB database %r missing (have %r, %r)" % (db, sorted(before), sorted(after)))
            return problems
    jb, ja = before["jobs"], after["jobs"]
    for k, v in jb.items():
        if ja.get(k) != v:
            problems.append("LMDB jobs[%r] changed" % k)
    if set(ja) - set(jb) != ids:
        problems.append("LMDB jobs: new keys %r, expected %r" % (sorted(set(ja) - set(jb)), sorted(ids)))
    db, da = before["due"], after["due"]
    for k, v in db.items():
        if da.get(k) != v:
            problems.append("LMDB due[%r] removed or changed" % k)
    for k in set(da) - set(db):
        if k[8:] not in ids:
            problems.append("LMDB due: new entry for %r" % k[8:])
    mb, ma = before["meta"], after["meta"]
    for k in set(mb) | set(ma):
        if k == b"store/event_seq" or mb.get(k) == ma.get(k):
            continue
        if k.startswith(b"req/") and k not in mb and any(r.encode() in k for r in rids):
            continue
        problems.append("LMDB meta[%r]: %r -> %r" % (k, mb.get(k), ma.get(k)))
    eb, ea = before["events"], after["events"]
    for k, v in eb.items():
        if ea.get(k) != v:
            problems.append("LMDB events[%s] rewritten or pruned" % k.hex())
            break
    if eb and ea and min(set(ea) - set(eb), default=b"\xff" * 8) <= max(eb):
        problems.append("LMDB events: new events not appended after the old ones")
    return problems


if __name__ == "__main__":
    unittest.main(verbosity=2)
