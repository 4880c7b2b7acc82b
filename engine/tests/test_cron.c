/*
 * test_cron.c: the cron trigger (cron.c through aps_trigger_*): every
 * expression form, defaults, validation messages, DST gaps and folds,
 * leap years, end dates, far-future searches and never-firing expressions.
 *
 * The expected times of the table below were computed with APScheduler
 * 3.9.1 and pytz on the system tzdata (2025b), then pasted in; the others
 * are worked out by hand in the comments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "cron.h"
#include "testutil.h"
#include "tz.h"

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A cron spec from the eight field strings (NULL = not given). */
static aps_trigger_spec cron_spec(const char *const f[8], const char *tz)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_CRON;
    s.u.cron.year = f[0];
    s.u.cron.month = f[1];
    s.u.cron.day = f[2];
    s.u.cron.week = f[3];
    s.u.cron.day_of_week = f[4];
    s.u.cron.hour = f[5];
    s.u.cron.minute = f[6];
    s.u.cron.second = f[7];
    s.u.cron.timezone = tz;
    s.u.cron.start_date = APS_TIME_NONE;
    s.u.cron.end_date = APS_TIME_NONE;
    return s;
}

/* ------------------------------------------------------------------ */

struct cron_case {
    const char *name;
    const char *fields[8]; /* year month day week day_of_week hour minute second */
    const char *tz, *now, *start, *end;
    const char *describe;
    const char *want[8];
    int n, ends;
};

static const struct cron_case oracle_cases[] = {
    {"every_15s",
     {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "*/15"},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[second='*/15']",
     {"2024-01-01T00:00:00+00:00",
          "2024-01-01T00:00:15+00:00",
          "2024-01-01T00:00:30+00:00",
          "2024-01-01T00:00:45+00:00",
          "2024-01-01T00:01:00+00:00"},
     5, 0},
    {"range_step",
     {NULL, NULL, NULL, NULL, NULL, NULL, "5-20/5", NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[minute='5-20/5']",
     {"2024-01-01T00:05:00+00:00",
          "2024-01-01T00:10:00+00:00",
          "2024-01-01T00:15:00+00:00",
          "2024-01-01T00:20:00+00:00",
          "2024-01-01T01:05:00+00:00"},
     5, 0},
    {"open_step",
     {NULL, NULL, NULL, NULL, NULL, NULL, "50/4", NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[minute='50/4']",
     {"2024-01-01T00:50:00+00:00",
          "2024-01-01T00:54:00+00:00",
          "2024-01-01T00:58:00+00:00",
          "2024-01-01T01:50:00+00:00"},
     4, 0},
    {"list",
     {NULL, NULL, NULL, NULL, NULL, "1,3,22", "0", NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[hour='1,3,22', minute='0']",
     {"2024-01-01T01:00:00+00:00",
          "2024-01-01T03:00:00+00:00",
          "2024-01-01T22:00:00+00:00",
          "2024-01-02T01:00:00+00:00"},
     4, 0},
    {"month_names",
     {NULL, "feb-mar", "1", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[month='feb-mar', day='1']",
     {"2024-02-01T00:00:00+00:00",
          "2024-03-01T00:00:00+00:00",
          "2025-02-01T00:00:00+00:00"},
     3, 0},
    {"weekday_names",
     {NULL, NULL, NULL, NULL, "sat-sun", "12", NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[day_of_week='sat-sun', hour='12']",
     {"2024-01-06T12:00:00+00:00",
          "2024-01-07T12:00:00+00:00",
          "2024-01-13T12:00:00+00:00"},
     3, 0},
    {"weekday_list",
     {NULL, NULL, NULL, NULL, "mon,wed-thu", "8", NULL, NULL},
     "UTC", "2024-01-01T09:00:00+00:00", NULL, NULL,
     "cron[day_of_week='mon,wed-thu', hour='8']",
     {"2024-01-03T08:00:00+00:00",
          "2024-01-04T08:00:00+00:00",
          "2024-01-08T08:00:00+00:00",
          "2024-01-10T08:00:00+00:00"},
     4, 0},
    {"last_day",
     {NULL, NULL, "last", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[day='last']",
     {"2024-01-31T00:00:00+00:00",
          "2024-02-29T00:00:00+00:00",
          "2024-03-31T00:00:00+00:00",
          "2024-04-30T00:00:00+00:00"},
     4, 0},
    {"second_friday",
     {NULL, NULL, "2nd fri", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[day='2nd fri']",
     {"2024-01-12T00:00:00+00:00",
          "2024-02-09T00:00:00+00:00",
          "2024-03-08T00:00:00+00:00"},
     3, 0},
    {"last_friday",
     {NULL, NULL, "last fri", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[day='last fri']",
     {"2024-01-26T00:00:00+00:00",
          "2024-02-23T00:00:00+00:00",
          "2024-03-29T00:00:00+00:00"},
     3, 0},
    {"fifth_monday",
     {NULL, NULL, "5th mon", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[day='5th mon']",
     {"2024-01-29T00:00:00+00:00",
          "2024-04-29T00:00:00+00:00",
          "2024-07-29T00:00:00+00:00"},
     3, 0},
    {"iso_week_1",
     {NULL, NULL, NULL, "1", "mon", NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[week='1', day_of_week='mon']",
     {"2024-01-01T00:00:00+00:00",
          "2024-12-30T00:00:00+00:00",
          "2025-12-29T00:00:00+00:00"},
     3, 0},
    {"year_step",
     {"2025/2", "1", NULL, NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[year='2025/2', month='1']",
     {"2025-01-01T00:00:00+00:00",
          "2027-01-01T00:00:00+00:00",
          "2029-01-01T00:00:00+00:00"},
     3, 0},
    {"names_ci_prefix",
     {NULL, "JAN-Mar/2", NULL, NULL, "mon5", "0", "0", "0"},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, NULL,
     "cron[month='jan-mar', day_of_week='mon', hour='0', minute='0', second='0']",
     {"2024-01-01T00:00:00+00:00",
          "2024-01-08T00:00:00+00:00",
          "2024-01-15T00:00:00+00:00"},
     3, 0},
    {"zero_last_quirk",
     {NULL, NULL, NULL, NULL, NULL, "0-0/5", "0", NULL},
     "UTC", "2024-01-01T01:00:00+00:00", NULL, NULL,
     "cron[hour='0/5', minute='0']",
     {"2024-01-02T00:00:00+00:00",
          "2024-01-03T00:00:00+00:00"},
     2, 0},
    {"no_fields",
     {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
     "UTC", "2024-01-01T00:00:00.5+00:00", NULL, NULL,
     "cron[]",
     {"2024-01-01T00:00:01+00:00",
          "2024-01-01T00:00:02+00:00",
          "2024-01-01T00:00:03+00:00"},
     3, 0},
    {"ny_spring_gap",
     {NULL, NULL, NULL, NULL, NULL, "2", "30", NULL},
     "America/New_York", "2024-03-09T00:00:00-05:00", NULL, NULL,
     "cron[hour='2', minute='30']",
     {"2024-03-09T02:30:00-05:00",
          "2024-03-10T02:30:00-05:00",
          "2024-03-11T02:30:00-04:00"},
     3, 0},
    {"ny_fall_fold",
     {NULL, NULL, NULL, NULL, NULL, "1", "30", NULL},
     "America/New_York", "2024-11-02T00:00:00-04:00", NULL, NULL,
     "cron[hour='1', minute='30']",
     {"2024-11-02T01:30:00-04:00",
          "2024-11-03T01:30:00-05:00",
          "2024-11-04T01:30:00-05:00"},
     3, 0},
    {"ny_fall_half_hours",
     {NULL, NULL, NULL, NULL, NULL, NULL, "*/30", NULL},
     "America/New_York", "2024-11-03T00:00:00-04:00", NULL, NULL,
     "cron[minute='*/30']",
     {"2024-11-03T00:00:00-04:00",
          "2024-11-03T00:30:00-04:00",
          "2024-11-03T01:00:00-04:00",
          "2024-11-03T01:30:00-05:00",
          "2024-11-03T02:00:00-05:00",
          "2024-11-03T02:30:00-05:00",
          "2024-11-03T03:00:00-05:00",
          "2024-11-03T03:30:00-05:00"},
     8, 0},
    {"ny_spring_hours",
     {NULL, NULL, NULL, NULL, NULL, NULL, "0", NULL},
     "America/New_York", "2024-03-10T00:00:00-05:00", NULL, NULL,
     "cron[minute='0']",
     {"2024-03-10T00:00:00-05:00",
          "2024-03-10T01:00:00-05:00",
          "2024-03-10T03:00:00-04:00",
          "2024-03-10T04:00:00-04:00"},
     4, 0},
    {"london_gap",
     {NULL, NULL, NULL, NULL, NULL, "1", "30", NULL},
     "Europe/London", "2024-03-30T00:00:00+00:00", NULL, NULL,
     "cron[hour='1', minute='30']",
     {"2024-03-30T01:30:00+00:00",
          "2024-03-31T01:30:00+00:00",
          "2024-04-01T01:30:00+01:00"},
     3, 0},
    {"london_fold",
     {NULL, NULL, NULL, NULL, NULL, "1", "30", NULL},
     "Europe/London", "2024-10-26T00:00:00+01:00", NULL, NULL,
     "cron[hour='1', minute='30']",
     {"2024-10-26T01:30:00+01:00",
          "2024-10-27T01:30:00+00:00",
          "2024-10-28T01:30:00+00:00"},
     3, 0},
    {"lord_howe_gap",
     {NULL, NULL, NULL, NULL, NULL, "2", "*/15", NULL},
     "Australia/Lord_Howe", "2024-10-05T00:00:00+10:30", NULL, NULL,
     "cron[hour='2', minute='*/15']",
     {"2024-10-05T02:00:00+10:30",
          "2024-10-05T02:15:00+10:30",
          "2024-10-05T02:30:00+10:30",
          "2024-10-05T02:45:00+10:30",
          "2024-10-06T02:00:00+10:30",
          "2024-10-06T02:45:00+11:00",
          "2024-10-07T02:00:00+11:00",
          "2024-10-07T02:15:00+11:00"},
     8, 0},
    {"lord_howe_fold",
     {NULL, NULL, NULL, NULL, NULL, "1", "*/20", NULL},
     "Australia/Lord_Howe", "2024-04-07T00:00:00+11:00", NULL, NULL,
     "cron[hour='1', minute='*/20']",
     {"2024-04-07T01:00:00+11:00",
          "2024-04-07T01:20:00+11:00",
          "2024-04-07T01:40:00+10:30",
          "2024-04-08T01:00:00+10:30",
          "2024-04-08T01:20:00+10:30",
          "2024-04-08T01:40:00+10:30",
          "2024-04-09T01:00:00+10:30",
          "2024-04-09T01:20:00+10:30"},
     8, 0},
    {"sao_paulo_midnight",
     {NULL, NULL, NULL, NULL, NULL, "0", "0", NULL},
     "America/Sao_Paulo", "2018-11-02T00:00:00-03:00", NULL, NULL,
     "cron[hour='0', minute='0']",
     {"2018-11-02T00:00:00-03:00",
          "2018-11-03T00:00:00-03:00",
          "2018-11-05T00:00:00-02:00"},
     3, 0},
    {"leap_day",
     {NULL, "2", "29", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2021-01-01T00:00:00+00:00", NULL, NULL,
     "cron[month='2', day='29']",
     {"2024-02-29T00:00:00+00:00",
          "2028-02-29T00:00:00+00:00"},
     2, 0},
    {"leap_day_2100",
     {NULL, "2", "29", NULL, NULL, NULL, NULL, NULL},
     "UTC", "2097-01-01T00:00:00+00:00", NULL, NULL,
     "cron[month='2', day='29']",
     {"2104-02-29T00:00:00+00:00"},
     1, 0},
    {"end_date",
     {NULL, NULL, NULL, NULL, NULL, "*/6", NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", NULL, "2024-01-01T18:00:00+00:00",
     "cron[hour='*/6']",
     {"2024-01-01T00:00:00+00:00",
          "2024-01-01T06:00:00+00:00",
          "2024-01-01T12:00:00+00:00",
          "2024-01-01T18:00:00+00:00"},
     4, 1},
    {"start_date",
     {NULL, NULL, NULL, NULL, NULL, "*/6", NULL, NULL},
     "UTC", "2024-01-01T00:00:00+00:00", "2024-01-02T07:00:00+00:00", NULL,
     "cron[hour='*/6']",
     {"2024-01-02T12:00:00+00:00",
          "2024-01-02T18:00:00+00:00"},
     2, 0},
};

static void test_oracle_cases(void **state)
{
    size_t i;
    char buf[256];

    (void)state;
    for (i = 0; i < sizeof oracle_cases / sizeof oracle_cases[0]; i++) {
        const struct cron_case *c = &oracle_cases[i];
        aps_trigger_spec s = cron_spec(c->fields, c->tz);
        aps_trigger *t;

        print_message("case %s\n", c->name);
        if (c->start)
            s.u.cron.start_date = tu_time(c->start);
        if (c->end)
            s.u.cron.end_date = tu_time(c->end);
        t = tu_trigger(&s, tu_time(c->now));
        assert_int_equal(aps_trigger_describe(t, buf, sizeof buf), 0);
        assert_string_equal(buf, c->describe);
        tu_check_sequence(t, tu_time(c->now), c->want, c->n, c->ends);
        aps_trigger_destroy(t);
    }
}

/* ------------------------------------------------------------------ */

static aps_trigger *crontab(const char *expr, const char *tz, aps_time now)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_CRON;
    s.u.cron.crontab = expr;
    s.u.cron.timezone = tz;
    s.u.cron.start_date = APS_TIME_NONE;
    s.u.cron.end_date = APS_TIME_NONE;
    return tu_trigger(&s, now);
}

/* Standard crontab weekdays: 0 and 7 are Sunday, 1-5 Monday to Friday
 * (2024-01-01 is a Monday). */
static void test_crontab_weekdays(void **state)
{
    static const struct {
        const char *expr, *describe;
        const char *want[5];
    } cases[] = {
        {"0 9 * * 0", "day_of_week='sun'",
         {"2024-01-07T09:00:00Z", "2024-01-14T09:00:00Z", "2024-01-21T09:00:00Z",
          "2024-01-28T09:00:00Z", "2024-02-04T09:00:00Z"}},
        {"0 9 * * 7", "day_of_week='sun'",
         {"2024-01-07T09:00:00Z", "2024-01-14T09:00:00Z", "2024-01-21T09:00:00Z",
          "2024-01-28T09:00:00Z", "2024-02-04T09:00:00Z"}},
        {"0 9 * * 1-5", "day_of_week='mon-fri'",
         {"2024-01-01T09:00:00Z", "2024-01-02T09:00:00Z", "2024-01-03T09:00:00Z",
          "2024-01-04T09:00:00Z", "2024-01-05T09:00:00Z"}},
        {"0 9 * * */2", "day_of_week='tue,thu,sat-sun'",
         {"2024-01-02T09:00:00Z", "2024-01-04T09:00:00Z", "2024-01-06T09:00:00Z",
          "2024-01-07T09:00:00Z", "2024-01-09T09:00:00Z"}},
        {"0 9 * * fri-sun", "day_of_week='fri-sun'",
         {"2024-01-05T09:00:00Z", "2024-01-06T09:00:00Z", "2024-01-07T09:00:00Z",
          "2024-01-12T09:00:00Z", "2024-01-13T09:00:00Z"}},
        {"0 9 * * 5-7", "day_of_week='fri-sun'",
         {"2024-01-05T09:00:00Z", "2024-01-06T09:00:00Z", "2024-01-07T09:00:00Z",
          "2024-01-12T09:00:00Z", "2024-01-13T09:00:00Z"}},
        {"0 9 * * 0,6", "day_of_week='sat-sun'",
         {"2024-01-06T09:00:00Z", "2024-01-07T09:00:00Z", "2024-01-13T09:00:00Z",
          "2024-01-14T09:00:00Z", "2024-01-20T09:00:00Z"}},
        {"0 9 * * SUN,Mon", "day_of_week='mon,sun'",
         {"2024-01-01T09:00:00Z", "2024-01-07T09:00:00Z", "2024-01-08T09:00:00Z",
          "2024-01-14T09:00:00Z", "2024-01-15T09:00:00Z"}},
        {"0 9 * * 1/2", "day_of_week='mon,wed,fri,sun'",
         {"2024-01-01T09:00:00Z", "2024-01-03T09:00:00Z", "2024-01-05T09:00:00Z",
          "2024-01-07T09:00:00Z", "2024-01-08T09:00:00Z"}},
    };
    aps_time now = tu_time("2024-01-01T00:00:00Z");
    char buf[256], want[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aps_trigger *t = crontab(cases[i].expr, "UTC", now);

        print_message("crontab %s\n", cases[i].expr);
        assert_int_equal(aps_trigger_describe(t, buf, sizeof buf), 0);
        snprintf(want, sizeof want, "cron[month='*', day='*', %s, hour='9', minute='0']",
                 cases[i].describe);
        assert_string_equal(buf, want);
        tu_check_sequence(t, now, cases[i].want, 5, 0);
        aps_trigger_destroy(t);
    }
}

static void test_crontab_fields(void **state)
{
    static const char *const every5[] = {"2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z"};
    /* 2100 is not a leap year (divisible by 100, not by 400). */
    static const char *const leap[] = {"2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"};
    static const char *const tabs[] = {"2024-01-01T12:30:00Z", "2024-01-02T12:30:00Z"};
    aps_trigger *t;
    char buf[256];

    (void)state;
    t = crontab("*/5 * * * *", "UTC", tu_time("2024-01-01T00:00:01Z"));
    assert_int_equal(aps_trigger_describe(t, buf, sizeof buf), 0);
    assert_string_equal(buf, "cron[month='*', day='*', day_of_week='*', hour='*', minute='*/5']");
    tu_check_sequence(t, tu_time("2024-01-01T00:00:01Z"), every5, 2, 0);
    aps_trigger_destroy(t);

    t = crontab("0 0 29 2 *", "UTC", tu_time("2097-01-01T00:00:00Z"));
    tu_check_sequence(t, tu_time("2097-01-01T00:00:00Z"), leap, 2, 0);
    aps_trigger_destroy(t);

    /* Any whitespace separates the fields, as Python's str.split(). */
    t = crontab("  30\t12 *\n* *  ", "UTC", tu_time("2024-01-01T00:00:00Z"));
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), tabs, 2, 0);
    aps_trigger_destroy(t);
}

/* ------------------------------------------------------------------ */

struct error_case {
    int field; /* APS_CRON_*, or -1 for crontab */
    const char *value;
    const char *msg;
};

static const struct error_case error_cases[] = {
    {APS_CRON_YEAR, "1969", "year: 1969 is out of range 1970-9999"},
    {APS_CRON_YEAR, "10000", "year: 10000 is out of range 1970-9999"},
    {APS_CRON_MONTH, "0", "month: 0 is out of range 1-12"},
    {APS_CRON_MONTH, "13", "month: 13 is out of range 1-12"},
    {APS_CRON_MONTH, "foo", "month: unknown month \"foo\""},
    {APS_CRON_MONTH, "jan-foo", "month: unknown month \"foo\""},
    {APS_CRON_MONTH, "mar-jan", "month: range \"mar-jan\": the first value is higher than the last"},
    {APS_CRON_DAY, "0", "day: 0 is out of range 1-31"},
    {APS_CRON_DAY, "32", "day: 32 is out of range 1-31"},
    {APS_CRON_DAY, "6th mon", "day: unrecognized expression \"6th mon\""},
    {APS_CRON_DAY, "last fooday", "day: unknown weekday \"fooday\""},
    {APS_CRON_DAY, "2nd 5", "day: unknown weekday \"5\""},
    {APS_CRON_WEEK, "0", "week: 0 is out of range 1-53"},
    {APS_CRON_WEEK, "54", "week: 54 is out of range 1-53"},
    {APS_CRON_DAY_OF_WEEK, "7", "day_of_week: 7 is out of range 0-6"},
    {APS_CRON_DAY_OF_WEEK, "fooday", "day_of_week: unknown weekday \"fooday\""},
    {APS_CRON_DAY_OF_WEEK, "mon-fooday", "day_of_week: unknown weekday \"fooday\""},
    {APS_CRON_DAY_OF_WEEK, "last", "day_of_week: unknown weekday \"last\""},
    {APS_CRON_HOUR, "24", "hour: 24 is out of range 0-23"},
    {APS_CRON_HOUR, "25", "hour: 25 is out of range 0-23"},
    {APS_CRON_HOUR, "1-99999999999999999999", "hour: 1000000000 is out of range 0-23"},
    {APS_CRON_HOUR, "*/0", "hour: step must be higher than 0 in \"*/0\""},
    {APS_CRON_HOUR, "1-5/0", "hour: step must be higher than 0 in \"1-5/0\""},
    {APS_CRON_HOUR, "5-3", "hour: range \"5-3\": the first value is higher than the last"},
    {APS_CRON_HOUR, "1,,2", "hour: empty expression"},
    {APS_CRON_HOUR, "", "hour: empty expression"},
    {APS_CRON_HOUR, "  ", "hour: empty expression"},
    {APS_CRON_HOUR, "1-1/5", "hour: step 5 in \"1-1/5\" is higher than the range of the expression (0)"},
    {APS_CRON_HOUR, "last", "hour: unrecognized expression \"last\""},
    {APS_CRON_MINUTE, "60", "minute: 60 is out of range 0-59"},
    {APS_CRON_MINUTE, "x", "minute: unrecognized expression \"x\""},
    {APS_CRON_MINUTE, "-1", "minute: unrecognized expression \"-1\""},
    {APS_CRON_MINUTE, "a-b", "minute: unrecognized expression \"a-b\""},
    {APS_CRON_MINUTE, "*/60", "minute: step 60 in \"*/60\" is higher than the range 0-59"},
    {APS_CRON_MINUTE, "70/2", "minute: 70 is out of range 0-59"},
    {APS_CRON_MINUTE, "1 2", "minute: unrecognized expression \"1 2\""},
    {APS_CRON_SECOND, "60", "second: 60 is out of range 0-59"},
    {APS_CRON_SECOND, "*/-1", "second: unrecognized expression \"*/-1\""},
    {-1, "* * *", "crontab: wrong number of fields; got 3, expected 5 (minute hour day month day_of_week)"},
    {-1, "* * * * * *", "crontab: wrong number of fields; got 6, expected 5 (minute hour day month day_of_week)"},
    {-1, "", "crontab: wrong number of fields; got 0, expected 5 (minute hour day month day_of_week)"},
    {-1, "x * * * *", "crontab: minute: unrecognized expression \"x\""},
    {-1, "* 24 * * *", "crontab: hour: 24 is out of range 0-23"},
    {-1, "* * * 13 *", "crontab: month: 13 is out of range 1-12"},
    {-1, "* * * * 8", "crontab: day_of_week: 8 is out of range 0-7"},
    {-1, "* * * * fooday", "crontab: day_of_week: unknown weekday \"fooday\""},
    {-1, "* * * * 5-1", "crontab: day_of_week: range \"5-1\": the first value is higher than the last"},
    {-1, "* * * * */0", "crontab: day_of_week: step must be higher than 0 in \"*/0\""},
    {-1, "* * * * 1,,2", "crontab: day_of_week: empty expression"},
    {-1, "* * * * 1x", "crontab: day_of_week: unrecognized expression \"1x\""},
};

static void test_validation_messages(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
        const struct error_case *c = &error_cases[i];
        const char *f[8] = {NULL};
        aps_trigger_spec s;
        aps_trigger *t = (aps_trigger *)&s; /* must be reset to NULL */
        aps_error err;

        print_message("%s = \"%s\"\n", c->field >= 0 ? aps__cron_field_name(c->field) : "crontab",
                      c->value);
        if (c->field >= 0)
            f[c->field] = c->value;
        s = cron_spec(f, "UTC");
        if (c->field < 0)
            s.u.cron.crontab = c->value;
        memset(&err, 0, sizeof err);
        assert_int_equal(aps_trigger_create(&s, NULL, 0, &t, &err), APS_EINVAL);
        assert_null(t);
        assert_int_equal(err.code, APS_EINVAL);
        assert_string_equal(err.msg, c->msg);
    }
}

static void test_other_rejections(void **state)
{
    const char *f[8] = {NULL};
    aps_trigger_spec s;
    aps_trigger *t = NULL;
    aps_error err;
    char *big;

    (void)state;
    f[APS_CRON_HOUR] = "1";
    s = cron_spec(f, "Mars/Olympus_Mons");
    assert_int_equal(aps_trigger_create(&s, NULL, 0, &t, &err), APS_ENOENT);
    assert_string_equal(err.msg, "timezone: unknown time zone \"Mars/Olympus_Mons\"");

    /* No zone in the spec: the default zone given to create is used. */
    s = cron_spec(f, NULL);
    assert_int_equal(aps_trigger_create(&s, "../etc/passwd", 0, &t, &err), APS_ENOENT);

    s = cron_spec(f, "UTC");
    s.u.cron.crontab = "* * * * *";
    assert_int_equal(aps_trigger_create(&s, NULL, 0, &t, &err), APS_EINVAL);
    assert_string_equal(err.msg, "crontab: cannot be combined with the year..second fields");

    /* Expressions are bounded in length. */
    big = malloc(APS_CRON_EXPR_MAX + 2);
    assert_non_null(big);
    memset(big, '1', APS_CRON_EXPR_MAX + 1);
    big[APS_CRON_EXPR_MAX + 1] = '\0';
    f[APS_CRON_HOUR] = big;
    s = cron_spec(f, "UTC");
    assert_int_equal(aps_trigger_create(&s, NULL, 0, &t, &err), APS_EINVAL);
    assert_string_equal(err.msg, "hour: expression too long (4097 bytes, max 4096)");
    free(big);

    /* A null err is allowed. */
    f[APS_CRON_HOUR] = "99";
    s = cron_spec(f, "UTC");
    assert_int_equal(aps_trigger_create(&s, NULL, 0, &t, NULL), APS_EINVAL);
    assert_null(t);
}

/* Every field's limits are accepted. */
static void test_field_limits(void **state)
{
    static const char *const lim[8][2] = {
        {"1970", "9999"}, {"1", "12"}, {"1", "31"}, {"1", "53"},
        {"0", "6"},       {"0", "23"}, {"0", "59"}, {"0", "59"},
    };
    aps_trigger *t;
    aps_error err;
    int f, k;

    (void)state;
    for (f = 0; f < 8; f++) {
        for (k = 0; k < 2; k++) {
            const char *fields[8] = {NULL};
            aps_trigger_spec s;

            fields[f] = lim[f][k];
            s = cron_spec(fields, "UTC");
            assert_int_equal(aps_trigger_create(&s, NULL, 0, &t, &err), 0);
            aps_trigger_destroy(t);
        }
    }
}

/* ------------------------------------------------------------------ */

/* Past 2037 pytz cannot serve as the oracle; the zone's footer rule
 * applies: in 2100 New York springs forward on Sunday March 14 (02:30 does
 * not exist and is read as EST, 07:30Z) and falls back on November 7
 * (01:30 happens twice; the standard-time one, 06:30Z, is taken). */
static void test_far_future_dst(void **state)
{
    static const char *const spring[] = {
        "2100-03-13T07:30:00Z", "2100-03-14T07:30:00Z", "2100-03-15T06:30:00Z"};
    static const char *const fall[] = {
        "2100-11-06T05:30:00Z", "2100-11-07T06:30:00Z", "2100-11-08T06:30:00Z"};
    static const char *const y2300[] = {"2300-07-04T16:00:00Z", "2301-07-04T16:00:00Z"};
    const char *f[8] = {NULL};
    aps_trigger_spec s;
    aps_trigger *t;

    (void)state;
    f[APS_CRON_HOUR] = "2";
    f[APS_CRON_MINUTE] = "30";
    s = cron_spec(f, "America/New_York");
    t = tu_trigger(&s, tu_time("2100-03-13T00:00:00-05:00"));
    tu_check_sequence(t, tu_time("2100-03-13T00:00:00-05:00"), spring, 3, 0);
    aps_trigger_destroy(t);

    f[APS_CRON_HOUR] = "1";
    s = cron_spec(f, "America/New_York");
    t = tu_trigger(&s, tu_time("2100-11-06T00:00:00-04:00"));
    tu_check_sequence(t, tu_time("2100-11-06T00:00:00-04:00"), fall, 3, 0);
    aps_trigger_destroy(t);

    memset(f, 0, sizeof f);
    f[APS_CRON_YEAR] = "2300-2301";
    f[APS_CRON_MONTH] = "7";
    f[APS_CRON_DAY] = "4";
    f[APS_CRON_HOUR] = "12";
    s = cron_spec(f, "America/New_York");
    t = tu_trigger(&s, tu_time("2024-01-01T00:00:00Z"));
    tu_check_sequence(t, tu_time("2024-01-01T00:00:00Z"), y2300, 2, 1);
    aps_trigger_destroy(t);
}

static void test_year_bounds(void **state)
{
    static const char *const first[] = {"1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"};
    static const char *const last[] = {"9999-12-31T00:00:00Z"};
    const char *f[8] = {NULL};
    aps_trigger_spec s;
    aps_trigger *t;
    aps_time next;

    (void)state;
    /* Before 1970 the year field jumps to its minimum. */
    f[APS_CRON_HOUR] = "0";
    s = cron_spec(f, "UTC");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("1900-06-01T00:00:00Z"), first, 2, 0);
    assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, INT64_MIN + 1, &next), 0);
    assert_int_equal(next, tu_time("1970-01-01T00:00:00Z"));
    /* Nothing after year 9999. */
    tu_check_sequence(t, tu_time("9999-12-30T12:00:00Z"), last, 1, 1);
    assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, INT64_MAX, &next), 0);
    assert_int_equal(next, APS_TIME_NONE);
    assert_int_equal(aps_trigger_next(t, INT64_MAX, INT64_MAX, &next), 0);
    assert_int_equal(next, APS_TIME_NONE);
    aps_trigger_destroy(t);
}

/* Expressions that match no date return NONE, and fast: each search is
 * bounded by year 9999 and cut short by the 400-year calendar check. */
static void test_never_fires(void **state)
{
    static const char *const never[][8] = {
        {NULL, "2", "30", NULL, NULL, NULL, NULL, NULL},
        {NULL, "4,6,9,11", "31", NULL, NULL, NULL, NULL, NULL},
        {"1999", NULL, NULL, NULL, NULL, NULL, NULL, NULL},
        {"2023", "2", "29", NULL, NULL, NULL, NULL, NULL},
        {NULL, "6", NULL, "53", NULL, NULL, NULL, NULL},
        {NULL, "1", "20-31", "1", NULL, NULL, NULL, NULL},
        {NULL, "2", "5th mon", NULL, "tue", NULL, NULL, NULL},
        {"*/2", "2", "29", NULL, NULL, NULL, NULL, NULL}, /* even years from 1970: 1972... */
    };
    aps_time now = tu_time("2024-05-01T00:00:00Z"), next;
    struct timespec t0;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof never / sizeof never[0]; i++) {
        aps_trigger_spec s = cron_spec(never[i], "America/New_York");
        aps_trigger *t = tu_trigger(&s, now);

        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(aps_trigger_next(t, APS_TIME_NONE, now, &next), 0);
        if (i == 7) {
            /* Not never: even years include leap years. */
            assert_int_equal(next, tu_time("2028-02-29T00:00:00-05:00"));
        } else {
            assert_int_equal(next, APS_TIME_NONE);
        }
        /* Generous for sanitizer builds; about 2 ms optimized. */
        assert_true(seconds_since(&t0) < 2.0);
        aps_trigger_destroy(t);
    }
}

/* Europe/Dublin flags its winter time as DST, so in the October fold
 * pytz's localize(is_dst=False) takes the earlier (summer) instant, and
 * APScheduler 3.9.1's search goes back in time: it answers 01:30 IST on
 * the 27th again and again, and cycles through 01:10-01:50 IST with
 * `*\/10`. The engine answers the next time after the previous one
 * instead, passing over only the wall times (01:10-01:50 GMT) that
 * APScheduler's rule never yields. */
static void test_fold_never_goes_back(void **state)
{
    static const char *const daily[] = {"2024-10-26T01:30:00+01:00", "2024-10-27T01:30:00+01:00",
                                        "2024-10-28T01:30:00+00:00"};
    static const char *const tens[] = {
        "2024-10-27T01:30:00+01:00", "2024-10-27T01:40:00+01:00", "2024-10-27T01:50:00+01:00",
        "2024-10-27T01:00:00+00:00", "2024-10-27T02:00:00+00:00", "2024-10-27T02:10:00+00:00",
    };
    const char *f[8] = {NULL};
    aps_trigger_spec s;
    aps_trigger *t;

    (void)state;
    f[APS_CRON_HOUR] = "1";
    f[APS_CRON_MINUTE] = "30";
    s = cron_spec(f, "Europe/Dublin");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-10-26T00:00:00+01:00"), daily, 3, 0);
    aps_trigger_destroy(t);

    f[APS_CRON_HOUR] = NULL;
    f[APS_CRON_MINUTE] = "*/10";
    s = cron_spec(f, "Europe/Dublin");
    t = tu_trigger(&s, 0);
    tu_check_sequence(t, tu_time("2024-10-27T01:30:00+01:00"), tens, 6, 0);
    aps_trigger_destroy(t);
}

/* The internal API: compile, search with an end, describe. */
static void test_internal_api(void **state)
{
    const char *f[APS_CRON_FIELDS] = {NULL};
    aps_cron *c = NULL;
    const aps_tz *tz;
    aps_time next;
    aps_error err;
    char buf[16];

    (void)state;
    assert_string_equal(aps__cron_field_name(APS_CRON_DAY_OF_WEEK), "day_of_week");
    assert_null(aps__cron_field_name(8));
    assert_int_equal(aps__tz_get("UTC", &tz, &err), 0);
    f[APS_CRON_MONTH] = "6-8";
    f[APS_CRON_DAY] = "last fri";
    f[APS_CRON_HOUR] = "5";
    assert_int_equal(aps__cron_compile(f, NULL, &c, &err), 0);
    assert_int_equal(
        aps__cron_next(c, tz, tu_time("2024-01-01T00:00:00Z"), APS_TIME_NONE, &next), 0);
    assert_int_equal(next, tu_time("2024-06-28T05:00:00Z"));
    /* The end is inclusive. */
    assert_int_equal(aps__cron_next(c, tz, tu_time("2024-01-01T00:00:00Z"),
                                    tu_time("2024-06-28T05:00:00Z"), &next),
                     0);
    assert_int_equal(next, tu_time("2024-06-28T05:00:00Z"));
    assert_int_equal(aps__cron_next(c, tz, tu_time("2024-01-01T00:00:00Z"),
                                    tu_time("2024-06-28T04:59:59Z"), &next),
                     0);
    assert_int_equal(next, APS_TIME_NONE);
    /* A short buffer is filled, terminated, and reported. */
    assert_int_equal(aps__cron_describe(c, buf, sizeof buf), APS_ERANGE);
    assert_int_equal(strlen(buf), sizeof buf - 1);
    assert_int_equal(aps__cron_describe(c, NULL, 0), APS_ERANGE);
    aps__cron_free(c);
    aps__cron_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracle_cases),
        cmocka_unit_test(test_crontab_weekdays),
        cmocka_unit_test(test_crontab_fields),
        cmocka_unit_test(test_validation_messages),
        cmocka_unit_test(test_other_rejections),
        cmocka_unit_test(test_field_limits),
        cmocka_unit_test(test_far_future_dst),
        cmocka_unit_test(test_year_bounds),
        cmocka_unit_test(test_never_fires),
        cmocka_unit_test(test_fold_never_goes_back),
        cmocka_unit_test(test_internal_api),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
