/*
 * conformance_test.c: the shipped trigger vectors, and the runner itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conformance.h"

/* The number of vectors in shared/conformance/triggers.jsonl. */
#define SHIPPED_VECTORS 3000

/* The shipped file, as a data dependency in the runfiles tree. */
static const char *find_vectors(char *buf, size_t len)
{
    static const char *const rel[] = {
        "../shared/conformance/triggers.jsonl",
        "external/shared/conformance/triggers.jsonl",
    };
    const char *srcdir = getenv("TEST_SRCDIR");
    size_t i;

    for (i = 0; i < sizeof rel / sizeof rel[0]; i++)
        if (access(rel[i], R_OK) == 0)
            return rel[i];
    if (srcdir) {
        snprintf(buf, len, "%s/shared/conformance/triggers.jsonl", srcdir);
        if (access(buf, R_OK) == 0)
            return buf;
    }
    return NULL;
}

/* Every shipped vector passes (with the tzdata tools/bootstrap installs). */
static void test_shipped_vectors(void **state)
{
    aps_conform_stats stats = {0, 0, 0};
    aps_error err;
    char buf[4096];
    const char *path = find_vectors(buf, sizeof buf);

    (void)state;
    assert_non_null(path);
    memset(&err, 0, sizeof err);
    assert_int_equal(aps_conform_run_file(path, stdout, &stats, &err), 0);
    printf("shipped vectors: %zu passed, %zu failed (%zu of them: tzdata differs from the "
           "oracle's)\n",
           stats.passed, stats.failed, stats.tzdata);
    /* Every vector passes, whatever the reason a failure would have: a
     * tzdata older than the oracle's is a setup error (tools/bootstrap
     * installs a current one). */
    assert_int_equal(stats.failed, 0);
    assert_int_equal(stats.passed, SHIPPED_VECTORS);
}

static aps_conform_outcome run(const char *json)
{
    aps_conform_outcome outcome = APS_CONFORM_PASS;

    assert_int_equal(aps_conform_run_vector(json, strlen(json), NULL, &outcome), 0);
    return outcome;
}

static void test_cron_vector_passes(void **state)
{
    (void)state;
    assert_int_equal(run("{\"id\": \"a\", \"trigger\": {\"cron\": {\"hour\": \"9\", \"minute\": "
                         "\"30\", \"timezone\": \"UTC\"}}, \"now\": \"2024-01-01T10:00:00Z\", "
                         "\"expect\": [\"2024-01-02T09:30:00+00:00\", "
                         "\"2024-01-03T09:30:00+00:00\"]}"),
                     APS_CONFORM_FAIL); /* fewer than 8 expected, but it goes on */
    assert_int_equal(
        run("{\"id\": \"a\", \"trigger\": {\"cron\": {\"year\": \"2024\", \"month\": \"1\", "
            "\"day\": \"2-3\", \"hour\": \"9\", \"minute\": \"30\", \"timezone\": \"UTC\"}}, "
            "\"now\": \"2024-01-01T10:00:00Z\", \"expect\": [\"2024-01-02T09:30:00+00:00\", "
            "\"2024-01-03T09:30:00+00:00\"]}"),
        APS_CONFORM_PASS);
}

/* Proto JSON: lowerCamelCase names are the same fields. */
static void test_camel_case_keys(void **state)
{
    (void)state;
    assert_int_equal(
        run("{\"id\": \"b\", \"trigger\": {\"allOf\": {\"triggers\": [{\"cron\": {\"dayOfWeek\": "
            "\"mon\", \"hour\": \"0\", \"timezone\": \"UTC\", \"startDate\": "
            "\"2024-01-01T00:00:00Z\", \"endDate\": \"2024-01-16T00:00:00Z\"}}, {\"interval\": "
            "{\"days\": 1, \"startDate\": \"2023-01-01T00:00:00Z\"}}]}}, \"now\": "
            "\"2023-06-01T00:00:00Z\", \"expect\": [\"2024-01-01T00:00:00Z\", "
            "\"2024-01-08T00:00:00Z\", \"2024-01-15T00:00:00Z\"]}"),
        APS_CONFORM_PASS);
}

static void test_error_vectors(void **state)
{
    (void)state;
    /* Rejected at creation: passes. */
    assert_int_equal(run("{\"id\": \"c\", \"trigger\": {\"cron\": {\"hour\": \"25\", "
                         "\"timezone\": \"UTC\"}}, \"now\": \"2024-01-01T00:00:00Z\", "
                         "\"error\": true}"),
                     APS_CONFORM_PASS);
    assert_int_equal(run("{\"id\": \"c\", \"trigger\": {\"cron\": {\"hour\": \"1\", "
                         "\"timezone\": \"Mars/Olympus_Mons\"}}, \"now\": "
                         "\"2024-01-01T00:00:00Z\", \"error\": true}"),
                     APS_CONFORM_PASS);
    /* A valid trigger where an error is expected: fails. */
    assert_int_equal(run("{\"id\": \"c\", \"trigger\": {\"cron\": {\"hour\": \"23\", "
                         "\"timezone\": \"UTC\"}}, \"now\": \"2024-01-01T00:00:00Z\", "
                         "\"error\": true}"),
                     APS_CONFORM_FAIL);
}

static void test_wrong_and_missing_times(void **state)
{
    (void)state;
    /* A date trigger fires once: expecting a second time fails. */
    assert_int_equal(run("{\"id\": \"d\", \"trigger\": {\"date\": {\"run_date\": "
                         "\"2024-05-01T12:00:00+02:00\", \"timezone\": \"Europe/Berlin\"}}, "
                         "\"now\": \"2024-01-01T00:00:00Z\", \"expect\": "
                         "[\"2024-05-01T12:00:00+02:00\", \"2024-05-02T12:00:00+02:00\"]}"),
                     APS_CONFORM_FAIL);
    assert_int_equal(run("{\"id\": \"d\", \"trigger\": {\"date\": {\"run_date\": "
                         "\"2024-05-01T12:00:00+02:00\", \"timezone\": \"Europe/Berlin\"}}, "
                         "\"now\": \"2024-01-01T00:00:00Z\", \"expect\": "
                         "[\"2024-05-01T12:00:00+02:00\"]}"),
                     APS_CONFORM_PASS);
    /* Instants are compared, not texts. */
    assert_int_equal(run("{\"id\": \"d\", \"trigger\": {\"date\": {\"run_date\": "
                         "\"2024-05-01T12:00:00+02:00\", \"timezone\": \"Europe/Berlin\"}}, "
                         "\"now\": \"2024-01-01T00:00:00Z\", \"expect\": "
                         "[\"2024-05-01T10:00:00Z\"]}"),
                     APS_CONFORM_PASS);
}

/* A failing vector whose expected offsets are not the zone's is told
 * apart (here: +01:00 in UTC). */
static void test_tzdata_mismatch(void **state)
{
    (void)state;
    assert_int_equal(run("{\"id\": \"e\", \"trigger\": {\"date\": {\"run_date\": "
                         "\"2024-05-01T12:00:00Z\", \"timezone\": \"UTC\"}}, \"now\": "
                         "\"2024-01-01T00:00:00Z\", \"expect\": "
                         "[\"2024-05-01T12:00:00+01:00\"]}"),
                     APS_CONFORM_FAIL_TZDATA);
}

static void test_malformed_vectors(void **state)
{
    (void)state;
    assert_int_equal(run("{\"id\": "), APS_CONFORM_FAIL);
    assert_int_equal(run("[1, 2]"), APS_CONFORM_FAIL);
    assert_int_equal(run("{\"id\": \"f\", \"trigger\": {\"cron\": {\"hours\": \"1\"}}, "
                         "\"now\": \"2024-01-01T00:00:00Z\", \"expect\": []}"),
                     APS_CONFORM_FAIL);
    assert_int_equal(run("{\"id\": \"f\", \"trigger\": {\"cron\": {}, \"date\": {}}, "
                         "\"now\": \"2024-01-01T00:00:00Z\", \"expect\": []}"),
                     APS_CONFORM_FAIL);
    assert_int_equal(run("{\"id\": \"f\", \"trigger\": {\"cron\": {\"hour\": \"1\"}}, "
                         "\"now\": \"yesterday\", \"expect\": []}"),
                     APS_CONFORM_FAIL);
    assert_int_equal(run("{\"id\": \"f\", \"trigger\": {\"cron\": {\"hour\": \"1\"}}, "
                         "\"now\": \"2024-01-01T00:00:00Z\"}"),
                     APS_CONFORM_FAIL);
}

static void test_run_file(void **state)
{
    char path[] = "/tmp/apsd-conformance-XXXXXX";
    aps_conform_stats stats = {0, 0, 0};
    aps_error err;
    FILE *f;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("\n{\"id\": \"g\", \"trigger\": {\"interval\": {\"hours\": 1, \"start_date\": "
          "\"2024-01-01T00:00:00Z\", \"end_date\": \"2024-01-01T03:00:00Z\"}}, \"now\": "
          "\"2023-01-01T00:00:00Z\", \"expect\": [\"2024-01-01T00:00:00Z\", "
          "\"2024-01-01T01:00:00Z\", \"2024-01-01T02:00:00Z\", \"2024-01-01T03:00:00Z\"]}\n"
          "   \n"
          "{\"id\": \"h\", \"trigger\": {\"cron\": {\"crontab\": \"* * *\"}}, \"now\": "
          "\"2023-01-01T00:00:00Z\", \"error\": true}\n"
          "not json\n",
          f);
    fclose(f);
    assert_int_equal(aps_conform_run_file(path, NULL, &stats, &err), 0);
    assert_int_equal(stats.passed, 2);
    assert_int_equal(stats.failed, 1);
    unlink(path);
    assert_int_equal(aps_conform_run_file(path, NULL, &stats, &err), APS_ENOENT);
    assert_non_null(strstr(err.msg, path));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cron_vector_passes),
        cmocka_unit_test(test_camel_case_keys),
        cmocka_unit_test(test_error_vectors),
        cmocka_unit_test(test_wrong_and_missing_times),
        cmocka_unit_test(test_tzdata_mismatch),
        cmocka_unit_test(test_malformed_vectors),
        cmocka_unit_test(test_run_file),
        cmocka_unit_test(test_shipped_vectors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
