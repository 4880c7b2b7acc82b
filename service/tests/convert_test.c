/* Unit tests of convert.c: JSON <-> google.protobuf.Value, times, the
 * status table, the nesting-depth guard of aps_pb_unpack, trigger and job
 * mapping. */
/* clang-format off: cmocka needs these headers first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */
#include <math.h>
#include <string.h>

#include "service/convert.h"

static void
test_json_roundtrip(void **state)
{
    (void)state;
    aps_arena *a = aps_arena_new(1 << 20);
    const char *in = "{\"a\":[1,2.5,\"x\\ny\\u00e9\\ud83d\\ude00\",true,false,null],\"b\":{}}";
    Google__Protobuf__Value *v = NULL;
    assert_int_equal(aps_json_to_value(a, in, &v), 0);
    assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
    char *out = NULL;
    aps_error err = {0};
    assert_int_equal(aps_json_from_value(a, v, "v", &out, &err), 0);
    assert_string_equal(
        out, "{\"a\":[1,2.5,\"x\\ny\xc3\xa9\xf0\x9f\x98\x80\",true,false,null],\"b\":{}}");
    /* and back: the same text again */
    Google__Protobuf__Value *v2 = NULL;
    assert_int_equal(aps_json_to_value(a, out, &v2), 0);
    char *out2 = NULL;
    assert_int_equal(aps_json_from_value(a, v2, "v", &out2, &err), 0);
    assert_string_equal(out, out2);
    aps_arena_free(a);
}

static void
test_json_rejects(void **state)
{
    (void)state;
    aps_arena *a = aps_arena_new(1 << 20);
    Google__Protobuf__Value *v = NULL;
    const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "tru", "\"abc", "[1] x", "{1:2}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(aps_json_to_value(a, bad[i], &v), APS_EINVAL);
    char deep[200];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    assert_int_equal(aps_json_to_value(a, deep, &v), APS_EINVAL);
    Google__Protobuf__Value nan = GOOGLE__PROTOBUF__VALUE__INIT;
    nan.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    nan.number_value = NAN;
    char *out = NULL;
    aps_error err = {0};
    assert_int_equal(aps_json_from_value(a, &nan, "job.target.remote.args", &out, &err),
                     APS_EINVAL);
    assert_non_null(strstr(err.msg, "job.target.remote.args"));
    aps_arena_free(a);
}

static void
test_times(void **state)
{
    (void)state;
    aps_arena *a = aps_arena_new(1 << 20);
    aps_error err = {0};
    aps_time t = 0;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = -1;
    ts.nanos = 500000000;
    assert_int_equal(aps_ts_to_time(&ts, "x", &t, &err), 0);
    assert_int_equal(t, -500000);
    Google__Protobuf__Timestamp *back = aps_ts_from_time(a, t);
    assert_int_equal(back->seconds, -1);
    assert_int_equal(back->nanos, 500000000);
    ts.nanos = 1000000000;
    assert_int_equal(aps_ts_to_time(&ts, "job.next_run_time", &t, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "job.next_run_time"));
    ts.seconds = INT64_MAX;
    ts.nanos = 0;
    assert_int_equal(aps_ts_to_time(&ts, "x", &t, &err), APS_EINVAL);
    assert_int_equal(aps_ts_to_time(NULL, "x", &t, &err), 0);
    assert_true(t == APS_TIME_NONE);
    assert_null(aps_ts_from_time(a, APS_TIME_NONE));
    int64_t us = 0;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    d.nanos = -1;
    assert_int_equal(aps_dur_to_us(&d, "x", &us, &err), APS_EINVAL);
    d.nanos = 250000000;
    assert_int_equal(aps_dur_to_us(&d, "x", &us, &err), 0);
    assert_int_equal(us, 1250000);
    aps_arena_free(a);
}

static void
test_status_table(void **state)
{
    (void)state;
    assert_int_equal(aps_status_of(APS_EINVAL), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(aps_status_of(APS_ENOENT), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(aps_status_of(APS_EEXIST), GRPC_STATUS_ALREADY_EXISTS);
    assert_int_equal(aps_status_of(APS_ESTATE), GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(aps_status_of(APS_ELIMIT), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(aps_status_of(APS_ENOSPC), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(aps_status_of(-12345), GRPC_STATUS_INTERNAL);
    assert_string_equal(aps_status_name(GRPC_STATUS_NOT_FOUND), "NOT_FOUND");
}

static size_t
put_ld(uint8_t *out, uint8_t tag, const uint8_t *p, size_t n)
{
    size_t o = 0;
    out[o++] = tag;
    size_t v = n;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[o++] = v ? (b | 0x80) : b;
    } while (v);
    memmove(out + o, p, n);
    return o + n;
}

static void
test_unpack_depth(void **state)
{
    (void)state;
    /* Trigger{all_of{triggers[Trigger{all_of{...}}]}}, 300 levels deep. */
    static uint8_t a[1 << 16], b[1 << 16];
    size_t n = 0;
    for (int i = 0; i < 300; i++) {
        size_t k = put_ld(b, 0x0a, a, n); /* AllOfTrigger.triggers */
        n = put_ld(a, 0x2a, b, k);        /* Trigger.all_of */
    }
    aps_arena *ar = aps_arena_new(64 << 20);
    assert_null(aps_pb_unpack(ar, &apsd__v1__trigger__descriptor, a, n, 100));
    /* A shallow one decodes. */
    uint8_t cron[] = {0x0a, 0x03, 0x32, 0x01, '9'}; /* Trigger{cron{hour:"9"}} */
    Apsd__V1__Trigger *t = (Apsd__V1__Trigger *)aps_pb_unpack(ar, &apsd__v1__trigger__descriptor,
                                                              cron, sizeof cron, 100);
    assert_non_null(t);
    assert_int_equal(t->kind_case, APSD__V1__TRIGGER__KIND_CRON);
    assert_string_equal(t->cron->hour, "9");
    /* Garbage does not decode. */
    uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x0f};
    assert_null(aps_pb_unpack(ar, &apsd__v1__trigger__descriptor, junk, sizeof junk, 100));
    aps_arena_free(ar);
}

static void
test_arena_limit(void **state)
{
    (void)state;
    aps_arena *a = aps_arena_new(100000);
    int got = 0;
    for (int i = 0; i < 100; i++)
        got += aps_arena_alloc(a, 5000) != NULL;
    assert_true(got < 25);
    assert_null(aps_arena_alloc(a, 200000));
    aps_arena_free(a);
}

/* An arena that runs out at any point of a JSON parse gives an error or a
 * whole value, never a struct or list whose count names a missing array. */
static void
test_json_arena_exhausted(void **state)
{
    (void)state;
    const char *in = "{\"a\":[1,2,{\"b\":[true,null,\"s\"]}],\"c\":{\"d\":{}},\"e\":[]}";
    int ok = 0, failed = 0;
    /* One 16 KB chunk allowed, all but `room` bytes of it taken first: the
     * parse runs out at every point in turn. */
    for (size_t room = 0; room <= 4096; room += 16) {
        aps_arena *a = aps_arena_new(16384);
        aps_arena *b = aps_arena_new(1 << 20);
        Google__Protobuf__Value *v = NULL;
        char *out = NULL;
        aps_error err = {0};
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(aps_arena_alloc(a, 8192));
        if (room < 8192)
            assert_non_null(aps_arena_alloc(a, 8192 - room));
        int rc = aps_json_to_value(a, in, &v);
        if (rc == 0) {
            assert_int_equal(aps_json_from_value(b, v, "v", &out, &err), 0);
            assert_string_equal(out, in);
            ok++;
        } else {
            /* (the parser reports a full arena as input it cannot take) */
            assert_true(rc == APS_EINVAL || rc == APS_ENOMEM);
            failed++;
        }
        aps_arena_free(a);
        aps_arena_free(b);
    }
    assert_true(ok > 0);
    assert_true(failed > 0);
}

/* Strings going out are UTF-8, as a proto3 string must be (Python's
 * protobuf refuses the whole message otherwise): an error text cut in the
 * middle of a character, or a function's raw bytes, has each byte that
 * starts no character replaced by U+FFFD; valid text is left alone. */
static void
test_outgoing_strings_are_utf8(void **state)
{
    (void)state;
    aps_arena *a = aps_arena_new(1 << 20);
    aps_outcome out;
    memset(&out, 0, sizeof(out));
    out.status = APS_RUN_FAILED;
    out.error = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c"; /* "café 日" and half of 本 */
    aps_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = APS_EVENT_JOB_ERROR;
    ev.job_id = "j\xc3\xa9";
    ev.outcome = &out;
    ev.message = "\xff\xfex";
    Apsd__V1__Event *pb = aps_event_to_pb(a, &ev);
    assert_non_null(pb);
    assert_string_equal(pb->job_id, "j\xc3\xa9");
    assert_string_equal(pb->outcome->error, "caf\xc3\xa9 \xe6\x97\xa5\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(pb->message, "\xef\xbf\xbd\xef\xbf\xbdx");
    aps_arena_free(a);
}

static void
test_trigger_and_job_mapping(void **state)
{
    (void)state;
    aps_arena *a = aps_arena_new(1 << 20);
    aps_error err = {0};
    Apsd__V1__IntervalTrigger it = APSD__V1__INTERVAL_TRIGGER__INIT;
    it.minutes = -1;
    Apsd__V1__Trigger tr = APSD__V1__TRIGGER__INIT;
    tr.kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
    tr.interval = &it;
    aps_trigger_spec *spec = NULL;
    assert_int_equal(aps_trigger_from_pb(a, &tr, "job.trigger", &spec, &err), APS_EINVAL);
    assert_string_equal(err.msg, "job.trigger.interval.minutes: must not be negative (-1)");
    it.minutes = 5;
    assert_int_equal(aps_trigger_from_pb(a, &tr, "job.trigger", &spec, &err), 0);
    assert_int_equal(spec->kind, APS_TRIGGER_INTERVAL);
    assert_int_equal(spec->u.interval.minutes, 5);
    aps_trigger_fill_defaults(a, spec, "Europe/Berlin", 1000000);
    assert_string_equal(spec->u.interval.timezone, "Europe/Berlin");
    assert_int_equal(spec->u.interval.start_date, 1000000 + 300000000);
    /* Found by request_fuzz: weeks near INT32_MAX overflowed int64 here
     * (undefined behaviour). Too large: no start date; the engine then
     * rejects the interval. */
    aps_trigger_spec big = *spec;
    big.u.interval.weeks = INT32_MAX;
    big.u.interval.start_date = APS_TIME_NONE;
    aps_trigger_fill_defaults(a, &big, "UTC", 1000000);
    assert_int_equal(big.u.interval.start_date, APS_TIME_NONE);
    Apsd__V1__Trigger *back = aps_trigger_to_pb(a, spec);
    assert_int_equal(back->interval->minutes, 5);
    assert_string_equal(back->interval->timezone, "Europe/Berlin");

    /* A job: env map -> "K=V", labels, oneofs. */
    char *argv[] = {"/bin/echo", "hi"};
    Apsd__V1__CommandTarget__EnvEntry e1 = APSD__V1__COMMAND_TARGET__ENV_ENTRY__INIT;
    e1.key = "A";
    e1.value = "1=2";
    Apsd__V1__CommandTarget__EnvEntry *envs[] = {&e1};
    Apsd__V1__CommandTarget cmd = APSD__V1__COMMAND_TARGET__INIT;
    cmd.n_argv = 2;
    cmd.argv = argv;
    cmd.n_env = 1;
    cmd.env = envs;
    Apsd__V1__Target target = APSD__V1__TARGET__INIT;
    target.kind_case = APSD__V1__TARGET__KIND_COMMAND;
    target.command = &cmd;
    Apsd__V1__Job job = APSD__V1__JOB__INIT;
    job.id = "j";
    job.target = &target;
    job.optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE;
    job.coalesce = 0;
    aps_job_spec js;
    assert_int_equal(aps_job_spec_from_pb(a, &job, "job", &js, &err), 0);
    assert_int_equal(js.coalesce, 0);
    assert_int_equal(js.max_instances, 0);
    assert_string_equal(js.target.u.command.env[0], "A=1=2");
    job.optional_max_instances_case = APSD__V1__JOB__OPTIONAL_MAX_INSTANCES_MAX_INSTANCES;
    job.max_instances = 0;
    assert_int_equal(aps_job_spec_from_pb(a, &job, "job", &js, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "job.max_instances"));
    job.max_instances = 2;
    e1.key = "";
    assert_int_equal(aps_job_spec_from_pb(a, &job, "job", &js, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "job.target.command.env"));
    cmd.n_argv = 0;
    assert_int_equal(aps_job_spec_from_pb(a, &job, "job", &js, &err), APS_EINVAL);
    assert_string_equal(err.msg, "job.target.command.argv: must not be empty");

    /* Engine job -> proto: env split at the first '=' */
    char *env[] = {"A=1=2"};
    aps_job ej;
    memset(&ej, 0, sizeof ej);
    ej.id = "j";
    ej.name = "n";
    ej.coalesce = -1;
    ej.target.kind = APS_TARGET_COMMAND;
    ej.target.u.command.argv = argv;
    ej.target.u.command.argc = 2;
    ej.target.u.command.env = env;
    ej.target.u.command.envc = 1;
    ej.next_run_time = APS_TIME_NONE;
    ej.stats.last_run_time = APS_TIME_NONE;
    Apsd__V1__Job *pj = aps_job_to_pb(a, &ej, 1);
    assert_non_null(pj);
    assert_int_equal(pj->optional_coalesce_case, APSD__V1__JOB__OPTIONAL_COALESCE__NOT_SET);
    assert_string_equal(pj->target->command->env[0]->key, "A");
    assert_string_equal(pj->target->command->env[0]->value, "1=2");
    assert_null(pj->next_run_time);
    assert_non_null(pj->stats);
    aps_arena_free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_rejects),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_status_table),
        cmocka_unit_test(test_unpack_depth),
        cmocka_unit_test(test_arena_limit),
        cmocka_unit_test(test_json_arena_exhausted),
        cmocka_unit_test(test_trigger_and_job_mapping),
        cmocka_unit_test(test_outgoing_strings_are_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
