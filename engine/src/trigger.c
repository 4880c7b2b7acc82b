/*
 * trigger.c: APScheduler's triggers behind aps_trigger_*.
 *
 * cron (cron.c does the search), interval, date, calendar_interval
 * (APScheduler 4 / 3.11), all_of (AndTrigger) and any_of (OrTrigger), each
 * with optional jitter. aps_trigger_next() is get_next_fire_time(previous,
 * now) of APScheduler 3.9.1, with deliberate departures only where 3.9.1
 * is broken: the combining triggers compute "the earliest fire time
 * strictly after the previous one" instead of handing `previous` to their
 * children (AndTrigger loops forever with it, OrTrigger drifts with
 * interval children), as the conformance vectors encode; AndTrigger gives
 * up after APScheduler 4's 10,000 iterations; and a cron trigger never
 * answers a time at or before `previous` when its search started after it
 * (in some DST folds 3.9.1 returns the same time forever, see cron_next()).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "apsd/engine.h"
#include "civil.h"
#include "cron.h"
#include "tz.h"

/* Bounds on combining triggers: children per trigger and nesting depth. */
#define COMBO_MAX_CHILDREN 64
#define COMBO_MAX_DEPTH 8
/* APScheduler 4's AndTrigger.max_iterations. */
#define ALL_OF_MAX_ITERATIONS 10000
/* Dates a calendar_interval search may visit in one call; reached only by
 * an interval mixing months and days searched across millennia. */
#define CALENDAR_MAX_STEPS 2000000L
/* Searches again after a cron search went back before the previous fire
 * time (see cron_next()); each one moves on by at least a second, and a
 * fold lasts an hour or two. */
#define CRON_MAX_RETRIES 20000

#define US_PER_SEC INT64_C(1000000)
#define US_PER_DAY (INT64_C(86400) * US_PER_SEC)

struct aps_trigger {
    aps_trigger_kind kind;
    int64_t jitter_us;
    uint64_t rng;    /* splitmix64 state */
    int rng_seeded;  /* seeded lazily from the OS unless aps_trigger_seed() */
    const aps_tz *tz; /* NULL for the combining triggers */
    union {
        struct {
            aps_cron *expr;
            aps_time start, end;
        } cron;
        struct {
            int64_t step_us;
            double step_s; /* timedelta_seconds(interval), as APScheduler */
            aps_time start, end;
        } interval;
        struct {
            aps_time run_date;
        } date;
        struct {
            int32_t years, months, weeks, days;
            int32_t hour, minute, second;
            int64_t start_day, end_day; /* local dates, days since 1970 */
            int has_end;
        } cal;
        struct {
            aps_trigger **children;
            size_t count;
        } combo;
    } u;
};

static int set_error(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_error(aps_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err) {
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Prefixes err->msg with "all_of[2]: " so nested messages say where. */
static void prefix_error(aps_error *err, const char *kind, size_t index)
{
    char pre[48];
    size_t n, len;

    if (!err)
        return;
    snprintf(pre, sizeof pre, "%s[%zu]: ", kind, index);
    n = strlen(pre);
    len = strnlen(err->msg, sizeof err->msg - 1);
    if (len + n >= sizeof err->msg)
        len = sizeof err->msg - 1 - n; /* the end of the message is cut */
    memmove(err->msg + n, err->msg, len);
    memcpy(err->msg, pre, n);
    err->msg[n + len] = '\0';
}

static aps_time sat_add(aps_time a, int64_t b)
{
    aps_time r;

    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN + 1;
    return r == APS_TIME_NONE ? r + 1 : r;
}

/* ------------------------------------------------------------------ */
/* Jitter                                                              */
/* ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void seed_from_os(aps_trigger *t)
{
    uint64_t seed;

    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        /* No entropy yet (early boot): jitter only needs to differ
         * between jobs, not to be unpredictable. */
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * UINT64_C(1000000007) ^ (uint64_t)ts.tv_nsec ^
               (uint64_t)(uintptr_t)t;
    }
    t->rng = seed;
    t->rng_seeded = 1;
}

/* BaseTrigger._apply_jitter(): adds a uniformly random 0..jitter. Never
 * moves a time earlier, so a fire time stays after the previous one. */
static aps_time apply_jitter(aps_trigger *t, aps_time when)
{
    uint64_t range, limit, x;

    if (when == APS_TIME_NONE || t->jitter_us <= 0)
        return when;
    if (!t->rng_seeded)
        seed_from_os(t);
    range = (uint64_t)t->jitter_us + 1; /* inclusive, at most 2^63 */
    /* Rejection sampling: an unbiased value in [0, range). */
    limit = UINT64_MAX - UINT64_MAX % range;
    do {
        x = splitmix64(&t->rng);
    } while (x >= limit);
    return sat_add(when, (int64_t)(x % range));
}

void aps_trigger_seed(aps_trigger *t, uint64_t seed)
{
    size_t i;

    if (!t)
        return;
    t->rng = seed;
    t->rng_seeded = 1;
    if (t->kind == APS_TRIGGER_ALL_OF || t->kind == APS_TRIGGER_ANY_OF) {
        uint64_t s = seed;

        for (i = 0; i < t->u.combo.count; i++)
            aps_trigger_seed(t->u.combo.children[i], splitmix64(&s));
    }
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */
/* ------------------------------------------------------------------ */

static int resolve_zone(const char *name, const char *default_tz, const aps_tz **out,
                        aps_error *err)
{
    if (!name)
        name = default_tz ? default_tz : "UTC";
    return aps__tz_get(name, out, err);
}

/* The local date (days since 1970) of an instant in a zone. */
static int64_t local_day(const aps_tz *tz, aps_time t)
{
    aps_civil lc;

    aps__tz_to_local(tz, t, &lc, NULL);
    return aps__days_from_civil(lc.year, lc.month, lc.day);
}

static int create_cron(aps_trigger *t, const aps_trigger_spec *spec, const char *default_tz,
                       aps_error *err)
{
    const char *fields[APS_CRON_FIELDS];
    int rc;

    fields[APS_CRON_YEAR] = spec->u.cron.year;
    fields[APS_CRON_MONTH] = spec->u.cron.month;
    fields[APS_CRON_DAY] = spec->u.cron.day;
    fields[APS_CRON_WEEK] = spec->u.cron.week;
    fields[APS_CRON_DAY_OF_WEEK] = spec->u.cron.day_of_week;
    fields[APS_CRON_HOUR] = spec->u.cron.hour;
    fields[APS_CRON_MINUTE] = spec->u.cron.minute;
    fields[APS_CRON_SECOND] = spec->u.cron.second;
    rc = resolve_zone(spec->u.cron.timezone, default_tz, &t->tz, err);
    if (rc)
        return rc;
    rc = aps__cron_compile(fields, spec->u.cron.crontab, &t->u.cron.expr, err);
    if (rc)
        return rc;
    t->u.cron.start = spec->u.cron.start_date;
    t->u.cron.end = spec->u.cron.end_date;
    return 0;
}

static int create_interval(aps_trigger *t, const aps_trigger_spec *spec, const char *default_tz,
                           aps_time now, aps_error *err)
{
    static const int64_t unit[6] = {
        7 * US_PER_DAY, US_PER_DAY, 3600 * US_PER_SEC, 60 * US_PER_SEC, US_PER_SEC, 1,
    };
    static const char *const names[6] = {"weeks", "days", "hours", "minutes", "seconds",
                                         "microseconds"};
    int64_t parts[6], step = 0, prod, secs, days, us;
    int i, rc;

    parts[0] = spec->u.interval.weeks;
    parts[1] = spec->u.interval.days;
    parts[2] = spec->u.interval.hours;
    parts[3] = spec->u.interval.minutes;
    parts[4] = spec->u.interval.seconds;
    parts[5] = spec->u.interval.microseconds;
    for (i = 0; i < 6; i++) {
        if (__builtin_mul_overflow(parts[i], unit[i], &prod) ||
            __builtin_add_overflow(step, prod, &step))
            return set_error(err, APS_EINVAL, "interval: %s: %lld is too large", names[i],
                             (long long)parts[i]);
    }
    /* A negative timedelta is legal in Python but would make the trigger
     * fire backwards in time; nobody wants that from a daemon. */
    if (step < 0)
        return set_error(err, APS_EINVAL, "interval: the interval must not be negative");
    if (step == 0)
        step = US_PER_SEC; /* IntervalTrigger: a zero interval is 1 second */
    rc = resolve_zone(spec->u.interval.timezone, default_tz, &t->tz, err);
    if (rc)
        return rc;
    t->u.interval.step_us = step;
    /* timedelta_seconds(): days * 86400 + seconds + microseconds / 1e6. */
    days = step / US_PER_DAY;
    secs = (step % US_PER_DAY) / US_PER_SEC;
    us = step % US_PER_SEC;
    t->u.interval.step_s = (double)(days * 86400 + secs) + (double)us / 1000000.0;
    /* APScheduler 3: start_date defaults to datetime.now() + interval. */
    t->u.interval.start = spec->u.interval.start_date != APS_TIME_NONE
                              ? spec->u.interval.start_date
                              : sat_add(now, step);
    t->u.interval.end = spec->u.interval.end_date;
    return 0;
}

static int create_calendar(aps_trigger *t, const aps_trigger_spec *spec, const char *default_tz,
                           aps_time now, aps_error *err)
{
    const int32_t *p[4] = {&spec->u.calendar_interval.years, &spec->u.calendar_interval.months,
                           &spec->u.calendar_interval.weeks, &spec->u.calendar_interval.days};
    static const char *const names[4] = {"years", "months", "weeks", "days"};
    static const int32_t maxes[4] = {9999, 9999 * 12, 9999 * 53, 9999 * 366};
    int i, rc, any = 0;

    for (i = 0; i < 4; i++) {
        if (*p[i] < 0 || *p[i] > maxes[i])
            return set_error(err, APS_EINVAL, "calendar_interval: %s: %d is out of range 0-%d",
                             names[i], *p[i], maxes[i]);
        any |= *p[i] != 0;
    }
    if (!any)
        return set_error(err, APS_EINVAL,
                         "calendar_interval: the interval must be at least 1 day long");
    if (spec->u.calendar_interval.hour < 0 || spec->u.calendar_interval.hour > 23)
        return set_error(err, APS_EINVAL, "calendar_interval: hour: %d is out of range 0-23",
                         spec->u.calendar_interval.hour);
    if (spec->u.calendar_interval.minute < 0 || spec->u.calendar_interval.minute > 59)
        return set_error(err, APS_EINVAL, "calendar_interval: minute: %d is out of range 0-59",
                         spec->u.calendar_interval.minute);
    if (spec->u.calendar_interval.second < 0 || spec->u.calendar_interval.second > 59)
        return set_error(err, APS_EINVAL, "calendar_interval: second: %d is out of range 0-59",
                         spec->u.calendar_interval.second);
    rc = resolve_zone(spec->u.calendar_interval.timezone, default_tz, &t->tz, err);
    if (rc)
        return rc;
    t->u.cal.years = spec->u.calendar_interval.years;
    t->u.cal.months = spec->u.calendar_interval.months;
    t->u.cal.weeks = spec->u.calendar_interval.weeks;
    t->u.cal.days = spec->u.calendar_interval.days;
    t->u.cal.hour = spec->u.calendar_interval.hour;
    t->u.cal.minute = spec->u.calendar_interval.minute;
    t->u.cal.second = spec->u.calendar_interval.second;
    /* start_date defaults to today in the zone. */
    t->u.cal.start_day = local_day(t->tz, spec->u.calendar_interval.start_date != APS_TIME_NONE
                                              ? spec->u.calendar_interval.start_date
                                              : now);
    t->u.cal.has_end = spec->u.calendar_interval.end_date != APS_TIME_NONE;
    if (t->u.cal.has_end) {
        t->u.cal.end_day = local_day(t->tz, spec->u.calendar_interval.end_date);
        if (t->u.cal.end_day < t->u.cal.start_day)
            return set_error(err, APS_EINVAL,
                             "calendar_interval: end_date cannot be earlier than start_date");
    }
    return 0;
}

static int create_at(const aps_trigger_spec *spec, const char *default_tz, aps_time now,
                     int depth, aps_trigger **out, aps_error *err);

static int create_combo(aps_trigger *t, const aps_trigger_spec *spec, const char *default_tz,
                        aps_time now, int depth, aps_error *err)
{
    const char *kind = spec->kind == APS_TRIGGER_ALL_OF ? "all_of" : "any_of";
    size_t i, n = spec->u.combo.count;
    int rc;

    if (n == 0 || !spec->u.combo.triggers)
        return set_error(err, APS_EINVAL, "%s: triggers: must not be empty", kind);
    if (n > COMBO_MAX_CHILDREN)
        return set_error(err, APS_EINVAL, "%s: triggers: %zu given, at most %d allowed", kind, n,
                         COMBO_MAX_CHILDREN);
    if (depth >= COMBO_MAX_DEPTH)
        return set_error(err, APS_EINVAL, "%s: nested more than %d levels deep", kind,
                         COMBO_MAX_DEPTH);
    t->u.combo.children = calloc(n, sizeof *t->u.combo.children);
    if (!t->u.combo.children)
        return set_error(err, APS_ENOMEM, "out of memory");
    t->u.combo.count = n;
    for (i = 0; i < n; i++) {
        rc = create_at(&spec->u.combo.triggers[i], default_tz, now, depth + 1,
                       &t->u.combo.children[i], err);
        if (rc) {
            prefix_error(err, kind, i);
            return rc;
        }
    }
    return 0;
}

static int create_at(const aps_trigger_spec *spec, const char *default_tz, aps_time now,
                     int depth, aps_trigger **out, aps_error *err)
{
    aps_trigger *t;
    int rc;

    *out = NULL;
    if (!spec)
        return set_error(err, APS_EINVAL, "trigger: missing");
    if (spec->jitter_us < 0)
        return set_error(err, APS_EINVAL, "jitter: must not be negative");
    t = calloc(1, sizeof *t);
    if (!t)
        return set_error(err, APS_ENOMEM, "out of memory");
    t->kind = spec->kind;
    t->jitter_us = spec->jitter_us;
    switch (spec->kind) {
    case APS_TRIGGER_CRON:
        rc = create_cron(t, spec, default_tz, err);
        break;
    case APS_TRIGGER_INTERVAL:
        rc = create_interval(t, spec, default_tz, now, err);
        break;
    case APS_TRIGGER_DATE:
        rc = resolve_zone(spec->u.date.timezone, default_tz, &t->tz, err);
        /* DateTrigger: no run_date means now. */
        t->u.date.run_date =
            spec->u.date.run_date != APS_TIME_NONE ? spec->u.date.run_date : now;
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        rc = create_calendar(t, spec, default_tz, now, err);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        rc = create_combo(t, spec, default_tz, now, depth, err);
        break;
    default:
        rc = set_error(err, APS_EINVAL, "trigger: unknown kind %d", (int)spec->kind);
        t->kind = 0;
        break;
    }
    if (rc)
        goto fail;
    *out = t;
    return 0;

fail:
    aps_trigger_destroy(t);
    return rc;
}

int aps_trigger_create(const aps_trigger_spec *spec, const char *default_tz, aps_time now,
                       aps_trigger **out, aps_error *err)
{
    if (!out)
        return set_error(err, APS_EINVAL, "trigger: no output");
    return create_at(spec, default_tz, now, 0, out, err);
}

void aps_trigger_destroy(aps_trigger *t)
{
    size_t i;

    if (!t)
        return;
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        aps__cron_free(t->u.cron.expr);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (t->u.combo.children)
            for (i = 0; i < t->u.combo.count; i++)
                aps_trigger_destroy(t->u.combo.children[i]);
        free(t->u.combo.children);
        break;
    default:
        break;
    }
    free(t);
}

/* ------------------------------------------------------------------ */
/* Next fire time                                                      */
/* ------------------------------------------------------------------ */

/* The later instant showing the same wall-clock time as `t` (t itself
 * unless that time is in a fold). */
static aps_time later_twin(const aps_tz *tz, aps_time t)
{
    aps_time cand[2];
    aps_civil lc;
    int isdst[2], n;

    aps__tz_to_local(tz, t, &lc, NULL);
    if (aps__tz_local_candidates(tz, &lc, cand, isdst, &n) == 0 && n == 2 && cand[1] > t)
        return cand[1];
    return t;
}

static int cron_next(aps_trigger *t, aps_time prev, aps_time now, aps_time *out)
{
    aps_time start, r;
    int rc, retry;

    if (prev != APS_TIME_NONE) {
        /* start_date = min(now, previous + 1 µs), and never previous. */
        start = sat_add(prev, 1);
        if (now < start)
            start = now;
        if (start == prev)
            start = sat_add(start, 1);
    } else {
        start = now;
        if (t->u.cron.start != APS_TIME_NONE && t->u.cron.start > start)
            start = t->u.cron.start;
    }
    rc = aps__cron_next(t->u.cron.expr, t->tz, start, t->u.cron.end, &r);
    /* APScheduler's search can go back in time: in a fold, localize(
     * is_dst=False) may take the earlier instant of a wall time the search
     * reached in the later one (Europe/Dublin, whose winter time is the
     * one flagged DST), and 3.9.1 then returns that fire time forever. A
     * search that started after `prev` must end after it: search again
     * from the later instant of the wall time found, which only passes
     * over wall times APScheduler can never return. */
    for (retry = 0; rc == 0 && r != APS_TIME_NONE && prev != APS_TIME_NONE && start > prev &&
                    r <= prev;
         retry++) {
        aps_time from = later_twin(t->tz, r);

        if (retry == CRON_MAX_RETRIES)
            return APS_EINVAL;
        start = from >= start ? sat_add(from, 1) : sat_add(start, US_PER_SEC);
        rc = aps__cron_next(t->u.cron.expr, t->tz, start, t->u.cron.end, &r);
    }
    if (rc)
        return APS_EINVAL;
    r = apply_jitter(t, r);
    if (r != APS_TIME_NONE && t->u.cron.end != APS_TIME_NONE && r > t->u.cron.end)
        r = t->u.cron.end;
    *out = r;
    return 0;
}

static int interval_next(aps_trigger *t, aps_time prev, aps_time now, aps_time *out)
{
    int64_t step = t->u.interval.step_us, n, mul;
    aps_time start = t->u.interval.start, r;
    double diff_s;

    *out = APS_TIME_NONE;
    if (prev != APS_TIME_NONE) {
        if (__builtin_add_overflow(prev, step, &r))
            return 0;
    } else if (start > now) {
        r = start;
    } else {
        /* ceil(timedelta_seconds(now - start) / interval_length), in
         * doubles exactly as Python computes it. */
        int64_t d;

        if (__builtin_sub_overflow(now, start, &d))
            return 0;
        diff_s = (double)(d / US_PER_SEC) + (double)(d % US_PER_SEC) / 1000000.0;
        {
            double q = diff_s / t->u.interval.step_s;
            double c = (double)(int64_t)q;

            if (c < q)
                c += 1.0;
            if (c > 9.2e18)
                return 0;
            n = (int64_t)c;
        }
        if (__builtin_mul_overflow(step, n, &mul) || __builtin_add_overflow(start, mul, &r))
            return 0;
    }
    r = apply_jitter(t, r);
    if (t->u.interval.end != APS_TIME_NONE && r > t->u.interval.end)
        return 0;
    *out = r;
    return 0;
}

/* The calendar_interval date after `prev_day`: years and months added
 * keeping the day of the month (repeated while the date does not exist),
 * then weeks and days. Returns 0, or -1 past year 9999. */
static int cal_advance(const aps_trigger *t, int64_t prev_day, int64_t *out)
{
    int64_t y, m;
    int pm, pd, i;

    aps__civil_from_days(prev_day, &y, &pm, &pd);
    m = pm;
    /* A valid date comes back within 12 steps of the month cycle, or 8
     * leap cycles for February 29th; the bound only guards the loop. */
    for (i = 0; i < 12 * 400; i++) {
        m += t->u.cal.months;
        y += t->u.cal.years + (m - 1) / 12;
        m = (m - 1) % 12 + 1;
        if (y > 9999)
            return -1;
        if (pd <= aps__days_in_month(y, (int)m)) {
            *out = aps__days_from_civil(y, (int)m, pd) + t->u.cal.days +
                   (int64_t)t->u.cal.weeks * 7;
            return 0;
        }
    }
    return -1;
}

/* Where a search without a previous fire time can start: jumps over the
 * dates before `now` when the sequence is a plain progression (only days
 * and weeks, or only years and months). Exact unless a skipped date was
 * pushed to the next day by a DST gap spanning midnight, which no zone has
 * had at an hour a user would pick. */
static int64_t cal_first_day(const aps_trigger *t, aps_time now)
{
    int64_t start = t->u.cal.start_day, today = local_day(t->tz, now) - 1, k;
    int64_t sy, ny, mi0, mi, step;
    int sm, sd, nm, nd;

    if (today <= start)
        return start;
    if (t->u.cal.years == 0 && t->u.cal.months == 0) {
        step = (int64_t)t->u.cal.weeks * 7 + t->u.cal.days;
        return start + (today - start) / step * step;
    }
    if (t->u.cal.weeks == 0 && t->u.cal.days == 0) {
        aps__civil_from_days(start, &sy, &sm, &sd);
        aps__civil_from_days(today, &ny, &nm, &nd);
        step = (int64_t)t->u.cal.years * 12 + t->u.cal.months;
        mi0 = sy * 12 + sm - 1;
        k = (ny * 12 + nm - 1 - 1 - mi0) / step;
        for (; k > 0; k--) {
            /* The last valid date at or before the target month. */
            mi = mi0 + k * step;
            if (mi / 12 > 9999)
                continue;
            if (sd <= aps__days_in_month(mi / 12, (int)(mi % 12) + 1))
                return aps__days_from_civil(mi / 12, (int)(mi % 12) + 1, sd);
        }
    }
    return start;
}

/* CalendarIntervalTrigger (APScheduler 4 and 3.11): without a previous fire
 * time, the first fire time >= now of the sequence from start_date; with
 * one, the next date of the sequence after it (even if in the past). A
 * wall time in a DST gap skips its date; an ambiguous one takes the earlier
 * instant. */
static int calendar_next(aps_trigger *t, aps_time prev, aps_time now, aps_time *out)
{
    int64_t prev_day = 0, next_day;
    int have_prev = 0, n, isdst[2];
    aps_time cand[2];
    aps_civil lc;
    long steps;

    *out = APS_TIME_NONE;
    if (prev != APS_TIME_NONE) {
        prev_day = local_day(t->tz, prev);
        have_prev = 1;
    } else {
        next_day = cal_first_day(t, now);
        if (next_day != t->u.cal.start_day) {
            /* Continue the sequence as if next_day had been visited. */
            prev_day = next_day;
            have_prev = -1;
        }
    }
    for (steps = 0; steps < CALENDAR_MAX_STEPS; steps++) {
        if (have_prev > 0) {
            if (cal_advance(t, prev_day, &next_day))
                return 0;
        } else if (have_prev < 0) {
            next_day = prev_day;
            have_prev = 1;
        } else {
            next_day = t->u.cal.start_day;
            have_prev = 1;
        }
        if (t->u.cal.has_end && next_day > t->u.cal.end_day)
            return 0;
        memset(&lc, 0, sizeof lc);
        {
            int64_t y;

            aps__civil_from_days(next_day, &y, &lc.month, &lc.day);
            if (y > 9999)
                return 0;
            lc.year = (int)y;
        }
        lc.hour = t->u.cal.hour;
        lc.minute = t->u.cal.minute;
        lc.second = t->u.cal.second;
        if (aps__tz_local_candidates(t->tz, &lc, cand, isdst, &n))
            return 0;
        if (n == 0) {
            /* A gap: the date is skipped, and the sequence continues from
             * the date the normalized time falls on. */
            aps_time g;

            if (aps__tz_from_local(t->tz, &lc, &g, NULL))
                return 0;
            prev_day = local_day(t->tz, g);
            continue;
        }
        if (prev == APS_TIME_NONE && cand[0] < now) {
            prev_day = next_day;
            continue;
        }
        *out = apply_jitter(t, cand[0]);
        return 0;
    }
    return APS_EINVAL;
}

static int next_at(aps_trigger *t, aps_time prev, aps_time now, aps_time *out);

/* The combining triggers: every child is asked for its first fire time
 * from `now` (bumped past `prev`), never handed `prev` itself. */
static int combo_next(aps_trigger *t, aps_time prev, aps_time now, aps_time *out)
{
    aps_time n = now, lo, hi, r;
    size_t i;
    int rc, iter;

    *out = APS_TIME_NONE;
    if (prev != APS_TIME_NONE && prev != INT64_MAX && prev + 1 > n)
        n = prev + 1;
    for (iter = 0; iter < ALL_OF_MAX_ITERATIONS; iter++) {
        lo = hi = APS_TIME_NONE;
        for (i = 0; i < t->u.combo.count; i++) {
            rc = next_at(t->u.combo.children[i], APS_TIME_NONE, n, &r);
            if (rc)
                return rc;
            /* A date child keeps answering its run date; once that is
             * behind the previous fire time it has no further fire time. */
            if (r != APS_TIME_NONE && prev != APS_TIME_NONE && r <= prev)
                r = APS_TIME_NONE;
            if (r == APS_TIME_NONE) {
                if (t->kind == APS_TRIGGER_ALL_OF)
                    return 0;
                continue;
            }
            if (lo == APS_TIME_NONE || r < lo)
                lo = r;
            if (hi == APS_TIME_NONE || r > hi)
                hi = r;
        }
        if (t->kind == APS_TRIGGER_ANY_OF || lo == hi) {
            *out = apply_jitter(t, lo);
            return 0;
        }
        /* AndTrigger: retry from the latest child's fire time. */
        n = hi;
    }
    return APS_EINVAL;
}

static int next_at(aps_trigger *t, aps_time prev, aps_time now, aps_time *out)
{
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        return cron_next(t, prev, now, out);
    case APS_TRIGGER_INTERVAL:
        return interval_next(t, prev, now, out);
    case APS_TRIGGER_DATE:
        *out = prev == APS_TIME_NONE ? apply_jitter(t, t->u.date.run_date) : APS_TIME_NONE;
        return 0;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        return calendar_next(t, prev, now, out);
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        return combo_next(t, prev, now, out);
    default:
        *out = APS_TIME_NONE;
        return APS_EINVAL;
    }
}

int aps_trigger_next(aps_trigger *t, aps_time previous, aps_time now, aps_time *next)
{
    aps_time r = APS_TIME_NONE;
    int rc;

    if (!t || !next)
        return APS_EINVAL;
    rc = next_at(t, previous, now, &r);
    if (rc)
        return rc;
    *next = r;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Description                                                         */
/* ------------------------------------------------------------------ */

/* str(timedelta): "0:00:03", "1 day, 2:00:00", "0:00:00.500000". */
static void describe_timedelta(aps__sbuf *b, int64_t us)
{
    int64_t days = aps__floor_div(us, US_PER_DAY, &us), secs = us / US_PER_SEC;

    us %= US_PER_SEC;
    if (days)
        aps__sb_printf(b, "%lld day%s, ", (long long)days, days == 1 || days == -1 ? "" : "s");
    aps__sb_printf(b, "%lld:%02lld:%02lld", (long long)(secs / 3600), (long long)(secs / 60 % 60),
              (long long)(secs % 60));
    if (us)
        aps__sb_printf(b, ".%06lld", (long long)us);
}

static void describe_at(const aps_trigger *t, aps__sbuf *b)
{
    size_t i;

    switch (t->kind) {
    case APS_TRIGGER_CRON: {
        size_t room;

        aps__sb_printf(b, "cron[");
        room = b->pos < b->len ? b->len - b->pos : 0;
        if (aps__cron_describe(t->u.cron.expr, room ? b->buf + b->pos : NULL, room) ||
            !room) {
            /* Measure what did not fit, to keep pos meaningful. */
            b->overflow = 1;
            b->pos = b->len;
        } else {
            b->pos += strlen(b->buf + b->pos);
        }
        aps__sb_printf(b, "]");
        return;
    }
    case APS_TRIGGER_INTERVAL:
        aps__sb_printf(b, "interval[");
        describe_timedelta(b, t->u.interval.step_us);
        aps__sb_printf(b, "]");
        return;
    case APS_TRIGGER_DATE: {
        /* datetime_repr(): '%Y-%m-%d %H:%M:%S %Z'. */
        aps_civil lc;
        const char *abbr = NULL;

        aps__tz_to_local(t->tz, t->u.date.run_date, &lc, NULL);
        aps__tz_lookup(t->tz, t->u.date.run_date, NULL, NULL, &abbr);
        aps__sb_printf(b, "date[%04d-%02d-%02d %02d:%02d:%02d %s]", lc.year, lc.month, lc.day,
                  lc.hour, lc.minute, lc.second, abbr ? abbr : "");
        return;
    }
    case APS_TRIGGER_CALENDAR_INTERVAL:
        aps__sb_printf(b, "calendar_interval[");
        if (t->u.cal.years)
            aps__sb_printf(b, "years=%d, ", t->u.cal.years);
        if (t->u.cal.months)
            aps__sb_printf(b, "months=%d, ", t->u.cal.months);
        if (t->u.cal.weeks)
            aps__sb_printf(b, "weeks=%d, ", t->u.cal.weeks);
        if (t->u.cal.days)
            aps__sb_printf(b, "days=%d, ", t->u.cal.days);
        aps__sb_printf(b, "time='%02d:%02d:%02d']", t->u.cal.hour, t->u.cal.minute, t->u.cal.second);
        return;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        aps__sb_printf(b, "%s[", t->kind == APS_TRIGGER_ALL_OF ? "and" : "or");
        for (i = 0; i < t->u.combo.count; i++) {
            if (i)
                aps__sb_printf(b, ", ");
            describe_at(t->u.combo.children[i], b);
        }
        aps__sb_printf(b, "]");
        return;
    default:
        return;
    }
}

int aps_trigger_describe(const aps_trigger *t, char *buf, size_t len)
{
    aps__sbuf b = {buf, len, 0, 0};

    if (!t || (!buf && len))
        return APS_EINVAL;
    if (len)
        buf[0] = '\0';
    describe_at(t, &b);
    if (len && b.pos >= len)
        buf[len - 1] = '\0';
    return b.overflow ? APS_ERANGE : 0;
}
