/*
 * health_test.c: service/health.c, bytes in -> bytes out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "grpc/health/v1/health.pb-c.h"
#include "service/health.h"

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

/* Checks `service`; returns the rc, and the status through *status. */
static int
check(const char *service, int serving, int *status)
{
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *rs;
    uint8_t buf[256], *out = (uint8_t *)1;
    size_t len, out_len = 99;
    int rc;

    rq.service = (char *)service;
    len = grpc__health__v1__health_check_request__pack(&rq, buf);
    rc = aps_health_check(buf, len, serving, &out, &out_len);
    *status = -1;
    if (rc != 0) {
        assert_null(out);
        assert_int_equal(out_len, 0);
        return rc;
    }
    rs = grpc__health__v1__health_check_response__unpack(NULL, out_len, out);
    assert_non_null(rs);
    *status = (int)rs->status;
    grpc__health__v1__health_check_response__free_unpacked(rs, NULL);
    free(out);
    return rc;
}

static void
test_known_services(void **state)
{
    static const char *names[] = {"", "apsd.v1.Scheduler", "apsd.v1.Workers"};
    int status;

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(check(names[i], 1, &status), 0);
        assert_int_equal(status, SERVING);
        assert_int_equal(check(names[i], 0, &status), 0);
        assert_int_equal(status, NOT_SERVING);
        assert_int_equal(check(names[i], 42, &status), 0);
        assert_int_equal(status, SERVING);
    }
}

static void
test_serving_bytes(void **state)
{
    static const uint8_t want_serving[] = {0x08, 0x01};
    static const uint8_t want_not[] = {0x08, 0x02};
    uint8_t *out;
    size_t out_len;

    (void)state;
    /* An empty request is service "": the server as a whole. */
    assert_int_equal(aps_health_check(NULL, 0, 1, &out, &out_len), 0);
    assert_int_equal(out_len, 2);
    assert_memory_equal(out, want_serving, 2);
    free(out);
    assert_int_equal(aps_health_check((const uint8_t *)"", 0, 0, &out, &out_len), 0);
    assert_int_equal(out_len, 2);
    assert_memory_equal(out, want_not, 2);
    free(out);
}

static void
test_unknown_services(void **state)
{
    static const char *names[] = {
        "apsd.v1.Nope",          "apsd.v1",           "Scheduler", "apsd.v1.Scheduler ",
        "grpc.health.v1.Health", "apsd.v1.scheduler",
    };
    int status;

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_int_equal(check(names[i], 1, &status), APS_ENOENT);
        assert_int_equal(check(names[i], 0, &status), APS_ENOENT);
    }
}

static void
test_garbage(void **state)
{
    static const uint8_t bad[][4] = {
        {0x80, 0x00, 0x01, 0},                     /* field 0 in a 2-byte key */
        {0x0a, 0x05, 'a', 'b'},                    /* string cut short */
        {0xff, 0xff, 0xff, 0xff}, {0x0b, 0, 0, 0}, /* group */
        {0x08, 0x80, 0, 0},                        /* varint cut short (1 byte read) */
    };
    static const size_t lens[] = {3, 4, 4, 1, 2};
    uint8_t *out;
    size_t out_len;

    (void)state;
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        if (aps_health_check(bad[i], lens[i], 1, &out, &out_len) != APS_EINVAL)
            fail_msg("garbage %zu accepted", i);
        assert_null(out);
    }
    /* Not UTF-8 (proto3 strings must be). */
    static const uint8_t latin1[] = {0x0a, 0x03, 'a', 0xe9, 'b'};
    assert_int_equal(aps_health_check(latin1, sizeof(latin1), 1, &out, &out_len), APS_EINVAL);
    assert_null(out);
    /* Unknown fields are fine (future versions): still service "". */
    static const uint8_t unknown[] = {0x10, 0x01};
    assert_int_equal(aps_health_check(unknown, 2, 1, &out, &out_len), 0);
    free(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_services),
        cmocka_unit_test(test_serving_bytes),
        cmocka_unit_test(test_unknown_services),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
