/*
 * job.c: job records. Validation of job specs (every message names the
 * field, as the API promises), the effective trigger, deep copies and frees
 * of jobs, triggers and events, lateness statistics, ids.
 *
 * The binary codec is in codec.c.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "apsd/engine.h"
#include "codec.h"
#include "job.h"

#define US_PER_SEC INT64_C(1000000)
#define US_PER_DAY (INT64_C(86400) * US_PER_SEC)

/* ------------------------------------------------------------------ */
/* Allocation (with the test hook)                                      */
/* ------------------------------------------------------------------ */

unsigned long aps__job_alloc_fail_at;

/* Why not atomic: outside tests the hook is never armed, so the allocation
 * path only reads it; tests arm it from a single thread. */
static int
injected_failure(void)
{
    return aps__job_alloc_fail_at && --aps__job_alloc_fail_at == 0;
}

void *
aps__jmalloc(size_t n)
{
    return injected_failure() ? NULL : malloc(n ? n : 1);
}

void *
aps__jcalloc(size_t n, size_t size)
{
    return injected_failure() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *
aps__jrealloc(void *p, size_t n)
{
    return injected_failure() ? NULL : realloc(p, n ? n : 1);
}

char *
aps__jstrdup(const char *s)
{
    size_t n;
    char *d;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    d = aps__jmalloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Copies an optional string: 0, or APS_ENOMEM (then *dst is NULL). */
static int
dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = aps__jstrdup(src);
    return *dst ? 0 : APS_ENOMEM;
}

static int set_err(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
set_err(aps_error *err, int code, const char *fmt, ...)
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

static int
oom(aps_error *err)
{
    return set_err(err, APS_ENOMEM, "out of memory");
}

/* ------------------------------------------------------------------ */
/* Byte checks                                                          */
/* ------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s (1-4), 0 if ill-formed:
 * no overlongs, no surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len, i;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static int
utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, k;

    while (i < n) {
        k = utf8_seq(p + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

/* Space, C0 controls and DEL: what an identifier may not contain. */
static int
has_space_or_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7F)
            return 1;
    return 0;
}

/* An identifier-like name: 1..max bytes of UTF-8 without spaces or controls. */
static int
check_name(const char *field, const char *s, size_t max, aps_error *err)
{
    size_t n = strlen(s);

    if (n == 0)
        return set_err(err, APS_EINVAL, "%s: must not be empty", field);
    if (n > max)
        return set_err(err, APS_EINVAL, "%s: %zu bytes, at most %zu allowed", field, n, max);
    if (has_space_or_ctl(s))
        return set_err(err, APS_EINVAL, "%s: must not contain spaces or control characters", field);
    if (!utf8_valid(s))
        return set_err(err, APS_EINVAL, "%s: not valid UTF-8", field);
    return 0;
}

static int
label_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '/' || c == '-';
}

static int
label_chars_ok(const char *s, size_t min)
{
    size_t n = strlen(s), i;

    if (n < min || n > APS__LABEL_LEN_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if (!label_char((unsigned char)s[i]))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* JSON syntax                                                          */
/* ------------------------------------------------------------------ */

typedef struct jp {
    const unsigned char *s;
    size_t n, i;
    const char *why;
} jp;

static int
jp_fail(jp *p, const char *why)
{
    p->why = why;
    return -1;
}

static void
jp_ws(jp *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int
jp_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int
jp_digit(jp *p)
{
    return p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9';
}

static int
jp_string(jp *p)
{
    size_t k, j;

    p->i++; /* the opening quote */
    for (;;) {
        unsigned char c;

        if (p->i >= p->n)
            return jp_fail(p, "unterminated string");
        c = p->s[p->i];
        if (c == '"') {
            p->i++;
            return 0;
        }
        if (c < 0x20)
            return jp_fail(p, "control character in string");
        if (c == '\\') {
            if (p->i + 1 >= p->n)
                return jp_fail(p, "unterminated string");
            c = p->s[p->i + 1];
            if (c == 'u') {
                for (j = 0; j < 4; j++)
                    if (p->i + 2 + j >= p->n || !jp_hex(p->s[p->i + 2 + j]))
                        return jp_fail(p, "invalid \\u escape");
                p->i += 6;
            } else if (strchr("\"\\/bfnrt", c) && c) {
                p->i += 2;
            } else {
                return jp_fail(p, "invalid escape");
            }
            continue;
        }
        k = utf8_seq(p->s + p->i, p->n - p->i);
        if (!k)
            return jp_fail(p, "invalid UTF-8");
        p->i += k;
    }
}

static int
jp_number(jp *p)
{
    if (p->s[p->i] == '-')
        p->i++;
    if (!jp_digit(p))
        return jp_fail(p, "invalid number");
    if (p->s[p->i] == '0')
        p->i++;
    else
        while (jp_digit(p))
            p->i++;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (!jp_digit(p))
            return jp_fail(p, "invalid number");
        while (jp_digit(p))
            p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (!jp_digit(p))
            return jp_fail(p, "invalid number");
        while (jp_digit(p))
            p->i++;
    }
    return 0;
}

static int
jp_literal(jp *p, const char *lit)
{
    size_t n = strlen(lit);

    if (p->n - p->i < n || memcmp(p->s + p->i, lit, n) != 0)
        return jp_fail(p, "unexpected character");
    p->i += n;
    return 0;
}

static int
jp_value(jp *p, int depth)
{
    unsigned char c;

    jp_ws(p);
    if (p->i >= p->n)
        return jp_fail(p, "unexpected end of input");
    c = p->s[p->i];
    switch (c) {
    case '{':
    case '[': {
        unsigned char close = c == '{' ? '}' : ']';

        if (depth >= APS__JSON_MAX_DEPTH)
            return jp_fail(p, "nested too deeply");
        p->i++;
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                jp_ws(p);
                if (p->i >= p->n)
                    return jp_fail(p, "unexpected end of input");
                if (p->s[p->i] != '"')
                    return jp_fail(p, "expected a string key");
                if (jp_string(p))
                    return -1;
                jp_ws(p);
                if (p->i >= p->n)
                    return jp_fail(p, "unexpected end of input");
                if (p->s[p->i] != ':')
                    return jp_fail(p, "expected ':'");
                p->i++;
            }
            if (jp_value(p, depth + 1))
                return -1;
            jp_ws(p);
            if (p->i >= p->n)
                return jp_fail(p, "unexpected end of input");
            if (p->s[p->i] == close) {
                p->i++;
                return 0;
            }
            if (p->s[p->i] != ',')
                return jp_fail(p, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
            p->i++;
        }
    }
    case '"':
        return jp_string(p);
    case 't':
        return jp_literal(p, "true");
    case 'f':
        return jp_literal(p, "false");
    case 'n':
        return jp_literal(p, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return jp_number(p);
        return jp_fail(p, "unexpected character");
    }
}

int
aps__json_check(const char *text, size_t len, char *top, size_t *where, const char **why)
{
    jp p = {(const unsigned char *)text, len, 0, NULL};
    size_t start;

    if (!text)
        p.n = 0;
    jp_ws(&p);
    start = p.i;
    if (jp_value(&p, 0) == 0) {
        jp_ws(&p);
        if (p.i == p.n) {
            if (top)
                *top = (char)p.s[start];
            return 0;
        }
        p.why = "unexpected data after the value";
    }
    if (where)
        *where = p.i;
    if (why)
        *why = p.why;
    return APS_EINVAL;
}

/* ------------------------------------------------------------------ */
/* Trigger specs: copy and free                                         */
/* ------------------------------------------------------------------ */

static const char *const trigger_kind_names[] = {
    NULL, "cron", "interval", "date", "calendar_interval", "all_of", "any_of",
};

static int
trigger_kind_valid(aps_trigger_kind k)
{
    return k >= APS_TRIGGER_CRON && k <= APS_TRIGGER_ANY_OF;
}

/* The string fields of a cron trigger, for the code that treats them all
 * alike (copy, free): listed once, so a field added to the struct cannot
 * be copied by one and leaked by the other. */
static const size_t cron_str_off[] = {
    offsetof(aps_trigger_spec, u.cron.year),        offsetof(aps_trigger_spec, u.cron.month),
    offsetof(aps_trigger_spec, u.cron.day),         offsetof(aps_trigger_spec, u.cron.week),
    offsetof(aps_trigger_spec, u.cron.day_of_week), offsetof(aps_trigger_spec, u.cron.hour),
    offsetof(aps_trigger_spec, u.cron.minute),      offsetof(aps_trigger_spec, u.cron.second),
    offsetof(aps_trigger_spec, u.cron.crontab),     offsetof(aps_trigger_spec, u.cron.timezone),
};
#define N_CRON_STR (sizeof cron_str_off / sizeof cron_str_off[0])

/* Cron string field i of t, to set (a copy owns its strings, the `const`
 * of the spec's fields notwithstanding). */
static char **
cron_str(aps_trigger_spec *t, size_t i)
{
    return (char **)(void *)((char *)t + cron_str_off[i]);
}

static const char *
cron_str_get(const aps_trigger_spec *t, size_t i)
{
    return *(const char *const *)(const void *)((const char *)t + cron_str_off[i]);
}

/* A decoded record's block (aps__jobrec.arena): its fields that live in
 * it are not freed on their own. NULL: everything is. */
typedef struct span {
    uintptr_t lo, hi;
} span;

static void
sfree(const span *a, const void *p)
{
    if (a && (uintptr_t)p >= a->lo && (uintptr_t)p < a->hi)
        return;
    free((void *)(uintptr_t)p);
}

/* Frees what a spec owns, not the spec itself. */
static void
trigger_clear_in(aps_trigger_spec *t, const span *a)
{
    size_t i;

    switch (t->kind) {
    case APS_TRIGGER_CRON:
        for (i = 0; i < N_CRON_STR; i++)
            sfree(a, cron_str_get(t, i));
        break;
    case APS_TRIGGER_INTERVAL:
        sfree(a, t->u.interval.timezone);
        break;
    case APS_TRIGGER_DATE:
        sfree(a, t->u.date.timezone);
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        sfree(a, t->u.calendar_interval.timezone);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (t->u.combo.triggers)
            for (i = 0; i < t->u.combo.count; i++)
                trigger_clear_in((aps_trigger_spec *)&t->u.combo.triggers[i], a);
        sfree(a, t->u.combo.triggers);
        break;
    default:
        break;
    }
    memset(t, 0, sizeof *t);
}

static void
trigger_clear(aps_trigger_spec *t)
{
    trigger_clear_in(t, NULL);
}

void
aps__trigger_spec_free(aps_trigger_spec *t)
{
    if (!t)
        return;
    trigger_clear(t);
    free(t);
}

/* Copies one level: the kind's scalars and strings. Combos get a zeroed
 * child array of the right size (children are filled by the caller), so
 * that trigger_clear() can always free a half-built copy. */
static int
trigger_copy_level(aps_trigger_spec *dst, const aps_trigger_spec *src)
{
    int rc = 0;

    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    dst->jitter_us = src->jitter_us;
    switch (src->kind) {
    case APS_TRIGGER_CRON: {
        size_t i;

        dst->u.cron.start_date = src->u.cron.start_date;
        dst->u.cron.end_date = src->u.cron.end_date;
        for (i = 0; i < N_CRON_STR && !rc; i++)
            rc = dup_opt(cron_str(dst, i), cron_str_get(src, i));
        break;
    }
    case APS_TRIGGER_INTERVAL:
        dst->u.interval = src->u.interval;
        dst->u.interval.timezone = NULL;
        rc = dup_opt((char **)&dst->u.interval.timezone, src->u.interval.timezone);
        break;
    case APS_TRIGGER_DATE:
        dst->u.date = src->u.date;
        dst->u.date.timezone = NULL;
        rc = dup_opt((char **)&dst->u.date.timezone, src->u.date.timezone);
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        dst->u.calendar_interval = src->u.calendar_interval;
        dst->u.calendar_interval.timezone = NULL;
        rc =
            dup_opt((char **)&dst->u.calendar_interval.timezone, src->u.calendar_interval.timezone);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (src->u.combo.count == 0)
            break;
        if (!src->u.combo.triggers)
            return APS_EINVAL;
        dst->u.combo.triggers = aps__jcalloc(src->u.combo.count, sizeof(aps_trigger_spec));
        if (!dst->u.combo.triggers)
            return APS_ENOMEM;
        dst->u.combo.count = src->u.combo.count;
        break;
    default:
        return APS_EINVAL;
    }
    return rc;
}

static int
trigger_copy_into(aps_trigger_spec *dst, const aps_trigger_spec *src, int depth)
{
    size_t i;
    int rc;

    if (depth > APS__CODEC_MAX_DEPTH)
        return APS_EINVAL;
    rc = trigger_copy_level(dst, src);
    if (!rc && (src->kind == APS_TRIGGER_ALL_OF || src->kind == APS_TRIGGER_ANY_OF))
        for (i = 0; i < dst->u.combo.count && !rc; i++)
            rc = trigger_copy_into((aps_trigger_spec *)&dst->u.combo.triggers[i],
                                   &src->u.combo.triggers[i], depth + 1);
    if (rc)
        trigger_clear(dst);
    return rc;
}

int
aps__trigger_spec_copy(const aps_trigger_spec *src, aps_trigger_spec **out)
{
    aps_trigger_spec *t;
    int rc;

    *out = NULL;
    if (!src)
        return APS_EINVAL;
    t = aps__jcalloc(1, sizeof *t);
    if (!t)
        return APS_ENOMEM;
    rc = trigger_copy_into(t, src, 0);
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The effective trigger                                                */
/* ------------------------------------------------------------------ */

/* The zone field of a leaf trigger, NULL for the combining ones. */
static const char **
trigger_zone(aps_trigger_spec *t)
{
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        return &t->u.cron.timezone;
    case APS_TRIGGER_INTERVAL:
        return &t->u.interval.timezone;
    case APS_TRIGGER_DATE:
        return &t->u.date.timezone;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        return &t->u.calendar_interval.timezone;
    default:
        return NULL;
    }
}

/* The interval's length as IntervalTrigger computes it, or -1 when it
 * overflows or is negative (aps_trigger_create then says why). */
static int64_t
interval_step(const aps_trigger_spec *t)
{
    const int64_t parts[6] = {t->u.interval.weeks,   t->u.interval.days,
                              t->u.interval.hours,   t->u.interval.minutes,
                              t->u.interval.seconds, t->u.interval.microseconds};
    static const int64_t unit[6] = {7 * US_PER_DAY,  US_PER_DAY, 3600 * US_PER_SEC,
                                    60 * US_PER_SEC, US_PER_SEC, 1};
    int64_t step = 0, prod;
    int i;

    for (i = 0; i < 6; i++)
        if (__builtin_mul_overflow(parts[i], unit[i], &prod) ||
            __builtin_add_overflow(step, prod, &step))
            return -1;
    if (step < 0)
        return -1;
    return step ? step : US_PER_SEC;
}

/*
 * Rewrites a message of aps_trigger_create for a leaf at `path`:
 * "hour: 25 is out of range 0-23" -> "trigger.cron.hour: 25 ...",
 * "interval: weeks: 5 is too large" -> "trigger.interval.weeks: 5 ...",
 * "interval: the interval must not be negative"
 *   -> "trigger.interval: the interval must not be negative".
 */
static void
leaf_error(aps_error *err, const aps_error *inner, int rc, const char *path, const char *kind)
{
    const char *rest = inner->msg;
    size_t klen = strlen(kind), i = 0;

    if (!err)
        return;
    if (strncmp(rest, kind, klen) == 0 && rest[klen] == ':' && rest[klen + 1] == ' ')
        rest += klen + 2;
    while ((rest[i] >= 'a' && rest[i] <= 'z') || rest[i] == '_')
        i++;
    if (i > 0 && rest[i] == ':')
        set_err(err, rc, "%s.%s.%s", path, kind, rest);
    else
        set_err(err, rc, "%s.%s: %s", path, kind, rest);
}

static int
effective_at(aps_trigger_spec *dst, const aps_trigger_spec *src, const char *path, int depth,
             const char *default_tz, aps_time now, aps_error *err)
{
    const char *kind;
    const char **zone;
    aps_trigger *compiled = NULL;
    aps_error inner;
    size_t i;
    int rc;

    memset(dst, 0, sizeof *dst);
    if (!trigger_kind_valid(src->kind))
        return set_err(err, APS_EINVAL,
                       "%s: one of cron, interval, date, calendar_interval, all_of, any_of "
                       "is required",
                       path);
    kind = trigger_kind_names[src->kind];
    /* Why only outermost: jitter on a sub-trigger would move the times the
     * combination compares, so all_of could never agree (the proto says so). */
    if (depth > 0 && src->jitter_us != 0)
        return set_err(err, APS_EINVAL, "%s.jitter: only allowed on the outermost trigger", path);
    if (src->jitter_us < 0)
        return set_err(err, APS_EINVAL, "%s.jitter: must not be negative", path);
    if (src->kind == APS_TRIGGER_ALL_OF || src->kind == APS_TRIGGER_ANY_OF) {
        if (src->u.combo.count == 0 || !src->u.combo.triggers)
            return set_err(err, APS_EINVAL, "%s.%s.triggers: must not be empty", path, kind);
        if (src->u.combo.count > APS__COMBO_MAX_CHILDREN)
            return set_err(err, APS_EINVAL, "%s.%s.triggers: %zu given, at most %d allowed", path,
                           kind, src->u.combo.count, APS__COMBO_MAX_CHILDREN);
        if (depth >= APS__COMBO_MAX_DEPTH)
            return set_err(err, APS_EINVAL, "%s.%s: nested more than %d levels deep", path, kind,
                           APS__COMBO_MAX_DEPTH);
    }
    rc = trigger_copy_level(dst, src);
    if (rc) {
        trigger_clear(dst);
        return rc == APS_ENOMEM ? oom(err) : set_err(err, rc, "%s: invalid", path);
    }
    if (src->kind == APS_TRIGGER_ALL_OF || src->kind == APS_TRIGGER_ANY_OF) {
        for (i = 0; i < src->u.combo.count; i++) {
            char child[256];

            snprintf(child, sizeof child, "%s.%s.triggers[%zu]", path, kind, i);
            rc = effective_at((aps_trigger_spec *)&dst->u.combo.triggers[i],
                              &src->u.combo.triggers[i], child, depth + 1, default_tz, now, err);
            if (rc)
                goto fail;
        }
        return 0;
    }
    /* A leaf: fill the defaults that would otherwise depend on when the
     * trigger is compiled (each restart), then validate it alone so the
     * message can name its path. */
    zone = trigger_zone(dst);
    if (!*zone) {
        *zone = aps__jstrdup(default_tz ? default_tz : "UTC");
        if (!*zone) {
            rc = oom(err);
            goto fail;
        }
    }
    if (dst->kind == APS_TRIGGER_INTERVAL && dst->u.interval.start_date == APS_TIME_NONE) {
        int64_t step = interval_step(dst);

        if (step > 0 && !__builtin_add_overflow(now, step, &dst->u.interval.start_date)) {
            /* APScheduler 3: start_date = now + interval. */
        } else {
            dst->u.interval.start_date = APS_TIME_NONE;
        }
    } else if (dst->kind == APS_TRIGGER_DATE && dst->u.date.run_date == APS_TIME_NONE) {
        dst->u.date.run_date = now;
    } else if (dst->kind == APS_TRIGGER_CALENDAR_INTERVAL &&
               dst->u.calendar_interval.start_date == APS_TIME_NONE) {
        dst->u.calendar_interval.start_date = now;
    }
    memset(&inner, 0, sizeof inner);
    rc = aps_trigger_create(dst, default_tz, now, &compiled, &inner);
    aps_trigger_destroy(compiled);
    if (rc) {
        if (rc == APS_ENOMEM)
            oom(err);
        else
            leaf_error(err, &inner, rc, path, kind);
        goto fail;
    }
    return 0;

fail:
    trigger_clear(dst);
    return rc;
}

/* Builds the effective trigger of a spec (see aps__jobrec_from_spec). */
static int
effective_trigger(const aps_trigger_spec *src, aps_time next_run_time, const char *default_tz,
                  aps_time now, aps_trigger_spec **out, aps_error *err)
{
    aps_trigger_spec *t, date;
    aps_trigger *compiled = NULL;
    aps_error inner;
    int rc;

    *out = NULL;
    if (!src) {
        /* APScheduler: add_job() without a trigger runs once, at
         * next_run_time or now. */
        memset(&date, 0, sizeof date);
        date.kind = APS_TRIGGER_DATE;
        date.u.date.run_date = next_run_time;
        src = &date;
    }
    t = aps__jcalloc(1, sizeof *t);
    if (!t)
        return oom(err);
    rc = effective_at(t, src, "trigger", 0, default_tz, now, err);
    if (rc) {
        free(t);
        return rc;
    }
    /* The leaves were checked one by one; this checks the whole as the
     * scheduler will compile it, should trigger.c know more limits. */
    memset(&inner, 0, sizeof inner);
    rc = aps_trigger_create(t, default_tz, now, &compiled, &inner);
    aps_trigger_destroy(compiled);
    if (rc) {
        if (rc == APS_ENOMEM)
            oom(err);
        else
            set_err(err, rc, "trigger: %s", inner.msg);
        aps__trigger_spec_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Targets, labels, jobs: copy and free                                 */
/* ------------------------------------------------------------------ */

static void
strv_free_in(char **v, size_t n, const span *a)
{
    size_t i;

    if (!v)
        return;
    for (i = 0; i < n; i++)
        sfree(a, v[i]);
    sfree(a, v);
}

static void
strv_free(char **v, size_t n)
{
    strv_free_in(v, n, NULL);
}

static int
strv_copy(char ***dst, char *const *src, size_t n)
{
    size_t i;

    *dst = NULL;
    if (n == 0 || !src)
        return 0;
    *dst = aps__jcalloc(n, sizeof **dst);
    if (!*dst)
        return APS_ENOMEM;
    for (i = 0; i < n; i++)
        if (dup_opt(&(*dst)[i], src[i])) {
            strv_free(*dst, n);
            *dst = NULL;
            return APS_ENOMEM;
        }
    return 0;
}

static void
target_clear_in(aps_target *t, const span *a)
{
    switch (t->kind) {
    case APS_TARGET_COMMAND:
        strv_free_in(t->u.command.argv, t->u.command.argc, a);
        strv_free_in(t->u.command.env, t->u.command.envc, a);
        sfree(a, t->u.command.cwd);
        break;
    case APS_TARGET_REMOTE:
        sfree(a, t->u.remote.task);
        sfree(a, t->u.remote.args_json);
        sfree(a, t->u.remote.kwargs_json);
        sfree(a, t->u.remote.queue);
        break;
    case APS_TARGET_FUNCTION:
        sfree(a, t->u.function.name);
        sfree(a, t->u.function.arg);
        break;
    default:
        break;
    }
    memset(t, 0, sizeof *t);
}

static void
target_clear(aps_target *t)
{
    target_clear_in(t, NULL);
}

/* `default_queue`: a remote target without a queue gets "default". */
static int
target_copy(aps_target *dst, const aps_target *src, int default_queue)
{
    int rc = 0;

    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    switch (src->kind) {
    case APS_TARGET_COMMAND:
        dst->u.command.timeout_us = src->u.command.timeout_us;
        dst->u.command.max_output = src->u.command.max_output;
        rc = strv_copy(&dst->u.command.argv, src->u.command.argv, src->u.command.argc);
        if (!rc && dst->u.command.argv)
            dst->u.command.argc = src->u.command.argc;
        if (!rc)
            rc = strv_copy(&dst->u.command.env, src->u.command.env, src->u.command.envc);
        if (!rc && dst->u.command.env)
            dst->u.command.envc = src->u.command.envc;
        if (!rc)
            rc = dup_opt(&dst->u.command.cwd, src->u.command.cwd);
        break;
    case APS_TARGET_REMOTE:
        rc = dup_opt(&dst->u.remote.task, src->u.remote.task);
        if (!rc)
            rc = dup_opt(&dst->u.remote.args_json, src->u.remote.args_json);
        if (!rc)
            rc = dup_opt(&dst->u.remote.kwargs_json, src->u.remote.kwargs_json);
        if (!rc)
            rc = dup_opt(&dst->u.remote.queue,
                         src->u.remote.queue || !default_queue ? src->u.remote.queue : "default");
        break;
    case APS_TARGET_FUNCTION:
        rc = dup_opt(&dst->u.function.name, src->u.function.name);
        if (!rc)
            rc = dup_opt(&dst->u.function.arg, src->u.function.arg);
        break;
    default:
        break;
    }
    if (rc)
        target_clear(dst);
    return rc;
}

int
aps__target_copy(const aps_target *src, aps_target *dst)
{
    return target_copy(dst, src, 0);
}

void
aps__target_dispose(aps_target *t)
{
    target_clear(t);
}

static void
labels_free_in(aps_label *l, size_t n, const span *a)
{
    size_t i;

    if (!l)
        return;
    for (i = 0; i < n; i++) {
        sfree(a, l[i].key);
        sfree(a, l[i].value);
    }
    sfree(a, l);
}

static void
labels_free(aps_label *l, size_t n)
{
    labels_free_in(l, n, NULL);
}

/* `empty_values`: a NULL value becomes "" (specs); else stays NULL. */
static int
labels_copy(aps_label **dst, const aps_label *src, size_t n, int empty_values)
{
    size_t i;

    *dst = NULL;
    if (n == 0 || !src)
        return 0;
    *dst = aps__jcalloc(n, sizeof **dst);
    if (!*dst)
        return APS_ENOMEM;
    for (i = 0; i < n; i++)
        if (dup_opt(&(*dst)[i].key, src[i].key) ||
            dup_opt(&(*dst)[i].value, src[i].value || !empty_values ? src[i].value : "")) {
            labels_free(*dst, n);
            *dst = NULL;
            return APS_ENOMEM;
        }
    return 0;
}

/* Frees what a job owns, not the job itself. */
static void
job_clear_in(aps_job *j, const span *a)
{
    sfree(a, j->id);
    sfree(a, j->name);
    if (j->trigger) {
        trigger_clear_in(j->trigger, a);
        sfree(a, j->trigger);
    }
    target_clear_in(&j->target, a);
    sfree(a, j->executor);
    sfree(a, j->jobstore);
    labels_free_in(j->labels, j->n_labels, a);
    memset(j, 0, sizeof *j);
}

static void
job_clear(aps_job *j)
{
    job_clear_in(j, NULL);
}

/* The block a record's fields may share with it (see job.h). */
static span
rec_span(const aps__jobrec *r)
{
    span a = {(uintptr_t)r->arena, (uintptr_t)r->arena + r->arena_len};

    return a;
}

static int
job_copy_into(aps_job *dst, const aps_job *src)
{
    *dst = *src;
    dst->id = dst->name = dst->executor = dst->jobstore = NULL;
    dst->trigger = NULL;
    memset(&dst->target, 0, sizeof dst->target);
    dst->labels = NULL;
    dst->n_labels = 0;
    if (dup_opt(&dst->id, src->id) || dup_opt(&dst->name, src->name) ||
        dup_opt(&dst->executor, src->executor) || dup_opt(&dst->jobstore, src->jobstore) ||
        target_copy(&dst->target, &src->target, 0) ||
        labels_copy(&dst->labels, src->labels, src->n_labels, 0))
        goto fail;
    if (dst->labels)
        dst->n_labels = src->n_labels;
    if (src->trigger && aps__trigger_spec_copy(src->trigger, &dst->trigger))
        goto fail;
    return 0;

fail:
    job_clear(dst);
    return APS_ENOMEM;
}

void
aps_job_free(aps_job *job)
{
    if (!job)
        return;
    job_clear(job);
    free(job);
}

void
aps_job_list_free(aps_job **jobs, size_t n)
{
    size_t i;

    if (!jobs)
        return;
    for (i = 0; i < n; i++)
        aps_job_free(jobs[i]);
    free(jobs);
}

int
aps__job_copy(const aps_job *src, aps_job **out)
{
    aps_job *j;

    *out = NULL;
    j = aps__jcalloc(1, sizeof *j);
    if (!j)
        return APS_ENOMEM;
    if (job_copy_into(j, src)) {
        free(j);
        return APS_ENOMEM;
    }
    *out = j;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Records                                                              */
/* ------------------------------------------------------------------ */

void
aps__run_rec_clear(aps__run_rec *rr)
{
    free(rr->run_times);
    memset(rr, 0, sizeof *rr);
}

void
aps__pending_clear(aps__pending *p)
{
    free(p->run_times);
    memset(p, 0, sizeof *p);
}

void
aps__jobrec_free(aps__jobrec *r)
{
    size_t i;

    if (!r)
        return;
    span a = rec_span(r);
    job_clear_in(&r->job, r->arena ? &a : NULL);
    if (r->running)
        for (i = 0; i < r->n_running; i++)
            aps__run_rec_clear(&r->running[i]);
    free(r->running);
    if (r->pending)
        for (i = 0; i < r->n_pending; i++)
            aps__pending_clear(&r->pending[i]);
    free(r->pending);
    free(r->lateness);
    free(r);
}

static int
times_copy(aps_time **dst, const aps_time *src, size_t n)
{
    *dst = NULL;
    if (n == 0 || !src)
        return 0;
    *dst = aps__jmalloc(n * sizeof **dst);
    if (!*dst)
        return APS_ENOMEM;
    memcpy(*dst, src, n * sizeof **dst);
    return 0;
}

int
aps__jobrec_copy(const aps__jobrec *src, aps__jobrec **out)
{
    aps__jobrec *r;
    size_t i;

    *out = NULL;
    r = aps__jcalloc(1, sizeof *r);
    if (!r)
        return APS_ENOMEM;
    if (job_copy_into(&r->job, &src->job))
        goto fail;
    if (src->lateness) {
        r->lateness = aps__jcalloc(APS__LATENESS_WINDOW, sizeof *r->lateness);
        if (!r->lateness)
            goto fail;
        memcpy(r->lateness, src->lateness, APS__LATENESS_WINDOW * sizeof *r->lateness);
    }
    r->n_lateness = src->n_lateness;
    r->lateness_pos = src->lateness_pos;
    if (src->n_running && src->running) {
        r->running = aps__jcalloc(src->n_running, sizeof *r->running);
        if (!r->running)
            goto fail;
        r->n_running = src->n_running;
        for (i = 0; i < src->n_running; i++) {
            r->running[i] = src->running[i];
            r->running[i].run_times = NULL;
            r->running[i].n_run_times = 0;
            if (times_copy(&r->running[i].run_times, src->running[i].run_times,
                           src->running[i].n_run_times))
                goto fail;
            if (r->running[i].run_times)
                r->running[i].n_run_times = src->running[i].n_run_times;
        }
    }
    if (src->n_pending && src->pending) {
        r->pending = aps__jcalloc(src->n_pending, sizeof *r->pending);
        if (!r->pending)
            goto fail;
        r->n_pending = src->n_pending;
        for (i = 0; i < src->n_pending; i++) {
            r->pending[i].backfill = src->pending[i].backfill;
            if (times_copy(&r->pending[i].run_times, src->pending[i].run_times,
                           src->pending[i].n_run_times))
                goto fail;
            if (r->pending[i].run_times)
                r->pending[i].n_run_times = src->pending[i].n_run_times;
        }
    }
    *out = r;
    return 0;

fail:
    aps__jobrec_free(r);
    return APS_ENOMEM;
}

int
aps__job_from_rec(const aps__jobrec *r, aps_job **out)
{
    aps_job *j;
    int rc;

    rc = aps__job_copy(&r->job, &j);
    if (rc) {
        *out = NULL;
        return rc;
    }
    j->running_instances = (uint32_t)r->n_running;
    j->queued_runs = (uint32_t)r->n_pending;
    aps__jobrec_lateness_stats(r, &j->stats);
    *out = j;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Lateness                                                             */
/* ------------------------------------------------------------------ */

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest rank: the ceil(p/100 * n)-th smallest sample. */
static int64_t
nearest_rank(const int64_t *sorted, uint32_t n, uint32_t p)
{
    uint64_t rank = ((uint64_t)p * n + 99) / 100;

    if (rank < 1)
        rank = 1;
    return sorted[rank - 1];
}

void
aps__jobrec_lateness_stats(const aps__jobrec *r, aps_job_stats *stats)
{
    int64_t sorted[APS__LATENESS_WINDOW];
    uint32_t n = r->n_lateness > APS__LATENESS_WINDOW ? APS__LATENESS_WINDOW : r->n_lateness;

    stats->lateness_samples = n;
    if (n == 0) {
        stats->lateness_p50_us = stats->lateness_p90_us = stats->lateness_p99_us = 0;
        stats->lateness_max_us = 0;
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        sorted[i] = r->lateness ? r->lateness[i] : 0;
    qsort(sorted, n, sizeof sorted[0], cmp_i64);
    stats->lateness_p50_us = nearest_rank(sorted, n, 50);
    stats->lateness_p90_us = nearest_rank(sorted, n, 90);
    stats->lateness_p99_us = nearest_rank(sorted, n, 99);
    stats->lateness_max_us = sorted[n - 1];
}

int32_t
aps__clamp_lateness(int64_t us)
{
    return us > INT32_MAX ? INT32_MAX : us < INT32_MIN ? INT32_MIN : (int32_t)us;
}

/* The percentiles are computed when a job is read (aps__job_from_rec), not
 * here: this runs once per finished run. */
void
aps__jobrec_add_lateness(aps__jobrec *r, int64_t lateness_us)
{
    if (!r->lateness) {
        r->lateness = aps__jcalloc(APS__LATENESS_WINDOW, sizeof *r->lateness);
        if (!r->lateness)
            return; /* out of memory: the sample is dropped, nothing else */
        r->n_lateness = r->lateness_pos = 0;
    }
    if (r->lateness_pos >= APS__LATENESS_WINDOW)
        r->lateness_pos = 0;
    r->lateness[r->lateness_pos] = aps__clamp_lateness(lateness_us);
    r->lateness_pos = (r->lateness_pos + 1) % APS__LATENESS_WINDOW;
    if (r->n_lateness < APS__LATENESS_WINDOW)
        r->n_lateness++;
}

/* ------------------------------------------------------------------ */
/* Validation and fields                                                */
/* ------------------------------------------------------------------ */

static int
check_target(const aps_target *t, aps_error *err)
{
    size_t i, where = 0;
    const char *why = NULL, *eq;
    char top = 0;

    switch (t->kind) {
    case APS_TARGET_COMMAND:
        if (t->u.command.argc == 0 || !t->u.command.argv)
            return set_err(err, APS_EINVAL, "target.command.argv: must not be empty");
        if (!t->u.command.argv[0] || !t->u.command.argv[0][0])
            return set_err(err, APS_EINVAL, "target.command.argv[0]: must not be empty");
        for (i = 1; i < t->u.command.argc; i++)
            if (!t->u.command.argv[i])
                return set_err(err, APS_EINVAL, "target.command.argv[%zu]: missing", i);
        if (t->u.command.envc && !t->u.command.env)
            return set_err(err, APS_EINVAL, "target.command.env: missing");
        for (i = 0; i < t->u.command.envc; i++) {
            if (!t->u.command.env[i])
                return set_err(err, APS_EINVAL, "target.command.env[%zu]: missing", i);
            /* The key ends at the first '=', so it never contains one. */
            eq = strchr(t->u.command.env[i], '=');
            if (!eq)
                return set_err(err, APS_EINVAL, "target.command.env[%zu]: must be KEY=VALUE", i);
            if (eq == t->u.command.env[i])
                return set_err(err, APS_EINVAL,
                               "target.command.env[%zu]: the key must not be empty", i);
        }
        if (t->u.command.cwd && t->u.command.cwd[0] != '/')
            return set_err(err, APS_EINVAL, "target.command.cwd: must be an absolute path");
        if (t->u.command.timeout_us < 0)
            return set_err(err, APS_EINVAL, "target.command.timeout: must not be negative");
        return 0;
    case APS_TARGET_REMOTE:
        if (!t->u.remote.task || !t->u.remote.task[0])
            return set_err(err, APS_EINVAL, "target.remote.task: must not be empty");
        if (t->u.remote.args_json) {
            if (aps__json_check(t->u.remote.args_json, strlen(t->u.remote.args_json), &top, &where,
                                &why))
                return set_err(err, APS_EINVAL,
                               "target.remote.args_json: invalid JSON at byte %zu: %s", where, why);
            if (top != '[')
                return set_err(err, APS_EINVAL, "target.remote.args_json: must be a JSON array");
        }
        if (t->u.remote.kwargs_json) {
            if (aps__json_check(t->u.remote.kwargs_json, strlen(t->u.remote.kwargs_json), &top,
                                &where, &why))
                return set_err(err, APS_EINVAL,
                               "target.remote.kwargs_json: invalid JSON at byte %zu: %s", where,
                               why);
            if (top != '{')
                return set_err(err, APS_EINVAL, "target.remote.kwargs_json: must be a JSON object");
        }
        if (t->u.remote.queue)
            return check_name("target.remote.queue", t->u.remote.queue, APS__NAME64_MAX, err);
        return 0;
    case APS_TARGET_FUNCTION:
        if (!t->u.function.name || !t->u.function.name[0])
            return set_err(err, APS_EINVAL, "target.function.name: must not be empty");
        return 0;
    default:
        return set_err(err, APS_EINVAL, "target: one of command, remote, function is required");
    }
}

static int
check_labels(const aps_label *l, size_t n, aps_error *err)
{
    size_t i, j;

    if (n > APS__LABELS_MAX)
        return set_err(err, APS_EINVAL, "labels: %zu given, at most %d allowed", n,
                       APS__LABELS_MAX);
    if (n && !l)
        return set_err(err, APS_EINVAL, "labels: missing");
    for (i = 0; i < n; i++) {
        if (!l[i].key || !label_chars_ok(l[i].key, 1) ||
            !((l[i].key[0] >= 'A' && l[i].key[0] <= 'Z') ||
              (l[i].key[0] >= 'a' && l[i].key[0] <= 'z') ||
              (l[i].key[0] >= '0' && l[i].key[0] <= '9')))
            return set_err(err, APS_EINVAL,
                           "labels[%zu].key: must be 1-63 characters of [A-Za-z0-9._/-] "
                           "starting with a letter or digit",
                           i);
        if (l[i].value && !label_chars_ok(l[i].value, 0))
            return set_err(err, APS_EINVAL,
                           "labels[%zu].value: must be 0-63 characters of [A-Za-z0-9._/-]", i);
        for (j = 0; j < i; j++)
            if (strcmp(l[j].key, l[i].key) == 0)
                return set_err(err, APS_EINVAL, "labels[%zu].key: duplicate key \"%s\"", i,
                               l[i].key);
    }
    return 0;
}

/*
 * Validates field `bit` (one APS_MODIFY_* bit) of `spec` and, on success,
 * replaces it in `job` (freeing the old value). On failure `job` is
 * unchanged. NAME needs job->id set.
 */
static int
set_field(aps_job *job, const aps_job_spec *spec, uint32_t bit, const char *default_tz,
          aps_time now, aps_error *err)
{
    aps_trigger_spec *trig = NULL;
    aps_target target;
    aps_label *labels = NULL;
    char *s = NULL;
    int rc;

    switch (bit) {
    case APS_MODIFY_NAME:
        if (spec->name) {
            size_t n = strlen(spec->name);

            if (n > APS__NAME_MAX)
                return set_err(err, APS_EINVAL, "name: %zu bytes, at most %d allowed", n,
                               APS__NAME_MAX);
            if (!utf8_valid(spec->name))
                return set_err(err, APS_EINVAL, "name: not valid UTF-8");
        }
        if (dup_opt(&s, spec->name ? spec->name : job->id))
            return oom(err);
        free(job->name);
        job->name = s;
        return 0;
    case APS_MODIFY_TRIGGER:
        rc = effective_trigger(spec->trigger, spec->next_run_time, default_tz, now, &trig, err);
        if (rc)
            return rc;
        aps__trigger_spec_free(job->trigger);
        job->trigger = trig;
        return 0;
    case APS_MODIFY_TARGET:
        rc = check_target(&spec->target, err);
        if (rc)
            return rc;
        if (target_copy(&target, &spec->target, 1))
            return oom(err);
        target_clear(&job->target);
        job->target = target;
        return 0;
    case APS_MODIFY_EXECUTOR:
    case APS_MODIFY_JOBSTORE: {
        const char *field = bit == APS_MODIFY_EXECUTOR ? "executor" : "jobstore";
        const char *v = bit == APS_MODIFY_EXECUTOR ? spec->executor : spec->jobstore;
        char **slot = bit == APS_MODIFY_EXECUTOR ? &job->executor : &job->jobstore;

        if (v && (rc = check_name(field, v, APS__NAME64_MAX, err)))
            return rc;
        if (dup_opt(&s, v ? v : "default"))
            return oom(err);
        free(*slot);
        *slot = s;
        return 0;
    }
    case APS_MODIFY_MISFIRE:
        if (spec->misfire != APS_MISFIRE_DEFAULT && spec->misfire != APS_MISFIRE_DURATION &&
            spec->misfire != APS_MISFIRE_UNLIMITED)
            return set_err(err, APS_EINVAL, "misfire_grace_time: unknown kind %d",
                           (int)spec->misfire);
        if (spec->misfire == APS_MISFIRE_DURATION && spec->misfire_grace_us <= 0)
            return set_err(err, APS_EINVAL, "misfire_grace_time: must be positive");
        job->misfire = spec->misfire;
        job->misfire_grace_us = spec->misfire == APS_MISFIRE_DURATION ? spec->misfire_grace_us : 0;
        return 0;
    case APS_MODIFY_COALESCE:
        if (spec->coalesce < -1 || spec->coalesce > 1)
            return set_err(err, APS_EINVAL, "coalesce: must be -1 (default), 0 or 1");
        job->coalesce = spec->coalesce;
        return 0;
    case APS_MODIFY_MAX_INSTANCES:
        if (spec->max_instances < 0)
            return set_err(err, APS_EINVAL, "max_instances: must not be negative");
        job->max_instances = spec->max_instances;
        return 0;
    case APS_MODIFY_OVERLAP:
        if (spec->overlap < APS_OVERLAP_DEFAULT || spec->overlap > APS_OVERLAP_CANCEL_RUNNING)
            return set_err(err, APS_EINVAL, "overlap_policy: unknown policy %d",
                           (int)spec->overlap);
        job->overlap = spec->overlap;
        return 0;
    case APS_MODIFY_LABELS:
        rc = check_labels(spec->labels, spec->n_labels, err);
        if (rc)
            return rc;
        if (labels_copy(&labels, spec->labels, spec->n_labels, 1))
            return oom(err);
        labels_free(job->labels, job->n_labels);
        job->labels = labels;
        job->n_labels = labels ? spec->n_labels : 0;
        return 0;
    case APS_MODIFY_NEXT_RUN_TIME:
        /* Only modify comes here: from_spec handles next_run_time itself. */
        if (spec->next_run_time == APS_TIME_NONE)
            return set_err(err, APS_EINVAL,
                           "next_run_time: must be set (pause the job to clear it)");
        job->next_run_time = spec->next_run_time;
        job->paused = 0; /* as APScheduler: a next run time resumes the job */
        return 0;
    default:
        return set_err(err, APS_EINVAL, "mask: unknown field bit 0x%x", bit);
    }
}

/* The spec fields from_spec takes, in the order they are validated (which
 * decides the message when several are wrong: the struct's order). */
static const uint32_t spec_fields[] = {
    APS_MODIFY_NAME,     APS_MODIFY_TRIGGER, APS_MODIFY_TARGET,   APS_MODIFY_EXECUTOR,
    APS_MODIFY_JOBSTORE, APS_MODIFY_MISFIRE, APS_MODIFY_COALESCE, APS_MODIFY_MAX_INSTANCES,
    APS_MODIFY_OVERLAP,  APS_MODIFY_LABELS,
};

#define APS__MODIFY_ALL                                                                            \
    (APS_MODIFY_NAME | APS_MODIFY_TRIGGER | APS_MODIFY_TARGET | APS_MODIFY_EXECUTOR |              \
     APS_MODIFY_MISFIRE | APS_MODIFY_COALESCE | APS_MODIFY_MAX_INSTANCES | APS_MODIFY_OVERLAP |    \
     APS_MODIFY_LABELS | APS_MODIFY_NEXT_RUN_TIME | APS_MODIFY_JOBSTORE)

int
aps__jobrec_from_spec(const aps_job_spec *spec, const char *default_tz, aps_time now,
                      aps__jobrec **out, aps_error *err)
{
    aps__jobrec *r = NULL;
    size_t i;
    int rc;

    if (!out)
        return set_err(err, APS_EINVAL, "spec: no output");
    *out = NULL;
    if (!spec)
        return set_err(err, APS_EINVAL, "spec: missing");
    if (spec->id && (rc = check_name("id", spec->id, APS__ID_MAX, err)))
        return rc;
    r = aps__jcalloc(1, sizeof *r);
    if (!r)
        return oom(err);
    r->job.next_run_time = APS_TIME_NONE;
    r->job.stats.last_run_time = APS_TIME_NONE;
    if (spec->id) {
        r->job.id = aps__jstrdup(spec->id);
        if (!r->job.id) {
            rc = oom(err);
            goto fail;
        }
    } else {
        char id[APS__JOB_ID_GEN_LEN + 1];

        rc = aps__job_id_generate(id);
        if (rc) {
            set_err(err, rc, "id: cannot generate an id (no random bytes)");
            goto fail;
        }
        r->job.id = aps__jstrdup(id);
        if (!r->job.id) {
            rc = oom(err);
            goto fail;
        }
    }
    for (i = 0; i < sizeof spec_fields / sizeof spec_fields[0]; i++) {
        rc = set_field(&r->job, spec, spec_fields[i], default_tz, now, err);
        if (rc)
            goto fail;
    }
    if (spec->paused && spec->next_run_time != APS_TIME_NONE) {
        rc = set_err(err, APS_EINVAL, "next_run_time: must not be set on a paused job");
        goto fail;
    }
    r->job.paused = spec->paused ? 1 : 0;
    r->job.next_run_time = spec->paused ? APS_TIME_NONE : spec->next_run_time;
    r->job.create_time = r->job.update_time = now;
    *out = r;
    return 0;

fail:
    aps__jobrec_free(r);
    return rc;
}

int
aps__jobrec_apply(aps__jobrec *r, const aps_job_spec *spec, uint32_t mask, const char *default_tz,
                  aps_time now, aps_error *err)
{
    static const uint32_t order[] = {
        APS_MODIFY_NAME,     APS_MODIFY_TRIGGER, APS_MODIFY_TARGET,        APS_MODIFY_EXECUTOR,
        APS_MODIFY_JOBSTORE, APS_MODIFY_MISFIRE, APS_MODIFY_COALESCE,      APS_MODIFY_MAX_INSTANCES,
        APS_MODIFY_OVERLAP,  APS_MODIFY_LABELS,  APS_MODIFY_NEXT_RUN_TIME,
    };
    aps_job tmp;
    size_t i;
    int rc;

    if (!r || !spec)
        return set_err(err, APS_EINVAL, "spec: missing");
    if (mask & ~(uint32_t)APS__MODIFY_ALL)
        return set_err(err, APS_EINVAL, "mask: unknown field bits 0x%x",
                       mask & ~(uint32_t)APS__MODIFY_ALL);
    if ((mask & APS_MODIFY_TRIGGER) && !spec->trigger)
        return set_err(err, APS_EINVAL, "trigger: required");
    /* All or nothing: change a copy, then swap it in. */
    if (job_copy_into(&tmp, &r->job))
        return oom(err);
    for (i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (!(mask & order[i]))
            continue;
        rc = set_field(&tmp, spec, order[i], default_tz, now, err);
        if (rc) {
            job_clear(&tmp);
            return rc;
        }
    }
    tmp.update_time = now;
    span a = rec_span(r);
    job_clear_in(&r->job, r->arena ? &a : NULL);
    r->job = tmp;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Ids                                                                  */
/* ------------------------------------------------------------------ */

/* Random bytes are drawn from OpenSSL in blocks: one RAND_bytes call costs
 * about as much as the rest of a scheduled run (a run id per run), and
 * most of that cost is per call, not per byte. Each thread keeps its own
 * block; a fork makes the child's blocks stale (it would hand out the same
 * ids as the parent), so they are refilled after one. */
#define ID_BLOCK 512
/* Hex digits of milliseconds leading an ordered id: 48 bits, as UUIDv7. */
#define ORDERED_ID_TIME_HEX 12
_Static_assert(APS__JOB_ID_GEN_LEN == ORDERED_ID_TIME_HEX + 32,
               "a generated job id: the time, then 128 random bits in hex");

static unsigned long fork_generation; /* bumped in a child after fork */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void
on_fork_child(void)
{
    __atomic_add_fetch(&fork_generation, 1, __ATOMIC_RELAXED);
}

static void
fork_hook_install(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

static _Thread_local struct {
    unsigned char b[ID_BLOCK];
    size_t pos;             /* bytes used; ID_BLOCK = empty */
    unsigned long gen;      /* fork_generation when filled */
    int filled;
} id_pool;

static int
random16(unsigned char out[16])
{
    unsigned long gen;

    pthread_once(&fork_once, fork_hook_install);
    gen = __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
    if (!id_pool.filled || id_pool.gen != gen || id_pool.pos + 16 > ID_BLOCK) {
        if (RAND_bytes(id_pool.b, ID_BLOCK) != 1) {
            id_pool.filled = 0;
            return APS_EIO;
        }
        id_pool.filled = 1;
        id_pool.gen = gen;
        id_pool.pos = 0;
    }
    memcpy(out, id_pool.b + id_pool.pos, 16);
    /* Used bytes are not kept around. */
    memset(id_pool.b + id_pool.pos, 0, 16);
    id_pool.pos += 16;
    return 0;
}

static const char hex_digits[] = "0123456789abcdef";

int
aps__id_generate(char out[33])
{
    unsigned char b[16];
    int i;

    if (random16(b) != 0)
        return APS_EIO;
    for (i = 0; i < 16; i++) {
        out[2 * i] = hex_digits[b[i] >> 4];
        out[2 * i + 1] = hex_digits[b[i] & 0x0F];
    }
    out[32] = '\0';
    return 0;
}

/* The wall clock's milliseconds as ORDERED_ID_TIME_HEX hex digits into out. */
static void
put_time_hex(char *out)
{
    aps_time now = aps_time_now();
    uint64_t ms = now > 0 ? (uint64_t)(now / 1000) : 0;

    for (int i = ORDERED_ID_TIME_HEX - 1; i >= 0; i--, ms >>= 4)
        out[i] = hex_digits[ms & 0x0F];
}

int
aps__id_generate_ordered(char out[33])
{
    /* 128 random bits, then the time written over the first 48. */
    if (aps__id_generate(out) != 0)
        return APS_EIO;
    put_time_hex(out);
    return 0;
}

int
aps__job_id_generate(char out[APS__JOB_ID_GEN_LEN + 1])
{
    if (aps__id_generate(out + ORDERED_ID_TIME_HEX) != 0)
        return APS_EIO;
    put_time_hex(out);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Events                                                               */
/* ------------------------------------------------------------------ */

static const char *const event_names[] = {
    [APS_EVENT_SCHEDULER_STARTED] = "SCHEDULER_STARTED",
    [APS_EVENT_SCHEDULER_SHUTDOWN] = "SCHEDULER_SHUTDOWN",
    [APS_EVENT_SCHEDULER_PAUSED] = "SCHEDULER_PAUSED",
    [APS_EVENT_SCHEDULER_RESUMED] = "SCHEDULER_RESUMED",
    [APS_EVENT_EXECUTOR_ADDED] = "EXECUTOR_ADDED",
    [APS_EVENT_EXECUTOR_REMOVED] = "EXECUTOR_REMOVED",
    [APS_EVENT_JOBSTORE_ADDED] = "JOBSTORE_ADDED",
    [APS_EVENT_JOBSTORE_REMOVED] = "JOBSTORE_REMOVED",
    [APS_EVENT_ALL_JOBS_REMOVED] = "ALL_JOBS_REMOVED",
    [APS_EVENT_JOB_ADDED] = "JOB_ADDED",
    [APS_EVENT_JOB_REMOVED] = "JOB_REMOVED",
    [APS_EVENT_JOB_MODIFIED] = "JOB_MODIFIED",
    [APS_EVENT_JOB_EXECUTED] = "JOB_EXECUTED",
    [APS_EVENT_JOB_ERROR] = "JOB_ERROR",
    [APS_EVENT_JOB_MISSED] = "JOB_MISSED",
    [APS_EVENT_JOB_SUBMITTED] = "JOB_SUBMITTED",
    [APS_EVENT_JOB_MAX_INSTANCES] = "JOB_MAX_INSTANCES",
};

const char *
aps_event_type_name(aps_event_type type)
{
    if ((int)type <= 0 || (size_t)type >= sizeof event_names / sizeof event_names[0] ||
        !event_names[type])
        return "UNKNOWN";
    return event_names[type];
}

void
aps__outcome_dispose(aps_outcome *o)
{
    free(o->stdout_tail);
    free(o->stderr_tail);
    free(o->error);
    free(o->traceback);
    free(o->return_json);
    free(o->error_type);
    free(o->worker_id);
    memset(o, 0, sizeof(*o));
}

static void
outcome_free(aps_outcome *o)
{
    if (!o)
        return;
    aps__outcome_dispose(o);
    free(o);
}

void
aps_event_free(aps_event *ev)
{
    if (!ev)
        return;
    if (!ev->packed) {
        free(ev->job_id);
        free(ev->jobstore);
        free(ev->executor);
        free(ev->run_times);
        free(ev->run_id);
    }
    outcome_free(ev->outcome);
    free(ev->message);
    free(ev);
}

static int
blob_copy(void **dst, size_t *dlen, const void *src, size_t n)
{
    *dst = NULL;
    *dlen = 0;
    if (!src || n == 0)
        return 0;
    *dst = aps__jmalloc(n);
    if (!*dst)
        return APS_ENOMEM;
    memcpy(*dst, src, n);
    *dlen = n;
    return 0;
}

int
aps__outcome_copy(const aps_outcome *so, aps_outcome **out)
{
    aps_outcome *o;

    *out = NULL;
    o = aps__jcalloc(1, sizeof *o);
    if (!o)
        return APS_ENOMEM;
    o->status = so->status;
    o->has_exit_code = so->has_exit_code;
    o->exit_code = so->exit_code;
    o->signal = so->signal;
    o->stdout_truncated = so->stdout_truncated;
    o->stderr_truncated = so->stderr_truncated;
    o->start_time = so->start_time;
    o->end_time = so->end_time;
    if (blob_copy(&o->stdout_tail, &o->stdout_len, so->stdout_tail, so->stdout_len) ||
        blob_copy(&o->stderr_tail, &o->stderr_len, so->stderr_tail, so->stderr_len) ||
        dup_opt(&o->error, so->error) || dup_opt(&o->traceback, so->traceback) ||
        dup_opt(&o->return_json, so->return_json) || dup_opt(&o->error_type, so->error_type) ||
        dup_opt(&o->worker_id, so->worker_id)) {
        outcome_free(o);
        return APS_ENOMEM;
    }
    *out = o;
    return 0;
}

int
aps__event_copy(const aps_event *src, aps_event **out)
{
    aps_event *ev;

    *out = NULL;
    ev = aps__jcalloc(1, sizeof *ev);
    if (!ev)
        return APS_ENOMEM;
    ev->sequence = src->sequence;
    ev->type = src->type;
    ev->time = src->time;
    if (dup_opt(&ev->job_id, src->job_id) || dup_opt(&ev->jobstore, src->jobstore) ||
        dup_opt(&ev->executor, src->executor) || dup_opt(&ev->run_id, src->run_id) ||
        dup_opt(&ev->message, src->message) ||
        times_copy(&ev->run_times, src->run_times, src->n_run_times))
        goto fail;
    if (ev->run_times)
        ev->n_run_times = src->n_run_times;
    if (src->outcome && aps__outcome_copy(src->outcome, &ev->outcome))
        goto fail;
    *out = ev;
    return 0;

fail:
    aps_event_free(ev);
    return APS_ENOMEM;
}
