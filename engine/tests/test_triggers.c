/*
 * test_triggers.c: interval, date, calendar_interval, all_of / any_of and
 * jitter through the public trigger API (cron has test_cron.c).
 *
 * Interval and date expectations were checked against APScheduler 3.9.1;
 * calendar_interval follows APScheduler 4's documented semantics and the
 * combining triggers the conformance README's ("earliest fire time
 * strictly after the previous one").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "testutil.h"

#define SEC INT64_C(1000000)

static void expect_error(const aps_trigger_spec *s, int code, const char *msg)
{
    aps_trigger *t = NULL;
    aps_error err;

    memset(&err, 0, sizeof err);
    assert_int_equal(aps_trigger_create(s, "UTC", 0, &t, &err), code);
    assert_null(t);
    assert_string_equal(err.msg, msg);
}

static void check_describe(const aps_trigger *t, const char *want)
{
    char buf[512];

    assert_int_equal(aps_trigger_describe(t, buf, sizeof buf), 0);
    assert_string_equal(buf, want);
}

static aps_trigger_spec interval_spec(int64_t weeks, int64_t days, int64_t hours, int64_t minutes,
                                      int64_t seconds)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_INTERVAL;
    s.u.interval.weeks = weeks;
    s.u.interval.days = days;
    s.u.interval.hours = hours;
    s.u.interval.minutes = minutes;
    s.u.interval.seconds = seconds;
    s.u.interval.start_date = APS_TIME_NONE;
    s.u.interval.end_date = APS_TIME_NONE;
    return s;
}

static aps_trigger_spec cron_spec(const char *day, const char *day_of_week, const char *hour)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_CRON;
    s.u.cron.day = day;
    s.u.cron.day_of_week = day_of_week;
    s.u.cron.hour = hour;
    s.u.cron.start_date = APS_TIME_NONE;
    s.u.cron.end_date = APS_TIME_NONE;
    return s;
}

static aps_trigger_spec date_spec(const char *run_date, const char *tz)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_DATE;
    s.u.date.run_date = run_date ? tu_time(run_date) : APS_TIME_NONE;
    s.u.date.timezone = tz;
    return s;
}

static aps_trigger_spec calendar_spec(int years, int months, int weeks, int days, int hour,
                                      int minute, const char *start, const char *tz)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_CALENDAR_INTERVAL;
    s.u.calendar_interval.years = years;
    s.u.calendar_interval.months = months;
    s.u.calendar_interval.weeks = weeks;
    s.u.calendar_interval.days = days;
    s.u.calendar_interval.hour = hour;
    s.u.calendar_interval.minute = minute;
    s.u.calendar_interval.start_date = start ? tu_time(start) : APS_TIME_NONE;
    s.u.calendar_interval.end_date = APS_TIME_NONE;
    s.u.calendar_interval.timezone = tz;
    return s;
}

/* ------------------------------------------------------------------ */
/* interval                                                            */
/* ------------------------------------------------------------------ */

static void test_interval_grid(void **state)
{
    static const char *const hourly[] = {"2024-01-01T06:00:00Z", "2024-01-01T07:00:00Z"};
    static const char *const future[] = {"2024-03-01T00:00:00Z", "2024-03-01T01:00:00Z"};
    static const char *const sevens[] = {"2024-01-01T01:00:05.25Z", "2024-01-01T01:00:12.25Z"};
    static const char *const ended[] = {"2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"};
    aps_trigger_spec s = interval_spec(0, 0, 1, 0, 0);
    aps_trigger *t;

    (void)state;
    s.u.interval.start_date = tu_time("2024-01-01T00:00:00Z");
    s.u.interval.timezone = "Asia/Tokyo";
    t = tu_trigger(&s, 0);
    check_describe(t, "interval[1:00:00]");
    tu_check_sequence(t, tu_time("2024-01-01T05:30:00Z"), hourly, 2, 0);
    /* A start exactly on now fires now. */
    tu_check_sequence(t, tu_time("2024-01-01T06:00:00Z"), hourly, 2, 0);
    aps_trigger_destroy(t);

    s.u.interval.start_date = tu_time("2024-03-01T00:00:00Z");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), future, 2, 0);
    aps_trigger_destroy(t);

    s = interval_spec(0, 0, 0, 0, 7);
    s.u.interval.start_date = tu_time("2024-01-01T00:00:00.25Z");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-01-01T01:00:00Z"), sevens, 2, 0);
    aps_trigger_destroy(t);

    /* The end date is inclusive. */
    s = interval_spec(0, 0, 1, 0, 0);
    s.u.interval.start_date = tu_time("2024-01-01T00:00:00Z");
    s.u.interval.end_date = tu_time("2024-01-01T02:00:00Z");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-01-01T00:30:00Z"), ended, 2, 1);
    aps_trigger_destroy(t);
}

/* Without a start date, the first fire time is one interval after the
 * trigger was created (APScheduler 3: datetime.now() + interval). */
static void test_interval_default_start(void **state)
{
    static const char *const from_creation[] = {"2024-01-01T00:10:00Z", "2024-01-01T00:20:00Z"};
    static const char *const later[] = {"2024-01-01T00:30:00Z", "2024-01-01T00:40:00Z"};
    aps_trigger_spec s = interval_spec(0, 0, 0, 10, 0);
    aps_trigger *t = tu_trigger(&s, tu_time("2024-01-01T00:00:00Z"));

    (void)state;
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), from_creation, 2, 0);
    tu_check_sequence(t, tu_time("2024-01-01T00:25:00Z"), later, 2, 0);
    aps_trigger_destroy(t);
}

/* ceil(timedelta_seconds(now - start) / length) in doubles, as Python:
 * 2^34 s and 1 µs after the start, the microsecond is lost, so the fire
 * time is 1 µs before now (APScheduler 3.9.1 returns the same). */
static void test_interval_float_fidelity(void **state)
{
    aps_trigger_spec s = interval_spec(0, 0, 0, 0, 1);
    aps_trigger *t;
    aps_time next;

    (void)state;
    s.u.interval.start_date = 0;
    t = tu_trigger(&s, 0);
    assert_int_equal(
        aps_trigger_next(t, APS_TIME_NONE, tu_time("2514-05-30T01:53:04.000001Z"), &next), 0);
    assert_int_equal(next, tu_time("2514-05-30T01:53:04Z"));
    aps_trigger_destroy(t);
}

static void test_interval_edges(void **state)
{
    aps_trigger_spec s = interval_spec(0, 0, 0, 0, 0);
    aps_trigger *t;
    aps_time next;

    (void)state;
    /* A zero interval is one second. */
    s.u.interval.start_date = 0;
    t = tu_trigger(&s, 0);
    check_describe(t, "interval[0:00:01]");
    assert_int_equal(aps_trigger_next(t, 5 * SEC, 5 * SEC, &next), 0);
    assert_int_equal(next, 6 * SEC);
    /* Past the end of time: none, not an overflow. */
    assert_int_equal(aps_trigger_next(t, INT64_MAX - 10, 0, &next), 0);
    assert_int_equal(next, APS_TIME_NONE);
    aps_trigger_destroy(t);

    s = interval_spec(1, 1, 2, 0, 0);
    t = tu_trigger(&s, 0);
    check_describe(t, "interval[8 days, 2:00:00]");
    aps_trigger_destroy(t);
    s = interval_spec(0, 1, 0, 0, 0);
    t = tu_trigger(&s, 0);
    check_describe(t, "interval[1 day, 0:00:00]");
    aps_trigger_destroy(t);
    s = interval_spec(0, 0, 0, 0, 0);
    s.u.interval.microseconds = 500000;
    t = tu_trigger(&s, 0);
    check_describe(t, "interval[0:00:00.500000]");
    aps_trigger_destroy(t);

    s = interval_spec(0, 0, 1, -61, 0);
    expect_error(&s, APS_EINVAL, "interval: the interval must not be negative");
    s = interval_spec(INT64_MAX / 2, 0, 0, 0, 0);
    expect_error(&s, APS_EINVAL, "interval: weeks: 4611686018427387903 is too large");
    s = interval_spec(0, 0, 1, 0, 0);
    s.u.interval.timezone = "Nowhere/Special";
    expect_error(&s, APS_ENOENT, "timezone: unknown time zone \"Nowhere/Special\"");
}

/* ------------------------------------------------------------------ */
/* date                                                                */
/* ------------------------------------------------------------------ */

static void test_date(void **state)
{
    static const char *const once[] = {"2012-06-27T08:12:57-07:00"};
    aps_trigger_spec s = date_spec("2012-06-27T08:12:57-07:00", "America/Los_Angeles");
    aps_trigger *t = tu_trigger(&s, 0);
    aps_time next;

    (void)state;
    check_describe(t, "date[2012-06-27 08:12:57 PDT]");
    /* Once, even when it lies before now. */
    tu_check_sequence(t, tu_time("2011-01-01T00:00:00Z"), once, 1, 1);
    tu_check_sequence(t, tu_time("2020-01-01T00:00:00Z"), once, 1, 1);
    aps_trigger_destroy(t);

    s = date_spec("2012-06-27T08:12:57Z", NULL);
    t = tu_trigger(&s, 0);
    check_describe(t, "date[2012-06-27 08:12:57 UTC]");
    aps_trigger_destroy(t);

    /* No run date: now. */
    s = date_spec(NULL, NULL);
    t = tu_trigger(&s, tu_time("2030-01-01T00:00:00Z"));
    assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, tu_time("2031-01-01T00:00:00Z"), &next), 0);
    assert_int_equal(next, tu_time("2030-01-01T00:00:00Z"));
    aps_trigger_destroy(t);
}

/* ------------------------------------------------------------------ */
/* calendar_interval                                                   */
/* ------------------------------------------------------------------ */

/* Jan 31 + 1 month is Feb 31, which does not exist: skipped. */
static void test_calendar_month_end(void **state)
{
    static const char *const want[] = {
        "2024-01-31T09:00:00Z", "2024-03-31T09:00:00Z", "2024-05-31T09:00:00Z",
        "2024-07-31T09:00:00Z", "2024-08-31T09:00:00Z", "2024-10-31T09:00:00Z",
        "2024-12-31T09:00:00Z", "2025-01-31T09:00:00Z",
    };
    static const char *const ended[] = {"2024-01-31T09:00:00Z", "2024-03-31T09:00:00Z",
                                        "2024-05-31T09:00:00Z"};
    aps_trigger_spec s = calendar_spec(0, 1, 0, 0, 9, 0, "2024-01-31T00:00:00Z", NULL);
    aps_trigger *t = tu_trigger(&s, 0);
    aps_time next;

    (void)state;
    check_describe(t, "calendar_interval[months=1, time='09:00:00']");
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), want, 8, 0);
    /* With a previous fire time, the next one follows it even if past. */
    assert_int_equal(aps_trigger_next(t, tu_time("2024-01-31T09:00:00Z"),
                                      tu_time("2030-01-01T00:00:00Z"), &next),
                     0);
    assert_int_equal(next, tu_time("2024-03-31T09:00:00Z"));
    aps_trigger_destroy(t);

    /* The end date (a local date) is inclusive. */
    s.u.calendar_interval.end_date = tu_time("2024-06-01T00:00:00Z");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), ended, 3, 1);
    aps_trigger_destroy(t);
}

static void test_calendar_leap_day(void **state)
{
    static const char *const want[] = {"2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z",
                                       "2032-02-29T00:00:00Z"};
    static const char *const century[] = {"2096-02-29T00:00:00Z", "2104-02-29T00:00:00Z"};
    aps_trigger_spec s = calendar_spec(1, 0, 0, 0, 0, 0, "2024-02-29T12:00:00Z", NULL);
    aps_trigger *t = tu_trigger(&s, 0);

    (void)state;
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), want, 3, 0);
    aps_trigger_destroy(t);
    s = calendar_spec(4, 0, 0, 0, 0, 0, "2096-02-29T00:00:00Z", NULL);
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2096-01-01T00:00:00Z"), century, 2, 0);
    aps_trigger_destroy(t);
}

/* A wall time in a DST gap skips its date; in a fold the earlier instant
 * is taken (APScheduler 4). */
static void test_calendar_dst(void **state)
{
    static const char *const gap[] = {"2024-03-09T02:30:00-05:00", "2024-03-11T02:30:00-04:00"};
    static const char *const fold[] = {"2024-11-02T01:30:00-04:00", "2024-11-03T01:30:00-04:00",
                                       "2024-11-04T01:30:00-05:00"};
    aps_trigger_spec s =
        calendar_spec(0, 0, 0, 1, 2, 30, "2024-03-09T12:00:00-05:00", "America/New_York");
    aps_trigger *t = tu_trigger(&s, 0);

    (void)state;
    tu_check_sequence(t, tu_time("2024-03-01T00:00:00Z"), gap, 2, 0);
    aps_trigger_destroy(t);
    s = calendar_spec(0, 0, 0, 1, 1, 30, "2024-11-02T12:00:00-04:00", "America/New_York");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-11-01T00:00:00Z"), fold, 3, 0);
    aps_trigger_destroy(t);
}

/* A start long before now: the first fire time is the first of the
 * sequence at or after now (the search skips ahead). */
static void test_calendar_old_start(void **state)
{
    static const char *const every3[] = {"2024-06-17T09:00:00Z", "2024-06-20T09:00:00Z"};
    static const char *const bimonthly[] = {"2024-07-31T09:00:00Z", "2025-01-31T09:00:00Z",
                                            "2025-03-31T09:00:00Z"};
    static const char *const today[] = {"2024-06-15T09:00:00Z", "2024-06-16T09:00:00Z"};
    aps_trigger_spec s = calendar_spec(0, 0, 0, 3, 9, 0, "2000-01-01T00:00:00Z", NULL);
    aps_trigger *t = tu_trigger(&s, 0);

    (void)state;
    tu_check_sequence(t, tu_time("2024-06-15T12:00:00Z"), every3, 2, 0);
    aps_trigger_destroy(t);
    /* Odd months with a 31st: January, March, May, July. */
    s = calendar_spec(0, 2, 0, 0, 9, 0, "2020-01-31T00:00:00Z", NULL);
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-06-15T12:00:00Z"), bimonthly, 3, 0);
    aps_trigger_destroy(t);
    /* Now equal to a fire time: that one. */
    s = calendar_spec(0, 0, 0, 1, 9, 0, "1970-01-01T00:00:00Z", NULL);
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-06-15T09:00:00Z"), today, 2, 0);
    aps_trigger_destroy(t);
}

static void test_calendar_errors(void **state)
{
    aps_trigger_spec s = calendar_spec(0, 0, 0, 0, 9, 0, NULL, NULL);

    (void)state;
    expect_error(&s, APS_EINVAL, "calendar_interval: the interval must be at least 1 day long");
    s = calendar_spec(0, -1, 0, 1, 9, 0, NULL, NULL);
    expect_error(&s, APS_EINVAL, "calendar_interval: months: -1 is out of range 0-119988");
    s = calendar_spec(0, 0, 0, 1, 24, 0, NULL, NULL);
    expect_error(&s, APS_EINVAL, "calendar_interval: hour: 24 is out of range 0-23");
    s = calendar_spec(0, 0, 0, 1, 0, 60, NULL, NULL);
    expect_error(&s, APS_EINVAL, "calendar_interval: minute: 60 is out of range 0-59");
    s = calendar_spec(0, 0, 0, 1, 0, 0, "2024-02-01T00:00:00Z", NULL);
    s.u.calendar_interval.end_date = tu_time("2024-01-01T00:00:00Z");
    expect_error(&s, APS_EINVAL, "calendar_interval: end_date cannot be earlier than start_date");
}

/* ------------------------------------------------------------------ */
/* all_of / any_of                                                     */
/* ------------------------------------------------------------------ */

static aps_trigger_spec combo_spec(aps_trigger_kind kind, const aps_trigger_spec *children,
                                   size_t n)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.u.combo.triggers = children;
    s.u.combo.count = n;
    return s;
}

static void test_all_of(void **state)
{
    static const char *const fri13[] = {"2024-09-13T00:00:00Z", "2024-12-13T00:00:00Z",
                                        "2025-06-13T00:00:00Z", "2026-02-13T00:00:00Z",
                                        "2026-03-13T00:00:00Z"};
    aps_trigger_spec kids[2], s;
    aps_trigger *t;
    aps_time next;

    (void)state;
    kids[0] = cron_spec("13", NULL, NULL);
    kids[1] = cron_spec(NULL, "fri", NULL);
    s = combo_spec(APS_TRIGGER_ALL_OF, kids, 2);
    t = tu_trigger(&s, 0);
    check_describe(t, "and[cron[day='13'], cron[day_of_week='fri']]");
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), fri13, 5, 0);
    aps_trigger_destroy(t);

    /* Two grids that never meet: gives up after 10,000 rounds. */
    kids[0] = interval_spec(0, 0, 0, 0, 2);
    kids[0].u.interval.start_date = 0;
    kids[1] = interval_spec(0, 0, 0, 0, 2);
    kids[1].u.interval.start_date = SEC;
    s = combo_spec(APS_TRIGGER_ALL_OF, kids, 2);
    t = tu_trigger(&s, 0);
    assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, 0, &next), APS_EINVAL);
    aps_trigger_destroy(t);

    /* Finished when one child is. */
    kids[0] = cron_spec(NULL, NULL, "*");
    kids[1] = date_spec("2024-01-01T05:00:00Z", NULL);
    s = combo_spec(APS_TRIGGER_ALL_OF, kids, 2);
    t = tu_trigger(&s, 0);
    assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, tu_time("2024-01-01T00:00:00Z"), &next), 0);
    assert_int_equal(next, tu_time("2024-01-01T05:00:00Z"));
    assert_int_equal(aps_trigger_next(t, next, next, &next), 0);
    assert_int_equal(next, APS_TIME_NONE);
    aps_trigger_destroy(t);
}

static void test_any_of(void **state)
{
    /* Daily at noon, every 5 hours from midnight, and one date; each time
     * strictly after the previous, the date only once. */
    static const char *const want[] = {
        "2024-01-01T10:00:00Z", "2024-01-01T11:30:00Z", "2024-01-01T12:00:00Z",
        "2024-01-01T15:00:00Z", "2024-01-01T20:00:00Z", "2024-01-02T01:00:00Z",
        "2024-01-02T06:00:00Z", "2024-01-02T11:00:00Z",
    };
    aps_trigger_spec kids[3], s;
    aps_trigger *t;

    (void)state;
    kids[0] = cron_spec(NULL, NULL, "12");
    kids[1] = interval_spec(0, 0, 5, 0, 0);
    kids[1].u.interval.start_date = tu_time("2024-01-01T00:00:00Z");
    kids[2] = date_spec("2024-01-01T11:30:00Z", NULL);
    s = combo_spec(APS_TRIGGER_ANY_OF, kids, 3);
    t = tu_trigger(&s, 0);
    check_describe(t, "or[cron[hour='12'], interval[5:00:00], date[2024-01-01 11:30:00 UTC]]");
    tu_check_sequence(t, tu_time("2024-01-01T09:00:00Z"), want, 8, 0);
    aps_trigger_destroy(t);
}

static void test_combo_errors(void **state)
{
    aps_trigger_spec kids[65], s, nest[10];
    size_t i;

    (void)state;
    memset(kids, 0, sizeof kids);
    s = combo_spec(APS_TRIGGER_ALL_OF, kids, 0);
    expect_error(&s, APS_EINVAL, "all_of: triggers: must not be empty");
    for (i = 0; i < 65; i++)
        kids[i] = cron_spec(NULL, NULL, "1");
    s = combo_spec(APS_TRIGGER_ANY_OF, kids, 65);
    expect_error(&s, APS_EINVAL, "any_of: triggers: 65 given, at most 64 allowed");
    kids[1] = cron_spec(NULL, NULL, "25");
    s = combo_spec(APS_TRIGGER_ANY_OF, kids, 2);
    expect_error(&s, APS_EINVAL, "any_of[1]: hour: 25 is out of range 0-23");
    /* Nested: the path is spelled out. */
    nest[0] = combo_spec(APS_TRIGGER_ALL_OF, kids, 2);
    s = combo_spec(APS_TRIGGER_ANY_OF, nest, 1);
    expect_error(&s, APS_EINVAL, "any_of[0]: all_of[1]: hour: 25 is out of range 0-23");
    /* Depth is bounded. */
    nest[0] = cron_spec(NULL, NULL, "1");
    for (i = 1; i < 10; i++)
        nest[i] = combo_spec(APS_TRIGGER_ALL_OF, &nest[i - 1], 1);
    expect_error(&nest[9], APS_EINVAL,
                 "all_of[0]: all_of[0]: all_of[0]: all_of[0]: all_of[0]: all_of[0]: all_of[0]: "
                 "all_of[0]: all_of: nested more than 8 levels deep");
}

/* ------------------------------------------------------------------ */
/* jitter                                                              */
/* ------------------------------------------------------------------ */

static void test_jitter_seeded(void **state)
{
    aps_trigger_spec s = interval_spec(0, 0, 1, 0, 0);
    aps_trigger *a, *b, *c;
    aps_time ta = APS_TIME_NONE, tb = APS_TIME_NONE, tc = APS_TIME_NONE, base;
    int i, differ = 0;

    (void)state;
    s.jitter_us = 30 * SEC;
    s.u.interval.start_date = 0;
    a = tu_trigger(&s, 0);
    b = tu_trigger(&s, 0);
    c = tu_trigger(&s, 0);
    aps_trigger_seed(a, 42);
    aps_trigger_seed(b, 42);
    aps_trigger_seed(c, 43);
    for (i = 0; i < 100; i++) {
        aps_time pa = ta;

        /* The same seed gives the same sequence. */
        assert_int_equal(aps_trigger_next(a, APS_TIME_NONE, i * 3600 * SEC, &ta), 0);
        assert_int_equal(aps_trigger_next(b, APS_TIME_NONE, i * 3600 * SEC, &tb), 0);
        assert_int_equal(aps_trigger_next(c, APS_TIME_NONE, i * 3600 * SEC, &tc), 0);
        assert_int_equal(ta, tb);
        differ |= ta != tc;
        /* Within 0..jitter of the grid point. */
        base = (aps_time)i * 3600 * SEC;
        assert_true(ta >= base && ta <= base + 30 * SEC);
        assert_true(pa == APS_TIME_NONE || ta > pa);
    }
    assert_true(differ);
    aps_trigger_destroy(a);
    aps_trigger_destroy(b);
    aps_trigger_destroy(c);
}

/* Jitter larger than the period never moves a fire time to or before the
 * previous one, and a cron end date still bounds it. */
static void test_jitter_bounds(void **state)
{
    aps_trigger_spec s = cron_spec(NULL, NULL, NULL);
    aps_trigger *t;
    aps_time prev = APS_TIME_NONE, next, now = tu_time("2024-01-01T00:00:00Z");
    int i, spread = 0;

    (void)state;
    s.u.cron.second = "*";
    s.jitter_us = 120 * SEC;
    s.u.cron.end_date = tu_time("2024-01-01T00:10:00Z");
    t = tu_trigger(&s, now); /* seeded from the OS */
    for (i = 0; i < 2000; i++) {
        assert_int_equal(aps_trigger_next(t, prev, prev == APS_TIME_NONE ? now : prev, &next), 0);
        if (next == APS_TIME_NONE)
            break;
        assert_true(prev == APS_TIME_NONE || next > prev);
        assert_true(next <= s.u.cron.end_date);
        spread |= next % SEC != 0;
        prev = next;
    }
    assert_true(spread);
    aps_trigger_destroy(t);

    s.jitter_us = -1;
    expect_error(&s, APS_EINVAL, "jitter: must not be negative");
}

/* ------------------------------------------------------------------ */

static void test_api_edges(void **state)
{
    aps_trigger_spec s = cron_spec(NULL, NULL, "5");
    aps_trigger *t;
    aps_time next;
    aps_error err;
    char buf[8];

    (void)state;
    assert_int_equal(aps_trigger_create(NULL, NULL, 0, &t, &err), APS_EINVAL);
    assert_int_equal(aps_trigger_create(&s, NULL, 0, NULL, &err), APS_EINVAL);
    s.kind = (aps_trigger_kind)99;
    expect_error(&s, APS_EINVAL, "trigger: unknown kind 99");
    s = cron_spec(NULL, NULL, "5");
    t = tu_trigger(&s, 0);
    assert_int_equal(aps_trigger_next(NULL, APS_TIME_NONE, 0, &next), APS_EINVAL);
    assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, 0, NULL), APS_EINVAL);
    /* Too small a buffer: truncated, terminated, APS_ERANGE. */
    assert_int_equal(aps_trigger_describe(t, buf, sizeof buf), APS_ERANGE);
    assert_string_equal(buf, "cron[ho");
    assert_int_equal(aps_trigger_describe(t, NULL, 0), APS_ERANGE);
    aps_trigger_seed(NULL, 1);
    aps_trigger_destroy(t);
    aps_trigger_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interval_grid),
        cmocka_unit_test(test_interval_default_start),
        cmocka_unit_test(test_interval_float_fidelity),
        cmocka_unit_test(test_interval_edges),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_calendar_month_end),
        cmocka_unit_test(test_calendar_leap_day),
        cmocka_unit_test(test_calendar_dst),
        cmocka_unit_test(test_calendar_old_start),
        cmocka_unit_test(test_calendar_errors),
        cmocka_unit_test(test_all_of),
        cmocka_unit_test(test_any_of),
        cmocka_unit_test(test_combo_errors),
        cmocka_unit_test(test_jitter_seeded),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_api_edges),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
