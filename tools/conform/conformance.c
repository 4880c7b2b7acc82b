/*
 * conformance.c: runs trigger conformance vectors against the engine.
 *
 * Each vector's JSON trigger is turned into an aps_trigger_spec (strings
 * borrowed from the parsed JSON, numbers converted into a per-vector pool),
 * then the fire times are computed as the README defines them and compared
 * as instants. Nothing here knows about particular vectors.
 */
#include "conformance.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Trigger nesting accepted in a vector (the engine has its own bound). */
#define MAX_DEPTH 16

/* Allocations of one vector, freed together. */
typedef struct pool_block {
    struct pool_block *next;
    max_align_t align[];
} pool_block;

typedef struct pool {
    pool_block *head;
} pool;

static void *pool_alloc(pool *p, size_t n)
{
    pool_block *b = calloc(1, sizeof *b + n);

    if (!b)
        return NULL;
    b->next = p->head;
    p->head = b;
    return b->align;
}

static void pool_free(pool *p)
{
    while (p->head) {
        pool_block *b = p->head;

        p->head = b->next;
        free(b);
    }
}

/* A message about a malformed vector, kept for the report. */
typedef struct problem {
    char msg[512];
    int nomem;
} problem;

static int bad(problem *pr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(problem *pr, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(pr->msg, sizeof pr->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int nomem(problem *pr)
{
    pr->nomem = 1;
    return bad(pr, "out of memory");
}

/* Proto JSON accepts a field's lowerCamelCase name as well as its proto
 * name: "dayOfWeek" -> "day_of_week". */
static void snake_case(const char *key, char *out, size_t len)
{
    size_t o = 0;

    for (; *key && o + 2 < len; key++) {
        if (*key >= 'A' && *key <= 'Z') {
            out[o++] = '_';
            out[o++] = (char)(*key - 'A' + 'a');
        } else {
            out[o++] = *key;
        }
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

static int get_string(const char *key, json_t *v, pool *p, const char **out, problem *pr)
{
    char tmp[32], *s;

    if (json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return 0;
    }
    if (json_is_integer(v)) {
        /* APScheduler takes ints for cron fields too. */
        snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
        s = pool_alloc(p, strlen(tmp) + 1);
        if (!s)
            return nomem(pr);
        strcpy(s, tmp);
        *out = s;
        return 0;
    }
    return bad(pr, "%s: expected a string", key);
}

/* int64 JSON values: numbers, or decimal strings (proto JSON's int64). */
static int get_int64(const char *key, json_t *v, int64_t *out, problem *pr)
{
    if (json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);

        if (d == floor(d) && fabs(d) < 9.2e18) {
            *out = (int64_t)d;
            return 0;
        }
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        long long x;

        errno = 0;
        x = strtoll(s, &end, 10);
        if (*s && !*end && errno == 0) {
            *out = x;
            return 0;
        }
    }
    return bad(pr, "%s: expected an integer", key);
}

static int get_int32(const char *key, json_t *v, int32_t *out, problem *pr)
{
    int64_t x;

    if (get_int64(key, v, &x, pr))
        return -1;
    if (x < INT32_MIN || x > INT32_MAX)
        return bad(pr, "%s: %lld is out of range", key, (long long)x);
    *out = (int32_t)x;
    return 0;
}

static int get_time(const char *key, json_t *v, aps_time *out, problem *pr)
{
    aps_error err;

    if (json_is_null(v)) {
        *out = APS_TIME_NONE;
        return 0;
    }
    if (!json_is_string(v))
        return bad(pr, "%s: expected an RFC 3339 timestamp string", key);
    if (aps_time_parse(json_string_value(v), out, &err))
        return bad(pr, "%s: %s", key, err.msg);
    return 0;
}

/* Jitter: seconds as a JSON number (APScheduler's jitter=), a proto JSON
 * Duration string ("1.5s"), or {"seconds": n, "nanos": n}. */
static int get_jitter(json_t *v, int64_t *out, problem *pr)
{
    if (json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (json_is_number(v)) {
        double s = json_number_value(v);

        if (!(s >= 0 && s < 9.2e12))
            return bad(pr, "jitter: %g is out of range", s);
        *out = llround(s * 1e6);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        double x;

        errno = 0;
        x = strtod(s, &end);
        if (end != s && strcmp(end, "s") == 0 && errno == 0 && x >= 0 && x < 9.2e12) {
            *out = llround(x * 1e6);
            return 0;
        }
        return bad(pr, "jitter: \"%s\" is not a duration like \"1.5s\"", s);
    }
    if (json_is_object(v)) {
        int64_t secs = 0, nanos = 0;

        if (get_int64("jitter.seconds", json_object_get(v, "seconds"), &secs, pr) ||
            get_int64("jitter.nanos", json_object_get(v, "nanos"), &nanos, pr))
            return -1;
        if (secs < 0 || secs > INT64_C(9200000000000) || nanos < 0 || nanos > 999999999)
            return bad(pr, "jitter: out of range");
        *out = secs * 1000000 + nanos / 1000;
        return 0;
    }
    return bad(pr, "jitter: expected seconds or a duration");
}

/* ------------------------------------------------------------------ */
/* Triggers                                                            */
/* ------------------------------------------------------------------ */

static int build_spec(json_t *trigger, aps_trigger_spec *spec, pool *p, int depth, problem *pr);

static int build_cron(json_t *o, aps_trigger_spec *spec, pool *p, problem *pr)
{
    const char *key;
    json_t *v;
    char k[64];
    int rc = 0;

    spec->kind = APS_TRIGGER_CRON;
    spec->u.cron.start_date = APS_TIME_NONE;
    spec->u.cron.end_date = APS_TIME_NONE;
    json_object_foreach(o, key, v) {
        snake_case(key, k, sizeof k);
        if (!strcmp(k, "year"))
            rc = get_string(k, v, p, &spec->u.cron.year, pr);
        else if (!strcmp(k, "month"))
            rc = get_string(k, v, p, &spec->u.cron.month, pr);
        else if (!strcmp(k, "day"))
            rc = get_string(k, v, p, &spec->u.cron.day, pr);
        else if (!strcmp(k, "week"))
            rc = get_string(k, v, p, &spec->u.cron.week, pr);
        else if (!strcmp(k, "day_of_week"))
            rc = get_string(k, v, p, &spec->u.cron.day_of_week, pr);
        else if (!strcmp(k, "hour"))
            rc = get_string(k, v, p, &spec->u.cron.hour, pr);
        else if (!strcmp(k, "minute"))
            rc = get_string(k, v, p, &spec->u.cron.minute, pr);
        else if (!strcmp(k, "second"))
            rc = get_string(k, v, p, &spec->u.cron.second, pr);
        else if (!strcmp(k, "crontab"))
            rc = get_string(k, v, p, &spec->u.cron.crontab, pr);
        else if (!strcmp(k, "start_date"))
            rc = get_time(k, v, &spec->u.cron.start_date, pr);
        else if (!strcmp(k, "end_date"))
            rc = get_time(k, v, &spec->u.cron.end_date, pr);
        else if (!strcmp(k, "timezone"))
            rc = get_string(k, v, p, &spec->u.cron.timezone, pr);
        else if (!strcmp(k, "jitter"))
            rc = get_jitter(v, &spec->jitter_us, pr);
        else
            rc = bad(pr, "cron: unknown key \"%s\"", key);
        if (rc)
            return rc;
    }
    return 0;
}

static int build_interval(json_t *o, aps_trigger_spec *spec, pool *p, problem *pr)
{
    const char *key;
    json_t *v;
    char k[64];
    int rc = 0;

    spec->kind = APS_TRIGGER_INTERVAL;
    spec->u.interval.start_date = APS_TIME_NONE;
    spec->u.interval.end_date = APS_TIME_NONE;
    json_object_foreach(o, key, v) {
        snake_case(key, k, sizeof k);
        if (!strcmp(k, "weeks"))
            rc = get_int64(k, v, &spec->u.interval.weeks, pr);
        else if (!strcmp(k, "days"))
            rc = get_int64(k, v, &spec->u.interval.days, pr);
        else if (!strcmp(k, "hours"))
            rc = get_int64(k, v, &spec->u.interval.hours, pr);
        else if (!strcmp(k, "minutes"))
            rc = get_int64(k, v, &spec->u.interval.minutes, pr);
        else if (!strcmp(k, "seconds"))
            rc = get_int64(k, v, &spec->u.interval.seconds, pr);
        else if (!strcmp(k, "microseconds"))
            rc = get_int64(k, v, &spec->u.interval.microseconds, pr);
        else if (!strcmp(k, "start_date"))
            rc = get_time(k, v, &spec->u.interval.start_date, pr);
        else if (!strcmp(k, "end_date"))
            rc = get_time(k, v, &spec->u.interval.end_date, pr);
        else if (!strcmp(k, "timezone"))
            rc = get_string(k, v, p, &spec->u.interval.timezone, pr);
        else if (!strcmp(k, "jitter"))
            rc = get_jitter(v, &spec->jitter_us, pr);
        else
            rc = bad(pr, "interval: unknown key \"%s\"", key);
        if (rc)
            return rc;
    }
    return 0;
}

static int build_date(json_t *o, aps_trigger_spec *spec, pool *p, problem *pr)
{
    const char *key;
    json_t *v;
    char k[64];
    int rc = 0;

    spec->kind = APS_TRIGGER_DATE;
    spec->u.date.run_date = APS_TIME_NONE;
    json_object_foreach(o, key, v) {
        snake_case(key, k, sizeof k);
        if (!strcmp(k, "run_date"))
            rc = get_time(k, v, &spec->u.date.run_date, pr);
        else if (!strcmp(k, "timezone"))
            rc = get_string(k, v, p, &spec->u.date.timezone, pr);
        else if (!strcmp(k, "jitter"))
            rc = get_jitter(v, &spec->jitter_us, pr);
        else
            rc = bad(pr, "date: unknown key \"%s\"", key);
        if (rc)
            return rc;
    }
    return 0;
}

static int build_calendar(json_t *o, aps_trigger_spec *spec, pool *p, problem *pr)
{
    const char *key;
    json_t *v;
    char k[64];
    int rc = 0;

    spec->kind = APS_TRIGGER_CALENDAR_INTERVAL;
    spec->u.calendar_interval.start_date = APS_TIME_NONE;
    spec->u.calendar_interval.end_date = APS_TIME_NONE;
    json_object_foreach(o, key, v) {
        snake_case(key, k, sizeof k);
        if (!strcmp(k, "years"))
            rc = get_int32(k, v, &spec->u.calendar_interval.years, pr);
        else if (!strcmp(k, "months"))
            rc = get_int32(k, v, &spec->u.calendar_interval.months, pr);
        else if (!strcmp(k, "weeks"))
            rc = get_int32(k, v, &spec->u.calendar_interval.weeks, pr);
        else if (!strcmp(k, "days"))
            rc = get_int32(k, v, &spec->u.calendar_interval.days, pr);
        else if (!strcmp(k, "hour"))
            rc = get_int32(k, v, &spec->u.calendar_interval.hour, pr);
        else if (!strcmp(k, "minute"))
            rc = get_int32(k, v, &spec->u.calendar_interval.minute, pr);
        else if (!strcmp(k, "second"))
            rc = get_int32(k, v, &spec->u.calendar_interval.second, pr);
        else if (!strcmp(k, "start_date"))
            rc = get_time(k, v, &spec->u.calendar_interval.start_date, pr);
        else if (!strcmp(k, "end_date"))
            rc = get_time(k, v, &spec->u.calendar_interval.end_date, pr);
        else if (!strcmp(k, "timezone"))
            rc = get_string(k, v, p, &spec->u.calendar_interval.timezone, pr);
        else if (!strcmp(k, "jitter"))
            rc = get_jitter(v, &spec->jitter_us, pr);
        else
            rc = bad(pr, "calendar_interval: unknown key \"%s\"", key);
        if (rc)
            return rc;
    }
    return 0;
}

static int build_combo(json_t *o, aps_trigger_spec *spec, aps_trigger_kind kind, pool *p,
                       int depth, problem *pr)
{
    const char *name = kind == APS_TRIGGER_ALL_OF ? "all_of" : "any_of";
    json_t *list = NULL, *v;
    const char *key;
    aps_trigger_spec *children;
    char k[64];
    size_t i, n;

    spec->kind = kind;
    if (json_is_array(o)) {
        list = o;
    } else {
        json_object_foreach(o, key, v) {
            snake_case(key, k, sizeof k);
            if (!strcmp(k, "triggers"))
                list = v;
            else if (!strcmp(k, "jitter")) {
                if (get_jitter(v, &spec->jitter_us, pr))
                    return -1;
            } else
                return bad(pr, "%s: unknown key \"%s\"", name, key);
        }
    }
    if (!json_is_array(list))
        return bad(pr, "%s: triggers: expected a list", name);
    n = json_array_size(list);
    children = pool_alloc(p, (n ? n : 1) * sizeof *children);
    if (!children)
        return nomem(pr);
    for (i = 0; i < n; i++)
        if (build_spec(json_array_get(list, i), &children[i], p, depth + 1, pr))
            return -1;
    spec->u.combo.triggers = children;
    spec->u.combo.count = n;
    return 0;
}

/* One Trigger message: exactly one kind key, plus an optional jitter. */
static int build_spec(json_t *trigger, aps_trigger_spec *spec, pool *p, int depth, problem *pr)
{
    json_t *kind_obj = NULL, *jitter = NULL, *v;
    const char *key, *kind_key = NULL;
    char k[64];
    int rc;

    memset(spec, 0, sizeof *spec);
    if (depth > MAX_DEPTH)
        return bad(pr, "trigger: nested too deeply");
    if (!json_is_object(trigger))
        return bad(pr, "trigger: expected an object");
    json_object_foreach(trigger, key, v) {
        snake_case(key, k, sizeof k);
        if (!strcmp(k, "jitter")) {
            jitter = v;
            continue;
        }
        if (kind_obj)
            return bad(pr, "trigger: more than one kind (\"%s\" and \"%s\")", kind_key, key);
        kind_obj = v;
        kind_key = key;
    }
    if (!kind_obj)
        return bad(pr, "trigger: no kind (cron, interval, date, calendar_interval, all_of, "
                       "any_of)");
    snake_case(kind_key, k, sizeof k);
    if (!json_is_object(kind_obj) && strcmp(k, "all_of") && strcmp(k, "any_of"))
        return bad(pr, "%s: expected an object", kind_key);
    if (!strcmp(k, "cron"))
        rc = build_cron(kind_obj, spec, p, pr);
    else if (!strcmp(k, "interval"))
        rc = build_interval(kind_obj, spec, p, pr);
    else if (!strcmp(k, "date"))
        rc = build_date(kind_obj, spec, p, pr);
    else if (!strcmp(k, "calendar_interval"))
        rc = build_calendar(kind_obj, spec, p, pr);
    else if (!strcmp(k, "all_of"))
        rc = build_combo(kind_obj, spec, APS_TRIGGER_ALL_OF, p, depth, pr);
    else if (!strcmp(k, "any_of"))
        rc = build_combo(kind_obj, spec, APS_TRIGGER_ANY_OF, p, depth, pr);
    else
        rc = bad(pr, "trigger: unknown kind \"%s\"", kind_key);
    if (rc)
        return rc;
    if (jitter && get_jitter(jitter, &spec->jitter_us, pr))
        return -1;
    return 0;
}

/* The zone a trigger's times are shown in: its own, or its first child's. */
static const char *display_zone(const aps_trigger_spec *spec)
{
    const char *tz = NULL;

    switch (spec->kind) {
    case APS_TRIGGER_CRON:
        tz = spec->u.cron.timezone;
        break;
    case APS_TRIGGER_INTERVAL:
        tz = spec->u.interval.timezone;
        break;
    case APS_TRIGGER_DATE:
        tz = spec->u.date.timezone;
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        tz = spec->u.calendar_interval.timezone;
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (spec->u.combo.count)
            tz = display_zone(&spec->u.combo.triggers[0]);
        break;
    }
    return tz ? tz : "UTC";
}

/* ------------------------------------------------------------------ */
/* Running a vector                                                    */
/* ------------------------------------------------------------------ */

static void fmt_time(aps_time t, const char *tz, char *buf, size_t len)
{
    if (t == APS_TIME_NONE)
        snprintf(buf, len, "none");
    else if (aps_time_format(t, tz, buf, len) && aps_time_format(t, NULL, buf, len))
        snprintf(buf, len, "%lld us", (long long)t);
}

static void print_list(FILE *out, const char *label, const aps_time *v, size_t n, int none_after,
                       const char *tz)
{
    char buf[64];
    size_t i;

    fprintf(out, "  %s [", label);
    for (i = 0; i < n; i++) {
        fmt_time(v[i], tz, buf, sizeof buf);
        fprintf(out, "%s%s", i ? ", " : "", buf);
    }
    if (none_after)
        fprintf(out, "%snone", n ? ", " : "");
    fprintf(out, "]\n");
}

/* The UTC offset, in minutes, an RFC 3339 text ends with ("Z" = 0);
 * returns 0 when there is none. */
static int text_offset(const char *s, int *minutes)
{
    size_t n = strlen(s);
    const char *o;

    if (n && (s[n - 1] == 'Z' || s[n - 1] == 'z')) {
        *minutes = 0;
        return 1;
    }
    if (n < 6)
        return 0;
    o = s + n - 6;
    if ((o[0] != '+' && o[0] != '-') || o[3] != ':')
        return 0;
    *minutes = ((o[1] - '0') * 10 + (o[2] - '0')) * 60 + (o[4] - '0') * 10 + (o[5] - '0');
    if (o[0] == '-')
        *minutes = -*minutes;
    return 1;
}

/* Whether an expected time shows a UTC offset that this machine's tzdata
 * does not have at that instant in `tz`. */
static int offset_differs(json_t *expected, aps_time t, const char *tz)
{
    char buf[64];
    int want, have;

    if (!json_is_string(expected) || !text_offset(json_string_value(expected), &want))
        return 0;
    if (aps_time_format(t, tz, buf, sizeof buf) || !text_offset(buf, &have))
        return 0;
    return want != have;
}

int aps_conform_run_vector(const char *line, size_t len, FILE *report,
                           aps_conform_outcome *outcome)
{
    json_t *root = NULL, *v, *expect;
    json_error_t jerr;
    const char *id = "?";
    aps_trigger_spec spec;
    aps_trigger *trig = NULL;
    aps_time now, want[APS_CONFORM_MAX_EXPECT], got[APS_CONFORM_MAX_EXPECT + 1];
    size_t nwant = 0, ngot = 0, i, limit;
    int want_error = 0, rc = 0, ok = 0, tzdata = 0;
    problem pr;
    aps_error err;
    pool p = {NULL};
    const char *tz;
    char buf[64];

    *outcome = APS_CONFORM_FAIL;
    memset(&pr, 0, sizeof pr);
    root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        bad(&pr, "invalid JSON: %s (column %d)", jerr.text, jerr.column);
        goto report_problem;
    }
    if (!json_is_object(root)) {
        bad(&pr, "a vector must be a JSON object");
        goto report_problem;
    }
    v = json_object_get(root, "id");
    if (json_is_string(v))
        id = json_string_value(v);
    if (build_spec(json_object_get(root, "trigger"), &spec, &p, 0, &pr))
        goto report_problem;
    if (get_time("now", json_object_get(root, "now"), &now, &pr))
        goto report_problem;
    if (now == APS_TIME_NONE) {
        bad(&pr, "now: missing");
        goto report_problem;
    }
    v = json_object_get(root, "error");
    want_error = json_is_true(v);
    expect = json_object_get(root, "expect");
    if (want_error && expect) {
        bad(&pr, "both \"error\" and \"expect\" given");
        goto report_problem;
    }
    if (!want_error) {
        if (!json_is_array(expect) || json_array_size(expect) > APS_CONFORM_MAX_EXPECT) {
            bad(&pr, "expect: expected a list of at most %d timestamps",
                APS_CONFORM_MAX_EXPECT);
            goto report_problem;
        }
        nwant = json_array_size(expect);
        for (i = 0; i < nwant; i++)
            if (get_time("expect", json_array_get(expect, i), &want[i], &pr))
                goto report_problem;
    }
    tz = display_zone(&spec);

    memset(&err, 0, sizeof err);
    rc = aps_trigger_create(&spec, "UTC", now, &trig, &err);
    if (rc == APS_ENOMEM) {
        pr.nomem = 1;
        goto out;
    }
    if (want_error) {
        aps_time t1 = APS_TIME_NONE;

        if (rc || aps_trigger_next(trig, APS_TIME_NONE, now, &t1)) {
            ok = 1;
        } else if (report) {
            fmt_time(t1, tz, buf, sizeof buf);
            fprintf(report, "FAIL %s: expected a validation error, but the trigger was accepted "
                            "(first fire time %s)\n", id, buf);
        }
        goto out;
    }
    if (rc) {
        if (report)
            fprintf(report, "FAIL %s: the trigger was rejected: %s\n", id, err.msg);
        goto out;
    }
    /* t1 = next(NONE, now), t(k+1) = next(tk, tk); one more when fewer
     * than 8 are expected, which must be none. */
    limit = nwant < APS_CONFORM_MAX_EXPECT ? nwant + 1 : nwant;
    for (ngot = 0; ngot < limit; ngot++) {
        aps_time prev = ngot ? got[ngot - 1] : APS_TIME_NONE;

        rc = aps_trigger_next(trig, prev, ngot ? prev : now, &got[ngot]);
        if (rc) {
            if (report)
                fprintf(report, "FAIL %s: computing fire time %zu failed: %s\n", id, ngot + 1,
                        aps_strerror(rc));
            goto out;
        }
        if (got[ngot] == APS_TIME_NONE)
            break;
    }
    ok = 1;
    for (i = 0; i < nwant; i++)
        if (i >= ngot || got[i] != want[i])
            ok = 0;
    if (nwant < APS_CONFORM_MAX_EXPECT && ngot > nwant)
        ok = 0; /* an extra fire time where none was expected */
    if (!ok) {
        for (i = 0; i < nwant && !tzdata; i++)
            tzdata = offset_differs(json_array_get(expect, i), want[i], tz);
        if (report) {
            fprintf(report, "FAIL %s:%s\n", id,
                    tzdata ? " (the expected UTC offsets are not this machine's tzdata's)" : "");
            print_list(report, "expected", want, nwant, nwant < APS_CONFORM_MAX_EXPECT, tz);
            print_list(report, "actual:  ", got, ngot, ngot < limit, tz);
        }
    }
    goto out;

report_problem:
    if (report)
        fprintf(report, "FAIL %s: malformed vector: %s\n", id, pr.msg);
out:
    aps_trigger_destroy(trig);
    pool_free(&p);
    json_decref(root);
    if (pr.nomem)
        return APS_ENOMEM;
    *outcome = ok ? APS_CONFORM_PASS : tzdata ? APS_CONFORM_FAIL_TZDATA : APS_CONFORM_FAIL;
    return 0;
}

int aps_conform_run_file(const char *path, FILE *report, aps_conform_stats *stats,
                         aps_error *err)
{
    FILE *f = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    aps_conform_outcome outcome;
    int rc = 0;

    f = fopen(path, "r");
    if (!f) {
        rc = errno == ENOENT ? APS_ENOENT : APS_EIO;
        if (err) {
            err->code = rc;
            snprintf(err->msg, sizeof err->msg, "%s: %s", path, strerror(errno));
        }
        return rc;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        size_t i, len = (size_t)n;
        int blank = 1;

        if (len > APS_CONFORM_LINE_MAX) {
            rc = APS_ELIMIT;
            if (err) {
                err->code = rc;
                snprintf(err->msg, sizeof err->msg, "%s: a line is longer than %d bytes", path,
                         APS_CONFORM_LINE_MAX);
            }
            goto out;
        }
        for (i = 0; i < len; i++)
            if (line[i] != ' ' && line[i] != '\t' && line[i] != '\n' && line[i] != '\r')
                blank = 0;
        if (blank)
            continue;
        rc = aps_conform_run_vector(line, len, report, &outcome);
        if (rc) {
            if (err) {
                err->code = rc;
                snprintf(err->msg, sizeof err->msg, "%s: %s", path, aps_strerror(rc));
            }
            goto out;
        }
        if (outcome == APS_CONFORM_PASS) {
            stats->passed++;
        } else {
            stats->failed++;
            stats->tzdata += outcome == APS_CONFORM_FAIL_TZDATA;
        }
    }
    if (ferror(f)) {
        rc = APS_EIO;
        if (err) {
            err->code = rc;
            snprintf(err->msg, sizeof err->msg, "%s: read error", path);
        }
    }
out:
    free(line);
    fclose(f);
    return rc;
}
