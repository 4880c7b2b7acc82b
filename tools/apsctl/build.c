/*
 * apsctl: turning APScheduler-style flags into protobuf-c messages.
 *
 *   --cron 'day_of_week=mon-fri hour=9 minute=30'   CronTrigger fields
 *   --crontab 'M H DOM MON DOW'                     CronTrigger.crontab
 *   --interval 1m30s | 'hours=2 minutes=30'         IntervalTrigger
 *   --date 2026-11-23T10:00:00+01:00 | +12s | now   DateTrigger
 *   --calendar 'months=1 hour=9'                    CalendarIntervalTrigger
 *
 * Every message is built on the heap in protobuf-c's unpacked layout, so
 * one apsc_free() of the request releases everything.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "apsctl.h"

static void *
new_msg(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = xcalloc(1, d->sizeof_message);
    d->message_init(m);
    return m;
}

/* ---- key=value specs ---------------------------------------------------------- */

typedef struct kv {
    char *key, *value;
} kv;

typedef struct kvlist {
    kv *v;
    size_t n;
} kvlist;

static void
kv_free(kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
        free(l->v[i].value);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int
is_key_token(const char *tok, size_t len)
{
    const char *eq = memchr(tok, '=', len);
    if (eq == NULL || eq == tok)
        return 0;
    for (const char *p = tok; p < eq; p++)
        if (!(isalpha((unsigned char)*p) || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/*
 * Splits `hour=9,17 minute=0 day=last fri` into pairs. Tokens are separated
 * by spaces or commas; a token without `key=` continues the previous value,
 * joined by the separator that preceded it, so `hour=9,17` keeps its comma
 * and `day=last fri` its space.
 */
static int
kv_parse(const char *flag, const char *spec, kvlist *out)
{
    const char *p = spec;

    while (*p != '\0') {
        char sep = 0;
        while (*p == ' ' || *p == ',' || *p == '\t') {
            if (*p == ',' || sep == 0)
                sep = *p == '\t' ? ' ' : *p;
            p++;
        }
        if (*p == '\0')
            break;
        const char *tok = p;
        while (*p != '\0' && *p != ' ' && *p != ',' && *p != '\t')
            p++;
        size_t len = (size_t)(p - tok);
        if (is_key_token(tok, len)) {
            const char *eq = memchr(tok, '=', len);
            out->v = realloc(out->v, (out->n + 1) * sizeof(kv));
            if (out->v == NULL)
                exit(EXIT_LOCAL);
            kv *e = &out->v[out->n++];
            e->key = xmalloc((size_t)(eq - tok) + 1);
            for (size_t i = 0; i < (size_t)(eq - tok); i++)
                e->key[i] = tok[i] == '-' ? '_' : (char)tolower((unsigned char)tok[i]);
            e->key[eq - tok] = '\0';
            size_t vl = len - (size_t)(eq - tok) - 1;
            e->value = xmalloc(vl + 1);
            memcpy(e->value, eq + 1, vl);
            e->value[vl] = '\0';
        } else {
            if (out->n == 0)
                return usage_error("%s: expected KEY=VALUE, got '%.*s' (e.g. %s 'hour=9 minute=30')",
                                   flag, (int)len, tok, flag);
            kv *e = &out->v[out->n - 1];
            size_t ol = strlen(e->value);
            e->value = realloc(e->value, ol + len + 2);
            if (e->value == NULL)
                exit(EXIT_LOCAL);
            e->value[ol] = sep ? sep : ' ';
            memcpy(e->value + ol + 1, tok, len);
            e->value[ol + 1 + len] = '\0';
        }
    }
    for (size_t i = 0; i < out->n; i++)
        if (out->v[i].value[0] == '\0')
            return usage_error("%s: %s has no value", flag, out->v[i].key);
    return 0;
}

static int
parse_int(const char *what, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return usage_error("%s: expected an integer from %ld to %ld, got '%s'", what, min, max, s);
    *out = v;
    return 0;
}

static int
parse_duration_arg(const char *what, const char *s, Google__Protobuf__Duration **out)
{
    int64_t sec;
    int32_t ns;
    if (apsc_parse_duration(s, &sec, &ns) != 0)
        return usage_error("%s: expected a duration such as 3s, 1m30s, 2h, 1d or 0.5s, got '%s'",
                           what, s);
    Google__Protobuf__Duration *d = new_msg(&google__protobuf__duration__descriptor);
    d->seconds = sec;
    d->nanos = ns;
    *out = d;
    return 0;
}

/* ---- Times ---------------------------------------------------------------------- */

static int
zone_exists(const char *zone)
{
    char path[512];
    const char *dir = getenv("TZDIR");
    if (strcmp(zone, "UTC") == 0)
        return 1;
    if (zone[0] == '/' || strstr(zone, "..") != NULL)
        return 0;
    snprintf(path, sizeof path, "%s/%s", dir && dir[0] ? dir : "/usr/share/zoneinfo", zone);
    return access(path, R_OK) == 0;
}

static int
default_zone(ctx *x, const char **zone)
{
    if (x->default_tz == NULL) {
        Apsd__V1__GetSchedulerRequest req = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
        Apsd__V1__SchedulerInfo *info = NULL;
        int rc = apsc_get_scheduler(x->c, &req, &info, &x->err);
        if (rc != 0)
            return call_error(x, rc, "GetScheduler (for the default time zone)");
        x->default_tz = xstrdup(info->default_timezone[0] ? info->default_timezone : "UTC");
        apsc_free(info);
    }
    *zone = x->default_tz;
    return 0;
}

/* Local wall time in an IANA zone -> seconds since the epoch, through the C
 * library's TZ handling (the same tzdata the daemon reads). A time in a DST
 * gap or overlap gets whatever mktime picks; give an offset to be exact. */
static int
local_to_epoch(const char *zone, struct tm *tm, int64_t *out)
{
    char *old = getenv("TZ") ? xstrdup(getenv("TZ")) : NULL;
    char tz[300];

    snprintf(tz, sizeof tz, ":%s", zone);
    setenv("TZ", tz, 1);
    tzset();
    tm->tm_isdst = -1;
    time_t t = mktime(tm);
    if (old != NULL) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
    if (t == (time_t)-1)
        return -1;
    *out = (int64_t)t;
    return 0;
}

int
parse_time_arg(ctx *x, const char *what, const char *s, const char *zone,
               Google__Protobuf__Timestamp **out)
{
    int64_t sec;
    int32_t ns = 0;
    struct timespec now;

    *out = NULL;
    clock_gettime(CLOCK_REALTIME, &now);
    if (strcmp(s, "now") == 0) {
        sec = now.tv_sec;
        ns = (int32_t)now.tv_nsec;
    } else if (s[0] == '+' || s[0] == '-') {
        int64_t ds;
        int32_t dn;
        if (apsc_parse_duration(s + 1, &ds, &dn) != 0)
            return usage_error("%s: '%c' must be followed by a duration, e.g. %c12s, got '%s'",
                               what, s[0], s[0], s);
        int64_t t = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
        int64_t d = ds * 1000000000 + dn;
        t += s[0] == '+' ? d : -d;
        sec = t / 1000000000;
        ns = (int32_t)(t % 1000000000);
        if (ns < 0) {
            ns += 1000000000;
            sec--;
        }
    } else if (apsc_parse_time(s, &sec, &ns) != 0) {
        /* No offset: local time in `zone`. */
        struct tm tm;
        int y, mo, d, h = 0, mi = 0, se = 0, n = 0;
        char frac[16] = "";
        memset(&tm, 0, sizeof tm);
        int k = sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n);
        if (k != 3)
            goto bad;
        const char *p = s + n;
        if (*p == 'T' || *p == 't' || *p == ' ') {
            int m2 = 0;
            p++;
            if (sscanf(p, "%2d:%2d%n", &h, &mi, &m2) != 2)
                goto bad;
            p += m2;
            if (*p == ':') {
                if (sscanf(p, ":%2d%n", &se, &m2) != 1)
                    goto bad;
                p += m2;
                if (*p == '.') {
                    size_t fl = strspn(p + 1, "0123456789");
                    if (fl == 0 || fl > 9)
                        goto bad;
                    memcpy(frac, p + 1, fl);
                    frac[fl] = '\0';
                    p += 1 + fl;
                }
            }
        }
        if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59)
            goto bad;
        if (zone == NULL) {
            int rc = default_zone(x, &zone);
            if (rc != 0)
                return rc;
        }
        if (!zone_exists(zone))
            return usage_error("%s: unknown time zone '%s' (an IANA name such as Europe/Berlin)",
                               what, zone);
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_sec = se;
        if (local_to_epoch(zone, &tm, &sec) != 0)
            goto bad;
        if (tm.tm_mday != d) /* mktime normalized e.g. Feb 30 */
            goto bad;
        for (size_t i = 0; i < 9; i++)
            ns = ns * 10 + (frac[i] && i < strlen(frac) ? frac[i] - '0' : 0);
    }
    Google__Protobuf__Timestamp *t = new_msg(&google__protobuf__timestamp__descriptor);
    t->seconds = sec;
    t->nanos = ns;
    *out = t;
    return 0;
bad:
    return usage_error("%s: expected a time such as 2026-11-23T10:00:00+01:00, "
                       "'2026-11-23 10:00' (in --timezone), +12s, -1h or now; got '%s'",
                       what, s);
}

/* ---- Triggers ------------------------------------------------------------------- */

int
have_trigger(const opts *o)
{
    return o->cron.n || o->crontab || o->interval || o->date || o->calendar.n || o->trigger_json;
}

/* Trigger-wide keys that may appear inside a spec (`--cron 'hour=9
 * timezone=Europe/Berlin'`), as in APScheduler's keyword arguments. */
typedef struct common {
    const char *timezone, *start_date, *end_date, *jitter;
} common;

static int
common_key(const kv *e, common *c)
{
    if (strcmp(e->key, "timezone") == 0)
        c->timezone = e->value;
    else if (strcmp(e->key, "start_date") == 0)
        c->start_date = e->value;
    else if (strcmp(e->key, "end_date") == 0)
        c->end_date = e->value;
    else if (strcmp(e->key, "jitter") == 0)
        c->jitter = e->value;
    else
        return 0;
    return 1;
}

static int
build_cron(const opts *o, kvlist *kvs, common *cm, Apsd__V1__CronTrigger **out)
{
    static const char *const fields[] = {"year",        "month", "day",    "week",
                                         "day_of_week", "hour",  "minute", "second"};
    Apsd__V1__CronTrigger *c = new_msg(&apsd__v1__cron_trigger__descriptor);
    char **slots[] = {&c->year,        &c->month, &c->day,    &c->week,
                      &c->day_of_week, &c->hour,  &c->minute, &c->second};
    *out = c;
    for (size_t i = 0; i < o->cron.n; i++) {
        int rc = kv_parse("--cron", o->cron.v[i], kvs);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < kvs->n; i++) {
        const kv *e = &kvs->v[i];
        size_t f;
        if (common_key(e, cm))
            continue;
        for (f = 0; f < 8; f++)
            if (strcmp(e->key, fields[f]) == 0)
                break;
        if (f == 8)
            return usage_error("--cron: unknown field '%s' (year, month, day, week, day_of_week, "
                               "hour, minute, second, timezone, start_date, end_date, jitter)",
                               e->key);
        *slots[f] = xstrdup(e->value);
    }
    if (o->crontab != NULL)
        c->crontab = xstrdup(o->crontab);
    return 0;
}

static int
set_int_key(const kv *e, const char *const *names, int32_t *const *slots, size_t n,
            const char *flag)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(e->key, names[i]) == 0) {
            long v;
            char what[64];
            snprintf(what, sizeof what, "%s %s", flag, e->key);
            int rc = parse_int(what, e->value, 0, 2147483647, &v);
            if (rc != 0)
                return rc;
            *slots[i] = (int32_t)v;
            return 0;
        }
    return -1;
}

static int
build_interval(const opts *o, kvlist *kvs, common *cm, Apsd__V1__IntervalTrigger **out)
{
    static const char *const names[] = {"weeks",   "days",    "hours",
                                        "minutes", "seconds", "microseconds"};
    Apsd__V1__IntervalTrigger *t = new_msg(&apsd__v1__interval_trigger__descriptor);
    int32_t *const slots[] = {&t->weeks,   &t->days,    &t->hours,
                              &t->minutes, &t->seconds, &t->microseconds};
    *out = t;
    if (strchr(o->interval, '=') != NULL) {
        int rc = kv_parse("--interval", o->interval, kvs);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < kvs->n; i++) {
            if (common_key(&kvs->v[i], cm))
                continue;
            rc = set_int_key(&kvs->v[i], names, slots, 6, "--interval");
            if (rc > 0)
                return rc;
            if (rc < 0)
                return usage_error("--interval: unknown field '%s' (weeks, days, hours, minutes, "
                                   "seconds, microseconds, start_date, end_date, timezone, jitter)",
                                   kvs->v[i].key);
        }
        return 0;
    }
    int64_t s;
    int32_t ns;
    if (apsc_parse_duration(o->interval, &s, &ns) != 0)
        return usage_error("--interval: expected a duration such as 3s, 1m30s, 2h or 1d, or "
                           "'hours=2 minutes=30'; got '%s'",
                           o->interval);
    if (ns % 1000 != 0)
        return usage_error("--interval: finer than a microsecond: '%s'", o->interval);
    if (s / 86400 > 2147483647)
        return usage_error("--interval: too long: '%s'", o->interval);
    t->days = (int32_t)(s / 86400);
    t->hours = (int32_t)(s / 3600 % 24);
    t->minutes = (int32_t)(s / 60 % 60);
    t->seconds = (int32_t)(s % 60);
    t->microseconds = ns / 1000;
    return 0;
}

static int
build_calendar(const opts *o, kvlist *kvs, common *cm, Apsd__V1__CalendarIntervalTrigger **out)
{
    static const char *const names[] = {"years", "months", "weeks", "days",
                                        "hour",  "minute", "second"};
    Apsd__V1__CalendarIntervalTrigger *t = new_msg(&apsd__v1__calendar_interval_trigger__descriptor);
    int32_t *const slots[] = {&t->years, &t->months, &t->weeks, &t->days,
                              &t->hour,  &t->minute, &t->second};
    *out = t;
    for (size_t i = 0; i < o->calendar.n; i++) {
        int rc = kv_parse("--calendar", o->calendar.v[i], kvs);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < kvs->n; i++) {
        if (common_key(&kvs->v[i], cm))
            continue;
        int rc = set_int_key(&kvs->v[i], names, slots, 7, "--calendar");
        if (rc > 0)
            return rc;
        if (rc < 0)
            return usage_error("--calendar: unknown field '%s' (years, months, weeks, days, hour, "
                               "minute, second, start_date, end_date, timezone)",
                               kvs->v[i].key);
    }
    return 0;
}

int
build_trigger(ctx *x, int required, Apsd__V1__Trigger **out)
{
    const opts *o = x->o;
    Apsd__V1__Trigger *t = NULL;
    kvlist kvs = {NULL, 0};
    common cm = {o->timezone, o->start_date, o->end_date, o->jitter};
    int rc = 0;

    *out = NULL;
    int kinds = (o->cron.n || o->crontab) + !!o->interval + !!o->date + !!o->calendar.n +
                !!o->trigger_json;
    if (kinds > 1 || (o->cron.n && o->crontab))
        return usage_error("give one trigger: --cron, --crontab, --interval, --date, --calendar "
                           "or --trigger-json");
    if (kinds == 0) {
        if (o->timezone || o->start_date || o->end_date || o->jitter)
            return usage_error("--timezone, --start-date, --end-date and --jitter need a trigger "
                               "(--cron, --interval, ...)");
        if (required)
            return usage_error("a trigger is required: --cron, --crontab, --interval, --date, "
                               "--calendar or --trigger-json");
        return 0;
    }
    if (o->trigger_json) {
        if (o->timezone || o->start_date || o->end_date)
            return usage_error("--trigger-json: put timezone, start_date and end_date in the JSON");
        if (apsc_from_json(&apsd__v1__trigger__descriptor, o->trigger_json, (void **)&t, &x->err) !=
            0)
            return usage_error("--trigger-json: %s", x->err.message);
    } else {
        t = new_msg(&apsd__v1__trigger__descriptor);
    }
    char **tz_slot = NULL;
    Google__Protobuf__Timestamp **start_slot = NULL, **end_slot = NULL;
    if (o->cron.n || o->crontab) {
        t->kind_case = APSD__V1__TRIGGER__KIND_CRON;
        rc = build_cron(o, &kvs, &cm, &t->cron);
        if (rc == 0) {
            tz_slot = &t->cron->timezone;
            start_slot = &t->cron->start_date;
            end_slot = &t->cron->end_date;
        }
    } else if (o->interval) {
        t->kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
        rc = build_interval(o, &kvs, &cm, &t->interval);
        if (rc == 0) {
            tz_slot = &t->interval->timezone;
            start_slot = &t->interval->start_date;
            end_slot = &t->interval->end_date;
        }
    } else if (o->calendar.n) {
        t->kind_case = APSD__V1__TRIGGER__KIND_CALENDAR_INTERVAL;
        rc = build_calendar(o, &kvs, &cm, &t->calendar_interval);
        if (rc == 0) {
            tz_slot = &t->calendar_interval->timezone;
            start_slot = &t->calendar_interval->start_date;
            end_slot = &t->calendar_interval->end_date;
        }
    } else if (o->date) {
        t->kind_case = APSD__V1__TRIGGER__KIND_DATE;
        t->date = new_msg(&apsd__v1__date_trigger__descriptor);
        tz_slot = &t->date->timezone;
        if (cm.start_date || cm.end_date)
            rc = usage_error("--date: --start-date and --end-date do not apply to a date trigger");
        else
            rc = parse_time_arg(x, "--date", o->date, cm.timezone, &t->date->run_date);
    }
    if (rc == 0 && tz_slot != NULL && cm.timezone != NULL) {
        if (!zone_exists(cm.timezone))
            rc = usage_error("--timezone: unknown time zone '%s' (an IANA name such as "
                             "Europe/Berlin)",
                             cm.timezone);
        else
            *tz_slot = xstrdup(cm.timezone);
    }
    if (rc == 0 && start_slot != NULL && cm.start_date != NULL)
        rc = parse_time_arg(x, "--start-date", cm.start_date, cm.timezone, start_slot);
    if (rc == 0 && end_slot != NULL && cm.end_date != NULL)
        rc = parse_time_arg(x, "--end-date", cm.end_date, cm.timezone, end_slot);
    if (rc == 0 && cm.jitter != NULL) {
        apsc_free(t->jitter);
        t->jitter = NULL;
        rc = parse_duration_arg("--jitter", cm.jitter, &t->jitter);
    }
    kv_free(&kvs);
    if (rc != 0) {
        apsc_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- Jobs ------------------------------------------------------------------------- */

static int
parse_overlap(const char *s, Apsd__V1__OverlapPolicy *out)
{
    static const struct {
        const char *name;
        Apsd__V1__OverlapPolicy v;
    } names[] = {
        {"skip", APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_SKIP},
        {"queue-one", APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_QUEUE_ONE},
        {"queue-all", APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_QUEUE_ALL},
        {"cancel-running", APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_CANCEL_RUNNING},
        {"default", APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_UNSPECIFIED},
    };
    char norm[64];
    size_t i;
    const char *p = s;
    if (strncasecmp(p, "OVERLAP_POLICY_", 15) == 0)
        p += 15;
    for (i = 0; p[i] != '\0' && i + 1 < sizeof norm; i++)
        norm[i] = p[i] == '_' ? '-' : (char)tolower((unsigned char)p[i]);
    norm[i] = '\0';
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(norm, names[i].name) == 0) {
            *out = names[i].v;
            return 0;
        }
    return usage_error("--overlap: expected skip, queue-one, queue-all or cancel-running; got '%s'",
                       s);
}

/* KEY=VALUE items into a protobuf-c string map (repeated XxxEntry). */
static int
build_map(const char *flag, const strlist *items, const ProtobufCMessageDescriptor *entry_desc,
          void ***arr, size_t *n)
{
    *arr = xcalloc(items->n + 1, sizeof(void *));
    *n = 0;
    for (size_t i = 0; i < items->n; i++) {
        const char *eq = strchr(items->v[i], '=');
        if (eq == NULL || eq == items->v[i])
            return usage_error("%s: expected KEY=VALUE, got '%s'", flag, items->v[i]);
        /* Both entry types are {base, char *key, char *value}. */
        Apsd__V1__Job__LabelsEntry *e = new_msg(entry_desc);
        (*arr)[(*n)++] = e;
        e->key = xmalloc((size_t)(eq - items->v[i]) + 1);
        memcpy(e->key, items->v[i], (size_t)(eq - items->v[i]));
        e->key[eq - items->v[i]] = '\0';
        e->value = xstrdup(eq + 1);
    }
    return 0;
}

static int
build_target(ctx *x, Apsd__V1__Target **out)
{
    const opts *o = x->o;
    int rc = 0;
    Apsd__V1__Target *t = new_msg(&apsd__v1__target__descriptor);

    *out = NULL;
    if (o->argc > 0) {
        Apsd__V1__CommandTarget *c = new_msg(&apsd__v1__command_target__descriptor);
        t->kind_case = APSD__V1__TARGET__KIND_COMMAND;
        t->command = c;
        c->argv = xcalloc((size_t)o->argc, sizeof(char *));
        for (int i = 0; i < o->argc; i++)
            c->argv[c->n_argv++] = xstrdup(o->argv[i]);
        if (o->env.n)
            rc = build_map("--env", &o->env, &apsd__v1__command_target__env_entry__descriptor,
                           (void ***)&c->env, &c->n_env);
        if (rc == 0 && o->cwd)
            c->cwd = xstrdup(o->cwd);
        if (rc == 0 && o->command_timeout)
            rc = parse_duration_arg("--command-timeout", o->command_timeout, &c->timeout);
        if (rc == 0 && o->max_output) {
            long v;
            rc = parse_int("--max-output-bytes", o->max_output, 0, 2147483647, &v);
            c->max_output_bytes = (uint32_t)v;
        }
    } else {
        Apsd__V1__RemoteTarget *r = new_msg(&apsd__v1__remote_target__descriptor);
        t->kind_case = APSD__V1__TARGET__KIND_REMOTE;
        t->remote = r;
        r->task = xstrdup(o->remote);
        if (o->queue)
            r->queue = xstrdup(o->queue);
        if (o->args &&
            apsc_from_json(&google__protobuf__list_value__descriptor, o->args, (void **)&r->args,
                           &x->err) != 0)
            rc = usage_error("--args: a JSON array is expected: %s", x->err.message);
        if (rc == 0 && o->kwargs &&
            apsc_from_json(&google__protobuf__struct__descriptor, o->kwargs, (void **)&r->kwargs,
                           &x->err) != 0)
            rc = usage_error("--kwargs: a JSON object is expected: %s", x->err.message);
    }
    if (rc != 0) {
        apsc_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int
build_job(ctx *x, int for_modify, Apsd__V1__Job **out, strlist *mask)
{
    const opts *o = x->o;
    Apsd__V1__Job *j = NULL;
    int rc = 0;

    *out = NULL;
    if (o->argc > 0 && o->remote)
        return usage_error("give either a command after -- or --remote TASK, not both");
    if (!o->argc && (o->env.n || o->cwd || o->command_timeout || o->max_output))
        return usage_error("--env, --cwd, --command-timeout and --max-output-bytes need the "
                           "command after -- (the target is %s whole)",
                           for_modify ? "replaced" : "given");
    if (!o->remote && (o->args || o->kwargs || o->queue))
        return usage_error("--args, --kwargs and --queue need --remote TASK");
    if (for_modify && (o->jobstore || o->paused || o->job_json || o->replace))
        return usage_error("modify: --jobstore cannot change; --paused, --replace and --job-json "
                           "are for add (use pause/resume)");

    if (o->job_json) {
        if (apsc_from_json(&apsd__v1__job__descriptor, o->job_json, (void **)&j, &x->err) != 0)
            return usage_error("--job-json: %s", x->err.message);
    } else {
        j = new_msg(&apsd__v1__job__descriptor);
    }
    const char *id = o->pos.n > 0 ? o->pos.v[0] : o->id;
    if (o->pos.n > 0 && o->id && strcmp(o->id, o->pos.v[0]) != 0) {
        rc = usage_error("two ids given: '%s' and --id '%s'", o->pos.v[0], o->id);
        goto out;
    }
    if (id != NULL) {
        free(j->id == protobuf_c_empty_string ? NULL : j->id);
        j->id = xstrdup(id);
    }
#define MASK(p)                                                                                 \
    do {                                                                                       \
        if (mask)                                                                              \
            strlist_add(mask, p);                                                              \
    } while (0)
#define SETSTR(field, val, path)                                                                \
    do {                                                                                       \
        if (j->field != protobuf_c_empty_string)                                               \
            free(j->field);                                                                    \
        j->field = xstrdup(val);                                                               \
        MASK(path);                                                                            \
    } while (0)
    if (o->name)
        SETSTR(name, o->name, "name");
    if (o->executor)
        SETSTR(executor, o->executor, "executor");
    if (o->jobstore)
        SETSTR(jobstore, o->jobstore, "jobstore");
    if (have_trigger(o) || o->timezone || o->start_date || o->end_date || o->jitter) {
        Apsd__V1__Trigger *t = NULL;
        rc = build_trigger(x, 0, &t);
        if (rc != 0)
            goto out;
        apsc_free(j->trigger);
        j->trigger = t;
        MASK("trigger");
    }
    if (o->argc > 0 || o->remote) {
        Apsd__V1__Target *t = NULL;
        rc = build_target(x, &t);
        if (rc != 0)
            goto out;
        apsc_free(j->target);
        j->target = t;
        MASK("target");
    }
    if (o->misfire) {
        apsc_free(j->misfire_grace_time);
        j->misfire_grace_time = NULL;
        if (strcmp(o->misfire, "default") != 0) {
            Apsd__V1__MisfireGraceTime *m = new_msg(&apsd__v1__misfire_grace_time__descriptor);
            j->misfire_grace_time = m;
            if (strcmp(o->misfire, "unlimited") == 0 || strcmp(o->misfire, "none") == 0) {
                m->limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED;
                m->unlimited = 1;
            } else {
                m->limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_DURATION;
                rc = parse_duration_arg("--misfire-grace-time (or 'unlimited')", o->misfire,
                                        &m->duration);
                if (rc != 0)
                    goto out;
            }
        }
        MASK("misfire_grace_time");
    }
    if (o->coalesce >= 0) {
        j->optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE;
        j->coalesce = o->coalesce;
        MASK("coalesce");
    }
    if (o->max_instances) {
        long v;
        rc = parse_int("--max-instances", o->max_instances, 1, 2147483647, &v);
        if (rc != 0)
            goto out;
        j->optional_max_instances_case = APSD__V1__JOB__OPTIONAL_MAX_INSTANCES_MAX_INSTANCES;
        j->max_instances = (int32_t)v;
        MASK("max_instances");
    }
    if (o->overlap) {
        rc = parse_overlap(o->overlap, &j->overlap_policy);
        if (rc != 0)
            goto out;
        MASK("overlap_policy");
    }
    if (o->labels.n) {
        for (size_t i = 0; i < j->n_labels; i++)
            apsc_free(j->labels[i]);
        free(j->labels);
        j->labels = NULL;
        j->n_labels = 0;
        rc = build_map("--label", &o->labels, &apsd__v1__job__labels_entry__descriptor,
                       (void ***)&j->labels, &j->n_labels);
        if (rc != 0)
            goto out;
        MASK("labels");
    }
    if (o->next_run_time) {
        apsc_free(j->next_run_time);
        j->next_run_time = NULL;
        rc = parse_time_arg(x, "--next-run-time", o->next_run_time, o->timezone,
                            &j->next_run_time);
        if (rc != 0)
            goto out;
        MASK("next_run_time");
    }
    if (o->paused)
        j->paused = 1;
#undef SETSTR
#undef MASK
    if (!for_modify && j->target == NULL) {
        rc = usage_error("add: give the command after -- (e.g. -- /bin/echo hello) or --remote "
                         "TASK");
        goto out;
    }
out:
    if (rc != 0) {
        apsc_free(j);
        return rc;
    }
    *out = j;
    return 0;
}

/* ---- Event types ---------------------------------------------------------------- */

int
event_type_from_name(const char *s)
{
    char norm[64];
    size_t i;
    const ProtobufCEnumDescriptor *ed = &apsd__v1__event_type__descriptor;

    for (i = 0; s[i] != '\0' && i + 1 < sizeof norm; i++)
        norm[i] = s[i] == '-' ? '_' : (char)toupper((unsigned char)s[i]);
    norm[i] = '\0';
    const char *n = strncmp(norm, "EVENT_TYPE_", 11) == 0 ? norm + 11 : norm;
    for (unsigned k = 0; k < ed->n_values; k++) {
        const char *v = ed->values[k].name + 11; /* past EVENT_TYPE_ */
        if (ed->values[k].value == 0)
            continue;
        if (strcmp(n, v) == 0 || (strncmp(v, "JOB_", 4) == 0 && strcmp(n, v + 4) == 0))
            return ed->values[k].value;
    }
    return -1;
}

const char *
event_type_short(int t)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&apsd__v1__event_type__descriptor, t);
    return v != NULL ? v->name + 11 : "UNKNOWN";
}
