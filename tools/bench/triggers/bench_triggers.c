/*
 * bench_triggers: next-fire-time computations per second of the engine's
 * triggers, on one thread, for a fixed mix of cron, interval and
 * calendar_interval triggers in several zones. The same mix is computed
 * with APScheduler by apscheduler_triggers.py; `run` prints both side by
 * side.
 *
 *   bench_triggers [--count N] [--only NAME]
 *
 * Each trigger computes a chain t(k+1) = next(tk, tk) from 2024-01-01,
 * restarted past 2034.
 *
 * Output: one line per trigger, "NAME<TAB>computations/s", then "mix" (all
 * computations over all the time) and "cron_simple_1thread" (the target
 * figure: a plain `*\/5 * * * *` in UTC).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apsd/engine.h"

typedef struct bench_case {
    const char *name;
    aps_trigger_spec spec;
} bench_case;

#define NONE APS_TIME_NONE

static aps_trigger_spec cron(const char *month, const char *day, const char *week,
                             const char *dow, const char *hour, const char *minute,
                             const char *second, const char *tz)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_CRON;
    s.u.cron.month = month;
    s.u.cron.day = day;
    s.u.cron.week = week;
    s.u.cron.day_of_week = dow;
    s.u.cron.hour = hour;
    s.u.cron.minute = minute;
    s.u.cron.second = second;
    s.u.cron.timezone = tz;
    s.u.cron.start_date = NONE;
    s.u.cron.end_date = NONE;
    return s;
}

static aps_trigger_spec interval(int64_t days, int64_t hours, int64_t minutes, const char *tz)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_INTERVAL;
    s.u.interval.days = days;
    s.u.interval.hours = hours;
    s.u.interval.minutes = minutes;
    s.u.interval.start_date = 1704067200 * INT64_C(1000000); /* 2024-01-01T00:00:00Z */
    s.u.interval.end_date = NONE;
    s.u.interval.timezone = tz;
    return s;
}

static aps_trigger_spec calendar(int months, int days, int hour, int minute, const char *tz)
{
    aps_trigger_spec s;

    memset(&s, 0, sizeof s);
    s.kind = APS_TRIGGER_CALENDAR_INTERVAL;
    s.u.calendar_interval.months = months;
    s.u.calendar_interval.days = days;
    s.u.calendar_interval.hour = hour;
    s.u.calendar_interval.minute = minute;
    s.u.calendar_interval.start_date = 1704067200 * INT64_C(1000000);
    s.u.calendar_interval.end_date = NONE;
    s.u.calendar_interval.timezone = tz;
    return s;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Chains restart from the start past this (2034-01-01T00:00:00Z), so that
 * every trigger is measured on the next ten years, as apscheduler_triggers.py
 * does: a realistic horizon, not centuries ahead. */
#define HORIZON (INT64_C(2019686400) * 1000000)

/* Computes `count` fire times in a chain, next(t, t), restarting from the
 * start when the trigger runs out or passes the horizon. Returns the
 * seconds taken. */
static double run_case(const bench_case *c, long count, aps_time start)
{
    aps_trigger *t = NULL;
    aps_error err;
    aps_time prev = NONE, next;
    double t0, t1;
    long i;

    if (aps_trigger_create(&c->spec, "UTC", start, &t, &err)) {
        fprintf(stderr, "bench_triggers: %s: %s\n", c->name, err.msg);
        exit(2);
    }
    t0 = now_s();
    for (i = 0; i < count; i++) {
        if (aps_trigger_next(t, prev, prev == NONE ? start : prev, &next)) {
            fprintf(stderr, "bench_triggers: %s: next failed\n", c->name);
            exit(2);
        }
        prev = next > HORIZON ? NONE : next; /* NONE restarts the chain */
    }
    t1 = now_s();
    aps_trigger_destroy(t);
    return t1 - t0;
}

int main(int argc, char **argv)
{
    bench_case cases[] = {
        {"cron_simple_utc", cron(NULL, NULL, NULL, NULL, NULL, "*/5", NULL, "UTC")},
        {"cron_weekdays_new_york", cron(NULL, NULL, NULL, "mon-fri", "9", "30", NULL,
                                        "America/New_York")},
        {"cron_last_fri_london", cron("6-8", "last fri", NULL, NULL, "5", NULL, NULL,
                                      "Europe/London")},
        {"cron_seconds_lord_howe", cron(NULL, NULL, NULL, NULL, NULL, NULL, "*/15",
                                        "Australia/Lord_Howe")},
        {"cron_2nd_mon_tokyo", cron(NULL, "2nd mon", NULL, NULL, "10", "0", NULL, "Asia/Tokyo")},
        {"cron_week_berlin", cron(NULL, NULL, "*/2", "sat", "8", NULL, NULL, "Europe/Berlin")},
        {"cron_hours_sao_paulo", cron(NULL, NULL, NULL, NULL, "0-23/3", "15", NULL,
                                      "America/Sao_Paulo")},
        {"interval_90m_tokyo", interval(0, 1, 30, "Asia/Tokyo")},
        {"interval_7d_new_york", interval(7, 0, 0, "America/New_York")},
        {"calendar_monthly_berlin", calendar(1, 0, 9, 0, "Europe/Berlin")},
        {"calendar_daily_sydney", calendar(0, 1, 2, 30, "Australia/Sydney")},
    };
    const size_t ncases = sizeof cases / sizeof cases[0];
    aps_time start = 1704067200 * INT64_C(1000000); /* 2024-01-01T00:00:00Z */
    long count = 200000;
    const char *only = NULL;
    double total = 0, secs;
    size_t i, n = 0;
    int a;

    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--count") && a + 1 < argc) {
            count = atol(argv[++a]);
        } else if (!strcmp(argv[a], "--only") && a + 1 < argc) {
            only = argv[++a];
        } else {
            fprintf(stderr, "usage: bench_triggers [--count N] [--only NAME]\n");
            return 2;
        }
    }
    if (count < 1)
        count = 1;
    for (i = 0; i < ncases; i++) {
        if (only && strcmp(only, cases[i].name))
            continue;
        run_case(&cases[i], count / 10 + 1, start); /* warm the zone cache */
        secs = run_case(&cases[i], count, start);
        printf("%s\t%.0f\n", cases[i].name, (double)count / secs);
        total += secs;
        n++;
    }
    if (n > 1)
        printf("mix\t%.0f\n", (double)count * (double)n / total);
    if (!only) {
        /* The single-thread target: simple cron, a longer run. */
        secs = run_case(&cases[0], count * 5, start);
        printf("cron_simple_1thread\t%.0f\n", (double)count * 5 / secs);
    }
    return 0;
}
