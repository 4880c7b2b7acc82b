/*
 * wire_check_test.c: aps_pb_check_request (service/convert.c), the check
 * server.c runs on every request after aps_pb_unpack: strings must be UTF-8
 * without NUL bytes, and no field may be numbered 0. protobuf-c checks
 * neither; before the check, an invalid UTF-8 argv stored by AddJob made
 * every later ListJobs unreadable for protobuf's own parsers, and
 * `"/bin/true\0..."` became "/bin/true".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "service/convert.h"

/* An AddJobRequest whose strings hold the markers the tests patch:
 * id "job-1", argv {"/bin/echo", "AAAA"}, env {"KEY": "BBBB"}, label
 * {"team": "CCCC"}. Returns its packed size. */
static size_t
pack_request(uint8_t *out, size_t cap)
{
    Apsd__V1__AddJobRequest req = APSD__V1__ADD_JOB_REQUEST__INIT;
    Apsd__V1__Job job = APSD__V1__JOB__INIT;
    Apsd__V1__Target target = APSD__V1__TARGET__INIT;
    Apsd__V1__CommandTarget cmd = APSD__V1__COMMAND_TARGET__INIT;
    Apsd__V1__CommandTarget__EnvEntry env = APSD__V1__COMMAND_TARGET__ENV_ENTRY__INIT;
    Apsd__V1__CommandTarget__EnvEntry *envs[] = {&env};
    Apsd__V1__Job__LabelsEntry label = APSD__V1__JOB__LABELS_ENTRY__INIT;
    Apsd__V1__Job__LabelsEntry *labels[] = {&label};
    char *argv[] = {"/bin/echo", "AAAA"};

    env.key = "KEY";
    env.value = "BBBB";
    label.key = "team";
    label.value = "CCCC";
    cmd.n_argv = 2;
    cmd.argv = argv;
    cmd.n_env = 1;
    cmd.env = envs;
    target.kind_case = APSD__V1__TARGET__KIND_COMMAND;
    target.command = &cmd;
    job.id = "job-1";
    job.target = &target;
    job.n_labels = 1;
    job.labels = labels;
    req.job = &job;
    size_t n = protobuf_c_message_get_packed_size(&req.base);
    assert_true(n <= cap);
    protobuf_c_message_pack(&req.base, out);
    return n;
}

/* Replaces the 4-byte marker in buf with `with`; returns 0 if absent. */
static int
patch(uint8_t *buf, size_t n, const char *marker, const char *with)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        if (memcmp(buf + i, marker, 4) == 0) {
            memcpy(buf + i, with, 4);
            return 1;
        }
    }
    return 0;
}

static int
check(const uint8_t *buf, size_t n, char *msg, size_t len)
{
    msg[0] = '\0';
    return aps_pb_check_request(&apsd__v1__add_job_request__descriptor, buf, n, msg, len);
}

static void
test_good_strings_pass(void **state)
{
    static const char *good[] = {
        "AAAA",
        "\xc3\xa9\x41\x41", /* U+00E9 */
        "\xe5\xae\x9a\x41", /* U+5B9A */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF, the last code point */
        "\xef\xbf\xbd\x41", /* U+FFFD */
        "$(x",              /* 3 bytes + below */
    };
    uint8_t buf[512];
    char msg[256];

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t n = pack_request(buf, sizeof buf);
        char with[5] = "    ";
        memcpy(with, good[i], strlen(good[i]) < 4 ? strlen(good[i]) : 4);
        assert_true(patch(buf, n, "AAAA", with));
        if (check(buf, n, msg, sizeof msg) != 0)
            fail_msg("case %zu refused: %s", i, msg);
    }
}

static void
test_bad_strings_named(void **state)
{
    static const struct {
        const char *marker, *with, *path;
    } cases[] = {
        {"AAAA", "\xff\x41\x41\x41", "job.target.command.argv"}, /* not a lead byte */
        {"AAAA", "A\0AA", "job.target.command.argv"},            /* NUL */
        {"AAAA", "\xc0\xaf\x41\x41", "job.target.command.argv"}, /* overlong '/' */
        {"AAAA", "\xed\xa0\x80\x41", "job.target.command.argv"}, /* surrogate */
        {"AAAA", "\xf4\x90\x80\x80", "job.target.command.argv"}, /* U+110000 */
        {"AAAA", "\x41\x41\x41\xe5", "job.target.command.argv"}, /* cut at the end */
        {"AAAA", "\x41\xe5\xae\x41", "job.target.command.argv"}, /* bad continuation */
        {"BBBB", "\x42\x80\x42\x42", "job.target.command.env.value"},
        {"CCCC", "\0CCC", "job.labels.value"},
        {"job-", "jo\xfe-", "job.id"},
    };
    uint8_t buf[512];
    char msg[256], want[128];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = pack_request(buf, sizeof buf);
        assert_true(patch(buf, n, cases[i].marker, cases[i].with));
        if (check(buf, n, msg, sizeof msg) != APS_EINVAL)
            fail_msg("case %zu accepted", i);
        snprintf(want, sizeof want, "%s: not valid UTF-8, or holds a NUL byte", cases[i].path);
        if (strcmp(msg, want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, msg, want);
    }
}

static void
test_field_zero(void **state)
{
    uint8_t buf[512 + 3] = {0x80, 0x00, 0x2a}; /* field 0, varint 42, in a 2-byte key */
    char msg[256];

    (void)state;
    size_t n = pack_request(buf + 3, sizeof buf - 3);
    assert_int_equal(check(buf, n + 3, msg, sizeof msg), APS_EINVAL);
    assert_string_equal(msg, "field number 0 (not valid protobuf)");
    /* Inside the job: AddJobRequest{job{<field 0>}}. */
    uint8_t nested[] = {0x0a, 0x03, 0x80, 0x00, 0x01};
    assert_int_equal(check(nested, sizeof nested, msg, sizeof msg), APS_EINVAL);
    assert_string_equal(msg, "job: field number 0 (not valid protobuf)");
}

static void
test_path_truncated_safely(void **state)
{
    uint8_t buf[512];
    char msg[8];

    (void)state;
    size_t n = pack_request(buf, sizeof buf);
    assert_true(patch(buf, n, "AAAA", "\xff\xff\xff\xff"));
    assert_int_equal(check(buf, n, msg, sizeof msg), APS_EINVAL);
    assert_int_equal(strlen(msg), sizeof msg - 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_strings_pass),
        cmocka_unit_test(test_bad_strings_named),
        cmocka_unit_test(test_field_zero),
        cmocka_unit_test(test_path_truncated_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
