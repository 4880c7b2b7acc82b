/*
 * Unit tests of apsc's pure parts: times, durations, status names and the
 * proto JSON mapping (both directions). No daemon.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apsd/client.h"
#include "google/protobuf/struct.pb-c.h"
#include "internal.h" /* apsc__resumable */

static void
test_parse_time(void **state)
{
    int64_t s;
    int32_t n;
    (void)state;

    assert_int_equal(apsc_parse_time("1970-01-01T00:00:00Z", &s, &n), APSC_OK);
    assert_int_equal(s, 0);
    assert_int_equal(n, 0);
    assert_int_equal(apsc_parse_time("2026-11-23T10:00:00+01:00", &s, &n), APSC_OK);
    assert_int_equal(s, 1795424400); /* 09:00:00Z */
    assert_int_equal(apsc_parse_time("2026-11-23 09:00:00.5z", &s, &n), APSC_OK);
    assert_int_equal(s, 1795424400);
    assert_int_equal(n, 500000000);
    assert_int_equal(apsc_parse_time("2029-09-07T11:52:23.123456789+09:00", &s, &n), APSC_OK);
    assert_int_equal(n, 123456789);
    assert_int_equal(apsc_parse_time("2024-02-29T00:00:00-00:30", &s, &n), APSC_OK);
    assert_int_equal(s, 1709166600);
    assert_int_equal(apsc_parse_time("1969-12-31T23:59:59Z", &s, &n), APSC_OK);
    assert_int_equal(s, -1);
    /* No offset, bad dates, junk. */
    assert_int_equal(apsc_parse_time("2026-11-23T10:00:00", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time("2025-02-29T00:00:00Z", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time("2026-13-01T00:00:00Z", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time("2026-11-23T24:00:00Z", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time("2026-11-23T10:00:00Zx", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time("2026-11-23T10:00:00.Z", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time("", &s, &n), APSC_EINVAL);
    assert_int_equal(apsc_parse_time(NULL, &s, &n), APSC_EINVAL);
}

static void
test_format_time(void **state)
{
    char buf[APSC_TIME_BUFSZ];
    (void)state;

    apsc_format_time(0, 0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00Z");
    apsc_format_time(1795424400, 500000000, buf);
    assert_string_equal(buf, "2026-11-23T09:00:00.500Z");
    apsc_format_time(1795424400, 7659000, buf);
    assert_string_equal(buf, "2026-11-23T09:00:00.007659Z");
    apsc_format_time(1795424400, 1, buf);
    assert_string_equal(buf, "2026-11-23T09:00:00.000000001Z");
    apsc_format_time(-1, 0, buf);
    assert_string_equal(buf, "1969-12-31T23:59:59Z");
    apsc_format_time(951782400, 0, buf); /* leap day of a century year */
    assert_string_equal(buf, "2000-02-29T00:00:00Z");
}

static void
test_durations(void **state)
{
    int64_t s;
    int32_t n;
    char buf[APSC_DURATION_BUFSZ];
    (void)state;

    static const struct {
        const char *in;
        int64_t s;
        int32_t n;
    } ok[] = {
        {"3s", 3, 0},          {"1m30s", 90, 0},        {"2h", 7200, 0},
        {"1d", 86400, 0},      {"1w", 604800, 0},       {"0.5s", 0, 500000000},
        {"1.5h", 5400, 0},     {"250ms", 0, 250000000}, {"10us", 0, 10000},
        {"1ns", 0, 1},         {"0.000001s", 0, 1000},  {"1d2h3m4s", 93784, 0},
        {"90s", 90, 0},        {"0s", 0, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(apsc_parse_duration(ok[i].in, &s, &n), APSC_OK);
        assert_int_equal(s, ok[i].s);
        assert_int_equal(n, ok[i].n);
    }
    static const char *const bad[] = {"", "3", "s", "-1s", "1x", "1.s.", "3 s", "1e3s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(apsc_parse_duration(bad[i], &s, &n), APSC_EINVAL);

    apsc_format_duration(90, 0, buf);
    assert_string_equal(buf, "90s");
    apsc_format_duration(0, 1661000, buf);
    assert_string_equal(buf, "0.001661s");
    apsc_format_duration(-1, -500000000, buf);
    assert_string_equal(buf, "-1.500s");
    apsc_format_duration_short(90, 0, buf);
    assert_string_equal(buf, "1m30s");
    apsc_format_duration_short(93784, 0, buf);
    assert_string_equal(buf, "1d2h3m4s");
    apsc_format_duration_short(0, 250000000, buf);
    assert_string_equal(buf, "250ms");
    apsc_format_duration_short(3, 500000000, buf);
    assert_string_equal(buf, "3.500s");
    apsc_format_duration_short(0, 0, buf);
    assert_string_equal(buf, "0s");
}

/* Which ends of an event stream the iterator resumes after (the daemon
 * going away in any of its forms, a slow-subscriber cut) and which end it
 * (the request refused). CANCELLED reaches the check only when
 * apsc_stream_stop() did not ask for it: a call the daemon refused as it
 * began to shut down ends with CANCELLED "CANCELLED" (apsctl_test saw it). */
static void
test_resumable(void **state)
{
    (void)state;
    assert_true(apsc__resumable(GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down"));
    assert_true(apsc__resumable(GRPC_STATUS_UNAVAILABLE, NULL));
    assert_true(apsc__resumable(GRPC_STATUS_CANCELLED, "CANCELLED"));
    assert_true(apsc__resumable(GRPC_STATUS_INTERNAL, "Received RST_STREAM with error code 2"));
    assert_true(apsc__resumable(GRPC_STATUS_UNKNOWN, NULL));
    assert_true(apsc__resumable(GRPC_STATUS_RESOURCE_EXHAUSTED,
                                "subscriber too slow: 16 events not delivered; resume with "
                                "after_sequence"));
    /* RESOURCE_EXHAUSTED for anything else (out of memory, too many
     * subscribers) is an answer, not a cut. */
    assert_false(apsc__resumable(GRPC_STATUS_RESOURCE_EXHAUSTED, "too many subscribers"));
    assert_false(apsc__resumable(GRPC_STATUS_RESOURCE_EXHAUSTED, NULL));
    assert_false(apsc__resumable(GRPC_STATUS_OUT_OF_RANGE, "events 1-9 were pruned"));
    assert_false(apsc__resumable(GRPC_STATUS_INVALID_ARGUMENT, "types: unknown"));
    assert_false(apsc__resumable(GRPC_STATUS_UNAUTHENTICATED, "missing token"));
    assert_false(apsc__resumable(GRPC_STATUS_PERMISSION_DENIED, NULL));
    assert_false(apsc__resumable(GRPC_STATUS_OK, NULL));
}

static void
test_status_names(void **state)
{
    (void)state;
    assert_string_equal(apsc_status_name(GRPC_STATUS_NOT_FOUND), "NOT_FOUND");
    assert_string_equal(apsc_status_name(GRPC_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(apsc_status_name((grpc_status_code)99), "UNKNOWN");
    assert_int_equal(apsc_status_from_name("NOT_FOUND"), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(apsc_status_from_name("NotFound"), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(apsc_status_from_name("already_exists"), GRPC_STATUS_ALREADY_EXISTS);
    assert_int_equal(apsc_status_from_name("nope"), -1);
    assert_string_equal(apsc_strerror(APSC_EOF), "end of stream");
}

static void
test_json_roundtrip(void **state)
{
    static const char *const in =
        "{\"job\":{\"id\":\"j1\",\"trigger\":{\"cron\":{\"day_of_week\":\"mon-fri\",\"hour\":\"9\","
        "\"start_date\":\"2026-11-23T10:00:00+01:00\",\"timezone\":\"Europe/Berlin\"},"
        "\"jitter\":\"1.5s\"},\"target\":{\"command\":{\"argv\":[\"/bin/echo\",\"定时任务\"],"
        "\"env\":{\"A\":\"1\"},\"timeout\":\"30s\",\"max_output_bytes\":1024}},"
        "\"misfire_grace_time\":{\"unlimited\":true},\"coalesce\":false,"
        "\"max_instances\":3,\"overlap_policy\":\"OVERLAP_POLICY_QUEUE_ONE\","
        "\"labels\":{\"team\":\"a\"}},\"replaceExisting\":true}";
    Apsd__V1__AddJobRequest *r = NULL;
    apsc_error err = APSC_ERROR_INIT;
    char *out = NULL;
    (void)state;

    assert_int_equal(apsc_from_json(&apsd__v1__add_job_request__descriptor, in, (void **)&r, &err),
                     APSC_OK);
    assert_true(r->replace_existing);
    Apsd__V1__Job *j = r->job;
    assert_string_equal(j->id, "j1");
    assert_int_equal(j->trigger->kind_case, APSD__V1__TRIGGER__KIND_CRON);
    assert_string_equal(j->trigger->cron->day_of_week, "mon-fri");
    assert_string_equal(j->trigger->cron->month, "");
    assert_int_equal(j->trigger->cron->start_date->seconds, 1795424400);
    assert_int_equal(j->trigger->jitter->nanos, 500000000);
    assert_int_equal(j->target->command->n_argv, 2);
    assert_string_equal(j->target->command->argv[1], "定时任务");
    assert_int_equal(j->target->command->n_env, 1);
    assert_string_equal(j->target->command->env[0]->key, "A");
    assert_int_equal(j->target->command->max_output_bytes, 1024);
    assert_int_equal(j->misfire_grace_time->limit_case,
                     APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED);
    assert_int_equal(j->optional_coalesce_case, APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE);
    assert_false(j->coalesce);
    assert_int_equal(j->max_instances, 3);
    assert_int_equal(j->overlap_policy, APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_QUEUE_ONE);

    assert_int_equal(apsc_to_json(r, 0, &out), APSC_OK);
    assert_non_null(strstr(out, "\"day_of_week\":\"mon-fri\""));
    assert_non_null(strstr(out, "\"start_date\":\"2026-11-23T09:00:00Z\""));
    assert_non_null(strstr(out, "\"jitter\":\"1.500s\""));
    assert_non_null(strstr(out, "\"env\":{\"A\":\"1\"}"));
    assert_non_null(strstr(out, "\"coalesce\":false")); /* a set oneof: printed */
    assert_non_null(strstr(out, "\"replace_existing\":true"));
    assert_non_null(strstr(out, "定时任务"));
    assert_null(strstr(out, "\"month\"")); /* defaults omitted */
    free(out);
    assert_int_equal(apsc_to_json(r, APSC_JSON_EMIT_DEFAULTS | APSC_JSON_PRETTY, &out), APSC_OK);
    assert_non_null(strstr(out, "\"month\": \"\""));
    assert_non_null(strstr(out, "\"paused\": false"));
    assert_null(strstr(out, "next_run_time")); /* unset messages stay out */
    free(out);
    apsc_free(r);
    apsc_error_dispose(&err);
}

static void
test_json_values(void **state)
{
    Apsd__V1__Event *ev = NULL;
    Apsd__V1__RemoteTarget *rt = NULL;
    apsc_error err = APSC_ERROR_INIT;
    char *out = NULL;
    (void)state;

    assert_int_equal(
        apsc_from_json(&apsd__v1__event__descriptor,
                       "{\"sequence\":\"18446744073709551615\",\"type\":\"EVENT_TYPE_JOB_EXECUTED\","
                       "\"outcome\":{\"status\":1,\"exit_code\":0,\"stdout_tail\":\"5b6q546v5Lu75YqhCg==\","
                       "\"return_value\":{\"a\":[1,2.5,null,true,\"x\"]}}}",
                       (void **)&ev, &err),
        APSC_OK);
    assert_true(ev->sequence == UINT64_MAX);
    assert_int_equal(ev->type, APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_EXECUTED);
    assert_int_equal(ev->outcome->termination_case,
                     APSD__V1__RUN_OUTCOME__TERMINATION_EXIT_CODE);
    assert_int_equal(ev->outcome->stdout_tail.len, 13);
    assert_memory_equal(ev->outcome->stdout_tail.data, "循环任务\n", 13);
    assert_int_equal(apsc_to_json(ev, 0, &out), APSC_OK);
    assert_string_equal(out, "{\"sequence\":\"18446744073709551615\",\"type\":"
                             "\"EVENT_TYPE_JOB_EXECUTED\",\"outcome\":{\"status\":"
                             "\"RUN_STATUS_SUCCEEDED\",\"exit_code\":0,\"stdout_tail\":"
                             "\"5b6q546v5Lu75YqhCg==\",\"return_value\":{\"a\":[1,2.5,null,"
                             "true,\"x\"]}}}");
    free(out);
    apsc_free(ev);

    assert_int_equal(apsc_from_json(&apsd__v1__remote_target__descriptor,
                                    "{\"task\":\"m:f\",\"args\":[1,\"two\"],\"kwargs\":{\"k\":{}}}",
                                    (void **)&rt, &err),
                     APSC_OK);
    assert_int_equal(rt->args->n_values, 2);
    assert_string_equal(rt->args->values[1]->string_value, "two");
    assert_int_equal(rt->kwargs->n_fields, 1);
    apsc_free(rt);
    apsc_error_dispose(&err);
}

static void
test_json_errors(void **state)
{
    void *m = NULL;
    apsc_error err = APSC_ERROR_INIT;
    (void)state;

    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"job\":{\"trigger\":{\"cron\":{\"hourx\":\"9\"}}}}", "job.trigger.cron.hourx: unknown field"},
        {"{\"job\":{\"trigger\":{\"cron\":{\"hour\":9}}}}", "job.trigger.cron.hour: expected a string"},
        {"{\"job\":{\"max_instances\":\"x\"}}", "job.max_instances: expected a 32-bit integer"},
        {"{\"job\":{\"next_run_time\":\"2026-11-23T10:00:00\"}}", "job.next_run_time: expected an RFC 3339"},
        {"{\"job\":{\"overlap_policy\":\"NOPE\"}}", "job.overlap_policy: unknown apsd.v1.OverlapPolicy value NOPE"},
        {"{\"job\":{\"target\":{\"command\":{\"argv\":[\"a\",1]}}}}", "job.target.command.argv[1]: expected a string"},
        {"{\"job\":{\"trigger\":{\"cron\":{},\"interval\":{}}}}", "job.trigger.interval: another field of the same oneof"},
        {"{\"job\":", "JSON: "},
        {"[]", "(message): expected a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(
            apsc_from_json(&apsd__v1__add_job_request__descriptor, bad[i].json, &m, &err), APSC_OK);
        assert_null(m);
        assert_int_equal(err.code, GRPC_STATUS_INVALID_ARGUMENT);
        assert_non_null(err.message);
        if (strncmp(err.message, bad[i].msg, strlen(bad[i].msg)) != 0)
            fail_msg("%s: got \"%s\", want \"%s...\"", bad[i].json, err.message, bad[i].msg);
    }
    apsc_error_dispose(&err);
    assert_null(err.message);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_time),  cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_durations),   cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_resumable),   cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_values), cmocka_unit_test(test_json_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
