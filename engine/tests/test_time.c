/*
 * Unit tests of the public time functions of engine.h: RFC 3339 parsing
 * and formatting, aps_time_now, aps_timezone_check, and aps_strerror.
 * Expected instants were computed with Python's datetime.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <setjmp.h>
#include <cmocka.h>

#include "apsd/engine.h"

#define US INT64_C(1000000)

#define assert_i64(a, b)                                                                  \
    do {                                                                                  \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                    \
        if (a_ != b_)                                                                     \
            fail_msg("%s = %lld, expected %lld (%s)", #a, (long long)a_, (long long)b_, #b); \
    } while (0)

static void parses_to(const char *text, int64_t want_us)
{
    aps_time t = 0;
    aps_error e = {0};

    if (aps_time_parse(text, &t, &e) != 0)
        fail_msg("\"%s\": %s", text, e.msg);
    if (t != want_us)
        fail_msg("\"%s\" -> %lld, want %lld", text, (long long)t, (long long)want_us);
}

/* Rejected, with `why` in the message, and *out untouched. */
static void rejects(const char *text, const char *why)
{
    aps_time t = 4242;
    aps_error e;

    memset(&e, 0, sizeof(e));
    assert_int_equal(aps_time_parse(text, &t, &e), APS_EINVAL);
    assert_int_equal(e.code, APS_EINVAL);
    assert_i64(t, 4242);
    if (!strstr(e.msg, why))
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", text ? text : "(null)", e.msg, why);
    assert_int_equal(aps_time_parse(text, &t, NULL), APS_EINVAL); /* err optional */
}

static void formats_as(aps_time t, const char *tz, const char *want)
{
    char buf[64];
    int rc = aps_time_format(t, tz, buf, sizeof(buf));

    if (rc != 0)
        fail_msg("format(%lld, %s): %d", (long long)t, tz ? tz : "NULL", rc);
    assert_string_equal(buf, want);
}

static void test_parse_ok(void **state)
{
    (void)state;

    parses_to("1970-01-01T00:00:00Z", 0);
    parses_to("1970-01-01t00:00:00z", 0);
    parses_to("1970-01-01 00:00:00Z", 0);
    parses_to("1970-01-01T00:00:00+00:00", 0);
    parses_to("1970-01-01T00:00:00-00:00", 0);
    parses_to("2026-11-23T10:00:00+01:00", 1795424400 * US);
    parses_to("2024-03-10T02:30:00-05:00", 1710055800 * US);
    parses_to("2024-12-31T23:59:59-23:59", 1735775939 * US);
    parses_to("2024-01-01T00:00:00+23:59", 1703980860 * US);
    parses_to("2024-02-29T12:00:00Z", 1709208000 * US);
    /* Fractions: 1 to 9 digits, truncated (not rounded) to microseconds. */
    parses_to("2024-02-29T12:00:00.1Z", 1709208000 * US + 100000);
    parses_to("2024-02-29T12:00:00.000001Z", 1709208000 * US + 1);
    parses_to("2024-02-29T12:00:00.123456Z", 1709208000 * US + 123456);
    parses_to("2024-02-29T12:00:00.1234567Z", 1709208000 * US + 123456);
    parses_to("2024-02-29T12:00:00.123456999Z", 1709208000 * US + 123456);
    parses_to("2024-02-29T12:00:00.000000999+00:00", 1709208000 * US);
    /* Before 1970: floor semantics. */
    parses_to("1969-12-31T23:59:59.999999Z", -1);
    parses_to("1969-12-31T23:59:59.5Z", -500000);
    parses_to("1900-01-01T00:00:00Z", -INT64_C(2208988800) * US);
    /* The whole range of RFC 3339. */
    parses_to("0000-01-01T00:00:00Z", -INT64_C(62167219200) * US);
    parses_to("0001-01-01T00:00:00Z", -INT64_C(62135596800) * US);
    parses_to("9999-12-31T23:59:59.999999Z", INT64_C(253402300799) * US + 999999);
}

static void test_parse_errors(void **state)
{
    aps_error e;
    aps_time t;
    char longtext[300];
    (void)state;

    rejects(NULL, "no time given");
    rejects("", "expected a 4-digit year");
    rejects("garbage", "expected a 4-digit year");
    rejects("24-01-01T00:00:00Z", "expected a 4-digit year");
    rejects("2024/01/01T00:00:00Z", "expected '-' after the year");
    rejects("2024-1-01T00:00:00Z", "expected a 2-digit month");
    rejects("2024-13-01T00:00:00Z", "month 13 is out of range 01-12");
    rejects("2024-00-01T00:00:00Z", "month 00 is out of range 01-12");
    rejects("2024-01-00T00:00:00Z", "day 00 is out of range 01-31 for 2024-01");
    rejects("2023-02-29T00:00:00Z", "day 29 is out of range 01-28 for 2023-02");
    rejects("2024-04-31T00:00:00Z", "day 31 is out of range 01-30 for 2024-04");
    rejects("2024-01-01", "expected 'T' and a time after the date, found the end");
    rejects("2024-01-01X00:00:00Z", "expected 'T' and a time after the date, found 'X'");
    rejects("2024-01-01T24:00:00Z", "hour 24 is out of range 00-23");
    rejects("2024-01-01T00:60:00Z", "minute 60 is out of range 00-59");
    rejects("2024-01-01T00:00:60Z", "second 60 is out of range 00-59 (leap seconds");
    rejects("2024-01-01T00:00Z", "expected ':' and seconds after the minutes");
    rejects("2024-01-01T0:00:00Z", "expected a 2-digit hour");
    rejects("2024-01-01T00:00:00.Z", "expected digits after '.'");
    rejects("2024-01-01T00:00:00.1234567890Z", "10 fractional digits, at most 9");
    rejects("2024-01-01T00:00:00", "missing UTC offset (add 'Z' or +HH:MM)");
    rejects("2024-01-01T00:00:00.5", "missing UTC offset");
    rejects("2024-01-01T00:00:00+0100", "expected the UTC offset as +HH:MM or -HH:MM");
    rejects("2024-01-01T00:00:00+01", "expected the UTC offset as +HH:MM or -HH:MM");
    rejects("2024-01-01T00:00:00+24:00", "UTC offset +24:00 is out of range");
    rejects("2024-01-01T00:00:00-01:60", "UTC offset -01:60 is out of range");
    rejects("2024-01-01T00:00:00 Z", "expected 'Z' or a UTC offset, found ' '");
    rejects("2024-01-01T00:00:00\x01", "found 0x01");
    rejects("2024-01-01T00:00:00Zjunk", "unexpected 'j' after the UTC offset");
    rejects("2024-01-01T00:00:00+01:00 ", "unexpected ' ' after the UTC offset");
    rejects(" 2024-01-01T00:00:00Z", "expected a 4-digit year");
    /* The whole message, quoting the input. */
    assert_int_equal(aps_time_parse("2024-13-01T00:00:00Z", &t, &e), APS_EINVAL);
    assert_string_equal(e.msg, "invalid RFC 3339 time \"2024-13-01T00:00:00Z\": month 13 is "
                               "out of range 01-12");
    /* Long input is cut in the message. */
    memset(longtext, 'x', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    assert_int_equal(aps_time_parse(longtext, &t, &e), APS_EINVAL);
    assert_true(strlen(e.msg) < sizeof(e.msg));
    assert_non_null(strstr(e.msg, "xxx...\": expected a 4-digit year"));
}

static void test_format(void **state)
{
    char buf[64];
    (void)state;

    formats_as(0, NULL, "1970-01-01T00:00:00Z");
    formats_as(0, "UTC", "1970-01-01T00:00:00Z");
    formats_as(-1, NULL, "1969-12-31T23:59:59.999999Z");
    formats_as(-500000, NULL, "1969-12-31T23:59:59.500000Z");
    formats_as(1709208000 * US + 1, NULL, "2024-02-29T12:00:00.000001Z");
    formats_as(1710055800 * US, "America/New_York", "2024-03-10T03:30:00-04:00");
    formats_as(1710055800 * US - 3600 * US, "America/New_York", "2024-03-10T01:30:00-05:00");
    formats_as(1700000000 * US, "Asia/Kolkata", "2023-11-15T03:43:20+05:30");
    formats_as(1700000000 * US, "Europe/London", "2023-11-14T22:13:20+00:00");
    formats_as(1700000000 * US, "Etc/UTC", "2023-11-14T22:13:20+00:00");
    formats_as(1700000000 * US, "Pacific/Chatham", "2023-11-15T11:58:20+13:45");
    formats_as(1700000000 * US + 250000, "Pacific/Chatham", "2023-11-15T11:58:20.250000+13:45");
    /* Local mean time (-4:56:02) has seconds RFC 3339 cannot write: the
     * offset is cut to the minute with the matching wall clock, so the
     * string still names the exact instant. */
    formats_as(-INT64_C(3786825600) * US, "America/New_York", "1849-12-31T19:04:00-04:56");
    /* Outside 0000-9999: ISO 8601's expanded years. */
    formats_as(INT64_MAX, NULL, "+294247-01-10T04:00:54.775807Z");
    formats_as(APS_TIME_NONE, NULL, "-290308-12-21T19:59:05.224192Z");
    formats_as(-INT64_C(62167219200) * US - US, NULL, "-0001-12-31T23:59:59Z");
    /* Errors. */
    assert_int_equal(aps_time_format(0, "Mars/Olympus_Mons", buf, sizeof(buf)), APS_ENOENT);
    assert_int_equal(aps_time_format(0, "../etc/passwd", buf, sizeof(buf)), APS_ENOENT);
    assert_int_equal(aps_time_format(0, NULL, buf, 20), APS_ERANGE); /* 20 chars + NUL */
    assert_string_equal(buf, "1970-01-01T00:00:00"); /* truncated, terminated */
    assert_int_equal(aps_time_format(0, NULL, buf, 21), 0);
    assert_int_equal(aps_time_format(0, NULL, NULL, 0), APS_ERANGE);
}

/* format then parse gives the instant back, in any zone. */
static void test_roundtrip(void **state)
{
    static const char *const zones[] = {NULL, "America/New_York", "Europe/Dublin",
                                        "Australia/Lord_Howe", "Asia/Kathmandu",
                                        "America/St_Johns", "Pacific/Chatham"};
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    char buf[64];
    size_t z;
    int i;
    (void)state;

    for (z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        for (i = 0; i < 5000; i++) {
            aps_time t, back = 0;
            aps_error e;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* years 0001-9998, with and without a fraction */
            t = -INT64_C(62135596800) * US + (int64_t)(x % (UINT64_C(315500000000) * 1000000));
            if (i % 2)
                t -= t % US;
            assert_int_equal(aps_time_format(t, zones[z], buf, sizeof(buf)), 0);
            if (aps_time_parse(buf, &back, &e) != 0)
                fail_msg("%s: %s", buf, e.msg);
            if (back != t)
                fail_msg("%lld -> %s -> %lld", (long long)t, buf, (long long)back);
            assert_true((t % US == 0) == (strchr(buf, '.') == NULL));
        }
    }
}

static void test_now(void **state)
{
    aps_time a, b;
    time_t s;
    (void)state;

    s = time(NULL);
    a = aps_time_now();
    b = aps_time_now();
    assert_true(b >= a);
    assert_true(a / US >= s - 1 && a / US <= s + 2);
    assert_true(a > INT64_C(1700000000) * US);
}

static void test_timezone_check(void **state)
{
    aps_error e;
    (void)state;

    assert_int_equal(aps_timezone_check("UTC", &e), 0);
    assert_int_equal(aps_timezone_check("Europe/Berlin", &e), 0);
    assert_int_equal(aps_timezone_check("America/Argentina/Buenos_Aires", NULL), 0);
    memset(&e, 0, sizeof(e));
    assert_int_equal(aps_timezone_check("Mars/Olympus_Mons", &e), APS_ENOENT);
    assert_int_equal(e.code, APS_ENOENT);
    assert_string_equal(e.msg, "timezone: unknown time zone \"Mars/Olympus_Mons\"");
    assert_int_equal(aps_timezone_check("../etc/passwd", &e), APS_ENOENT);
    assert_string_equal(e.msg, "timezone: unknown time zone \"../etc/passwd\"");
    assert_int_equal(aps_timezone_check(NULL, &e), APS_ENOENT);
}

static void test_strerror(void **state)
{
    static const int codes[] = {APS_OK,     APS_ENOENT, APS_EIO,      APS_ENOMEM,
                                APS_EBUSY,  APS_EEXIST, APS_EINVAL,   APS_ENOSPC,
                                APS_ERANGE, APS_ECORRUPT, APS_ESTATE, APS_ELIMIT};
    size_t i, j;
    (void)state;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = aps_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 3);
        assert_string_not_equal(s, "unknown error");
        for (j = 0; j < i; j++)
            assert_string_not_equal(s, aps_strerror(codes[j]));
    }
    assert_string_equal(aps_strerror(APS_OK), "success");
    assert_string_equal(aps_strerror(APS_ENOENT), "not found");
    assert_string_equal(aps_strerror(APS_EINVAL), "invalid argument");
    assert_string_equal(aps_strerror(APS_ECORRUPT), "stored record is corrupt");
    /* errno values, negated or not, fall back to the C library's text. */
    assert_string_equal(aps_strerror(-EACCES), "Permission denied");
    assert_string_equal(aps_strerror(EACCES), "Permission denied");
    assert_string_equal(aps_strerror(-ETIMEDOUT), "Connection timed out");
    assert_string_equal(aps_strerror(-30999), "unknown error");
    assert_string_equal(aps_strerror(100000), "unknown error");
    assert_string_equal(aps_strerror(INT_MIN), "unknown error");
    assert_string_equal(aps_strerror(INT_MAX), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),   cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_format),     cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_now),        cmocka_unit_test(test_timezone_check),
        cmocka_unit_test(test_strerror),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
