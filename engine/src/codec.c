/*
 * codec.c: the binary formats of job records and events in the store.
 *
 * Layout: a format byte (APS__JOBREC_FORMAT_V1, APS__EVENT_FORMAT_V1), then
 * fields in a fixed order, integers little-endian, strings and blobs as a
 * u32 length (APS__CODEC_NULL = absent) and the bytes, arrays as a u32
 * count and the elements. No field tags: a new field means a new format
 * byte, and the decoder of the old one stays.
 *
 * Why not protobuf: the engine has no protobuf dependency (DESIGN.md), and
 * a record holds engine-only state (running and pending runs, the lateness
 * ring) that the API never shows.
 *
 * The decoder trusts nothing: every read is bounds-checked, counts are
 * capped by the bytes left (so a forged count cannot make it allocate more
 * than the input justifies), trigger nesting by APS__CODEC_MAX_DEPTH,
 * enums by their ranges, and the record must end exactly at the last byte.
 */
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "codec.h"
#include "job.h"

/* ------------------------------------------------------------------ */
/* Writer                                                               */
/* ------------------------------------------------------------------ */

void
aps__w_fail(aps__wbuf *w, int rc)
{
    if (!w->rc)
        w->rc = rc;
}

/* Reserves n bytes at the end; NULL after an error. */
static unsigned char *
w_grow(aps__wbuf *w, size_t n)
{
    unsigned char *p;
    size_t cap;

    if (w->rc)
        return NULL;
    if (n > SIZE_MAX / 2 - w->len) {
        aps__w_fail(w, APS_ENOMEM);
        return NULL;
    }
    if (w->len + n > w->cap) {
        cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        p = aps__jrealloc(w->p, cap);
        if (!p) {
            aps__w_fail(w, APS_ENOMEM);
            return NULL;
        }
        w->p = p;
        w->cap = cap;
    }
    p = w->p + w->len;
    w->len += n;
    return p;
}

void
aps__w_u8(aps__wbuf *w, uint8_t v)
{
    unsigned char *p = w_grow(w, 1);

    if (p)
        p[0] = v;
}

void
aps__w_u32(aps__wbuf *w, uint32_t v)
{
    unsigned char *p = w_grow(w, 4);
    int i;

    if (p)
        for (i = 0; i < 4; i++)
            p[i] = (unsigned char)(v >> (8 * i));
}

void
aps__w_u64(aps__wbuf *w, uint64_t v)
{
    unsigned char *p = w_grow(w, 8);
    int i;

    if (p)
        for (i = 0; i < 8; i++)
            p[i] = (unsigned char)(v >> (8 * i));
}

void
aps__w_i64(aps__wbuf *w, int64_t v)
{
    aps__w_u64(w, (uint64_t)v);
}

void
aps__w_i32(aps__wbuf *w, int32_t v)
{
    aps__w_u32(w, (uint32_t)v);
}

/* Length-prefixed bytes; p NULL = the NULL marker. */
static void
w_bytes(aps__wbuf *w, const void *p, size_t n)
{
    unsigned char *d;

    if (!p) {
        if (n)
            aps__w_fail(w, APS_EINVAL);
        aps__w_u32(w, APS__CODEC_NULL);
        return;
    }
    if (n >= APS__CODEC_NULL) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    aps__w_u32(w, (uint32_t)n);
    d = w_grow(w, n);
    if (d && n)
        memcpy(d, p, n);
}

void
aps__w_blob(aps__wbuf *w, const void *p, size_t n)
{
    /* One encoding per value: an empty blob is written as absent. */
    w_bytes(w, n ? p : NULL, n);
}

void
aps__w_str(aps__wbuf *w, const char *s)
{
    w_bytes(w, s, s ? strlen(s) : 0);
}

void
aps__w_str_req(aps__wbuf *w, const char *s)
{
    if (!s)
        aps__w_fail(w, APS_EINVAL);
    aps__w_str(w, s);
}

/* A fixed-size char array: bounded by its size even if unterminated. */
static void
w_str_fixed(aps__wbuf *w, const char *s, size_t cap)
{
    w_bytes(w, s, strnlen(s, cap - 1));
}

/* ------------------------------------------------------------------ */
/* Reader                                                               */
/* ------------------------------------------------------------------ */

void
aps__r_fail(aps__rbuf *r, int rc)
{
    if (!r->rc)
        r->rc = rc;
}

/* The next n bytes, or NULL (and corrupt) if fewer remain. */
static const unsigned char *
r_take(aps__rbuf *r, size_t n)
{
    const unsigned char *p;

    if (r->rc)
        return NULL;
    if (n > r->len - r->pos) {
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    p = r->p + r->pos;
    r->pos += n;
    return p;
}

uint8_t
aps__r_u8(aps__rbuf *r)
{
    const unsigned char *p = r_take(r, 1);

    return p ? p[0] : 0;
}

int
aps__r_bool(aps__rbuf *r)
{
    uint8_t v = aps__r_u8(r);

    if (v > 1) {
        aps__r_fail(r, APS_ECORRUPT);
        return 0;
    }
    return v;
}

uint32_t
aps__r_u32(aps__rbuf *r)
{
    const unsigned char *p = r_take(r, 4);

    if (!p)
        return 0;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t
aps__r_u64(aps__rbuf *r)
{
    const unsigned char *p = r_take(r, 8);
    uint64_t v = 0;
    int i;

    if (!p)
        return 0;
    for (i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

int64_t
aps__r_i64(aps__rbuf *r)
{
    /* Two's complement on every platform apsd targets; memcpy avoids the
     * implementation-defined conversion of values above INT64_MAX. */
    uint64_t u = aps__r_u64(r);
    int64_t v;

    memcpy(&v, &u, sizeof v);
    return v;
}

int32_t
aps__r_i32(aps__rbuf *r)
{
    uint32_t u = aps__r_u32(r);
    int32_t v;

    memcpy(&v, &u, sizeof v);
    return v;
}

size_t
aps__r_count(aps__rbuf *r, size_t min_size)
{
    uint32_t n = aps__r_u32(r);

    if (r->rc)
        return 0;
    if (min_size == 0)
        min_size = 1;
    if (n > (r->len - r->pos) / min_size) {
        aps__r_fail(r, APS_ECORRUPT);
        return 0;
    }
    return n;
}

/* A blob's bytes in place: *p NULL for the NULL marker. 0 or -1. */
static int
r_span(aps__rbuf *r, const unsigned char **p, size_t *n)
{
    uint32_t len = aps__r_u32(r);

    *p = NULL;
    *n = 0;
    if (r->rc)
        return -1;
    if (len == APS__CODEC_NULL)
        return 0;
    *p = r_take(r, len);
    if (!*p)
        return -1;
    *n = len;
    return 0;
}

char *
aps__r_str(aps__rbuf *r)
{
    const unsigned char *p;
    size_t n;
    char *s;

    if (r_span(r, &p, &n) || !p)
        return NULL;
    if (memchr(p, '\0', n)) {
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    s = aps__jmalloc(n + 1);
    if (!s) {
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

char *
aps__r_str_req(aps__rbuf *r)
{
    char *s = aps__r_str(r);

    if (!s)
        aps__r_fail(r, APS_ECORRUPT);
    return s;
}

void
aps__r_str_fixed(aps__rbuf *r, char *dst, size_t cap)
{
    const unsigned char *p;
    size_t n;

    dst[0] = '\0';
    if (r_span(r, &p, &n))
        return;
    if (!p || n >= cap || memchr(p, '\0', n)) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
}

void *
aps__r_blob(aps__rbuf *r, size_t *n)
{
    const unsigned char *p;
    void *b;

    *n = 0;
    if (r_span(r, &p, n) || !p)
        return NULL;
    if (*n == 0) {
        /* The encoder writes an empty blob as absent; accepting both would
         * give one value two encodings. */
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    b = aps__jmalloc(*n);
    if (!b) {
        *n = 0;
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    memcpy(b, p, *n);
    return b;
}

/* ------------------------------------------------------------------ */
/* Shared pieces                                                        */
/* ------------------------------------------------------------------ */

static void
w_times(aps__wbuf *w, const aps_time *t, size_t n)
{
    size_t i;

    if (n && !t) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    if (n > UINT32_MAX) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    aps__w_u32(w, (uint32_t)n);
    for (i = 0; i < n; i++)
        aps__w_i64(w, t[i]);
}

static aps_time *
r_times(aps__rbuf *r, size_t *n)
{
    size_t count = aps__r_count(r, 8), i;
    aps_time *t;

    *n = 0;
    if (r->rc || count == 0)
        return NULL;
    t = aps__jmalloc(count * sizeof *t);
    if (!t) {
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    for (i = 0; i < count; i++)
        t[i] = aps__r_i64(r);
    *n = count;
    return t;
}

/* Sizes of the smallest encodings, for aps__r_count. */
#define MIN_TRIGGER 9 /* kind + jitter; a combo adds a count */
#define MIN_STR 4
#define MIN_LABEL (2 * MIN_STR)
#define MIN_RUN (2 * MIN_STR + 8 + 4)
#define MIN_PENDING (4 + 1)

/* ------------------------------------------------------------------ */
/* Triggers                                                             */
/* ------------------------------------------------------------------ */

static void
w_trigger(aps__wbuf *w, const aps_trigger_spec *t, int depth)
{
    size_t i;

    if (depth > APS__CODEC_MAX_DEPTH) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    aps__w_u8(w, (uint8_t)t->kind);
    aps__w_i64(w, t->jitter_us);
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        aps__w_str(w, t->u.cron.year);
        aps__w_str(w, t->u.cron.month);
        aps__w_str(w, t->u.cron.day);
        aps__w_str(w, t->u.cron.week);
        aps__w_str(w, t->u.cron.day_of_week);
        aps__w_str(w, t->u.cron.hour);
        aps__w_str(w, t->u.cron.minute);
        aps__w_str(w, t->u.cron.second);
        aps__w_str(w, t->u.cron.crontab);
        aps__w_i64(w, t->u.cron.start_date);
        aps__w_i64(w, t->u.cron.end_date);
        aps__w_str(w, t->u.cron.timezone);
        break;
    case APS_TRIGGER_INTERVAL:
        aps__w_i64(w, t->u.interval.weeks);
        aps__w_i64(w, t->u.interval.days);
        aps__w_i64(w, t->u.interval.hours);
        aps__w_i64(w, t->u.interval.minutes);
        aps__w_i64(w, t->u.interval.seconds);
        aps__w_i64(w, t->u.interval.microseconds);
        aps__w_i64(w, t->u.interval.start_date);
        aps__w_i64(w, t->u.interval.end_date);
        aps__w_str(w, t->u.interval.timezone);
        break;
    case APS_TRIGGER_DATE:
        aps__w_i64(w, t->u.date.run_date);
        aps__w_str(w, t->u.date.timezone);
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        aps__w_i32(w, t->u.calendar_interval.years);
        aps__w_i32(w, t->u.calendar_interval.months);
        aps__w_i32(w, t->u.calendar_interval.weeks);
        aps__w_i32(w, t->u.calendar_interval.days);
        aps__w_i32(w, t->u.calendar_interval.hour);
        aps__w_i32(w, t->u.calendar_interval.minute);
        aps__w_i32(w, t->u.calendar_interval.second);
        aps__w_i64(w, t->u.calendar_interval.start_date);
        aps__w_i64(w, t->u.calendar_interval.end_date);
        aps__w_str(w, t->u.calendar_interval.timezone);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (t->u.combo.count == 0 || !t->u.combo.triggers || t->u.combo.count > UINT32_MAX) {
            aps__w_fail(w, APS_EINVAL);
            return;
        }
        aps__w_u32(w, (uint32_t)t->u.combo.count);
        for (i = 0; i < t->u.combo.count && !w->rc; i++)
            w_trigger(w, &t->u.combo.triggers[i], depth + 1);
        break;
    default:
        aps__w_fail(w, APS_EINVAL);
        break;
    }
}

/*
 * Decodes one trigger into *t (zeroed by the caller). On error *t holds
 * what was decoded so far, which aps__trigger_spec_free-style clearing
 * handles: the kind is set before any owned field.
 */
static void
r_trigger(aps__rbuf *r, aps_trigger_spec *t, int depth)
{
    aps_trigger_spec *kids;
    size_t i, n;
    uint8_t kind;

    if (depth > APS__CODEC_MAX_DEPTH) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    kind = aps__r_u8(r);
    t->jitter_us = aps__r_i64(r);
    if (r->rc)
        return;
    if (kind < APS_TRIGGER_CRON || kind > APS_TRIGGER_ANY_OF) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    t->kind = (aps_trigger_kind)kind;
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        t->u.cron.year = aps__r_str(r);
        t->u.cron.month = aps__r_str(r);
        t->u.cron.day = aps__r_str(r);
        t->u.cron.week = aps__r_str(r);
        t->u.cron.day_of_week = aps__r_str(r);
        t->u.cron.hour = aps__r_str(r);
        t->u.cron.minute = aps__r_str(r);
        t->u.cron.second = aps__r_str(r);
        t->u.cron.crontab = aps__r_str(r);
        t->u.cron.start_date = aps__r_i64(r);
        t->u.cron.end_date = aps__r_i64(r);
        t->u.cron.timezone = aps__r_str(r);
        break;
    case APS_TRIGGER_INTERVAL:
        t->u.interval.weeks = aps__r_i64(r);
        t->u.interval.days = aps__r_i64(r);
        t->u.interval.hours = aps__r_i64(r);
        t->u.interval.minutes = aps__r_i64(r);
        t->u.interval.seconds = aps__r_i64(r);
        t->u.interval.microseconds = aps__r_i64(r);
        t->u.interval.start_date = aps__r_i64(r);
        t->u.interval.end_date = aps__r_i64(r);
        t->u.interval.timezone = aps__r_str(r);
        break;
    case APS_TRIGGER_DATE:
        t->u.date.run_date = aps__r_i64(r);
        t->u.date.timezone = aps__r_str(r);
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        t->u.calendar_interval.years = aps__r_i32(r);
        t->u.calendar_interval.months = aps__r_i32(r);
        t->u.calendar_interval.weeks = aps__r_i32(r);
        t->u.calendar_interval.days = aps__r_i32(r);
        t->u.calendar_interval.hour = aps__r_i32(r);
        t->u.calendar_interval.minute = aps__r_i32(r);
        t->u.calendar_interval.second = aps__r_i32(r);
        t->u.calendar_interval.start_date = aps__r_i64(r);
        t->u.calendar_interval.end_date = aps__r_i64(r);
        t->u.calendar_interval.timezone = aps__r_str(r);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        n = aps__r_count(r, MIN_TRIGGER);
        if (r->rc)
            return;
        if (n == 0) {
            aps__r_fail(r, APS_ECORRUPT);
            return;
        }
        kids = aps__jcalloc(n, sizeof *kids);
        if (!kids) {
            aps__r_fail(r, APS_ENOMEM);
            return;
        }
        t->u.combo.triggers = kids;
        t->u.combo.count = n;
        for (i = 0; i < n && !r->rc; i++)
            r_trigger(r, &kids[i], depth + 1);
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Job records                                                          */
/* ------------------------------------------------------------------ */

static void
w_strv(aps__wbuf *w, char *const *v, size_t n)
{
    size_t i;

    if ((n && !v) || n > UINT32_MAX) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    aps__w_u32(w, (uint32_t)n);
    for (i = 0; i < n; i++)
        aps__w_str_req(w, v[i]);
}

static char **
r_strv(aps__rbuf *r, size_t *n)
{
    size_t count = aps__r_count(r, MIN_STR), i;
    char **v;

    *n = 0;
    if (r->rc || count == 0)
        return NULL;
    v = aps__jcalloc(count, sizeof *v);
    if (!v) {
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    /* Set the count first so a failure midway frees what was read. */
    *n = count;
    for (i = 0; i < count && !r->rc; i++)
        v[i] = aps__r_str_req(r);
    return v;
}

static void
w_target(aps__wbuf *w, const aps_target *t)
{
    aps__w_u8(w, (uint8_t)t->kind);
    switch (t->kind) {
    case APS_TARGET_COMMAND:
        w_strv(w, t->u.command.argv, t->u.command.argc);
        w_strv(w, t->u.command.env, t->u.command.envc);
        aps__w_str(w, t->u.command.cwd);
        aps__w_i64(w, t->u.command.timeout_us);
        aps__w_u32(w, t->u.command.max_output);
        break;
    case APS_TARGET_REMOTE:
        aps__w_str(w, t->u.remote.task);
        aps__w_str(w, t->u.remote.args_json);
        aps__w_str(w, t->u.remote.kwargs_json);
        aps__w_str(w, t->u.remote.queue);
        break;
    case APS_TARGET_FUNCTION:
        aps__w_str(w, t->u.function.name);
        aps__w_str(w, t->u.function.arg);
        break;
    case APS_TARGET_NONE:
        break;
    default:
        aps__w_fail(w, APS_EINVAL);
        break;
    }
}

static void
r_target(aps__rbuf *r, aps_target *t)
{
    uint8_t kind = aps__r_u8(r);

    if (r->rc)
        return;
    if (kind > APS_TARGET_FUNCTION) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    t->kind = (aps_target_kind)kind;
    switch (t->kind) {
    case APS_TARGET_COMMAND:
        t->u.command.argv = r_strv(r, &t->u.command.argc);
        t->u.command.env = r_strv(r, &t->u.command.envc);
        t->u.command.cwd = aps__r_str(r);
        t->u.command.timeout_us = aps__r_i64(r);
        t->u.command.max_output = aps__r_u32(r);
        break;
    case APS_TARGET_REMOTE:
        t->u.remote.task = aps__r_str(r);
        t->u.remote.args_json = aps__r_str(r);
        t->u.remote.kwargs_json = aps__r_str(r);
        t->u.remote.queue = aps__r_str(r);
        break;
    case APS_TARGET_FUNCTION:
        t->u.function.name = aps__r_str(r);
        t->u.function.arg = aps__r_str(r);
        break;
    case APS_TARGET_NONE:
        break;
    }
}

int
aps__jobrec_encode(const aps__jobrec *rec, void **buf, size_t *len)
{
    const aps_job *j = &rec->job;
    aps__wbuf w = {0};
    size_t i;

    *buf = NULL;
    *len = 0;
    aps__w_u8(&w, APS__JOBREC_FORMAT_V1);
    aps__w_str_req(&w, j->id);
    aps__w_str_req(&w, j->name);
    if (!j->trigger)
        aps__w_fail(&w, APS_EINVAL);
    else
        w_trigger(&w, j->trigger, 0);
    w_target(&w, &j->target);
    aps__w_str_req(&w, j->executor);
    aps__w_str_req(&w, j->jobstore);
    aps__w_u8(&w, (uint8_t)j->misfire);
    aps__w_i64(&w, j->misfire_grace_us);
    aps__w_i32(&w, j->coalesce);
    aps__w_i32(&w, j->max_instances);
    aps__w_u8(&w, (uint8_t)j->overlap);
    if ((j->n_labels && !j->labels) || j->n_labels > UINT32_MAX)
        aps__w_fail(&w, APS_EINVAL);
    aps__w_u32(&w, (uint32_t)j->n_labels);
    for (i = 0; i < j->n_labels && !w.rc; i++) {
        aps__w_str_req(&w, j->labels[i].key);
        aps__w_str_req(&w, j->labels[i].value);
    }
    aps__w_i64(&w, j->next_run_time);
    aps__w_u8(&w, j->paused ? 1 : 0);
    aps__w_i64(&w, j->create_time);
    aps__w_i64(&w, j->update_time);
    aps__w_u64(&w, j->stats.runs);
    aps__w_u64(&w, j->stats.failures);
    aps__w_u64(&w, j->stats.misses);
    aps__w_u64(&w, j->stats.max_instance_skips);
    aps__w_u64(&w, j->stats.coalesced);
    w_str_fixed(&w, j->stats.last_run_id, sizeof j->stats.last_run_id);
    aps__w_i64(&w, j->stats.last_run_time);
    aps__w_i32(&w, j->stats.last_status);
    aps__w_i32(&w, j->stats.last_exit_code);
    w_str_fixed(&w, j->stats.last_error, sizeof j->stats.last_error);
    /* Engine-only state. */
    if ((rec->n_running && !rec->running) || rec->n_running > UINT32_MAX)
        aps__w_fail(&w, APS_EINVAL);
    aps__w_u32(&w, (uint32_t)rec->n_running);
    for (i = 0; i < rec->n_running && !w.rc; i++) {
        w_str_fixed(&w, rec->running[i].run_id, sizeof rec->running[i].run_id);
        w_str_fixed(&w, rec->running[i].executor, sizeof rec->running[i].executor);
        aps__w_i64(&w, rec->running[i].started);
        w_times(&w, rec->running[i].run_times, rec->running[i].n_run_times);
    }
    if ((rec->n_pending && !rec->pending) || rec->n_pending > UINT32_MAX)
        aps__w_fail(&w, APS_EINVAL);
    aps__w_u32(&w, (uint32_t)rec->n_pending);
    for (i = 0; i < rec->n_pending && !w.rc; i++) {
        w_times(&w, rec->pending[i].run_times, rec->pending[i].n_run_times);
        aps__w_u8(&w, rec->pending[i].backfill ? 1 : 0);
    }
    if (rec->n_lateness > APS__LATENESS_WINDOW || rec->lateness_pos >= APS__LATENESS_WINDOW ||
        (rec->n_lateness < APS__LATENESS_WINDOW && rec->lateness_pos != rec->n_lateness))
        aps__w_fail(&w, APS_EINVAL);
    aps__w_u32(&w, rec->n_lateness);
    aps__w_u32(&w, rec->lateness_pos);
    if (rec->n_lateness > 0 && !rec->lateness)
        aps__w_fail(&w, APS_EINVAL);
    for (i = 0; rec->lateness && i < rec->n_lateness && i < APS__LATENESS_WINDOW; i++)
        aps__w_i64(&w, rec->lateness[i]);
    if (w.rc) {
        free(w.p);
        return w.rc;
    }
    *buf = w.p;
    *len = w.len;
    return 0;
}

int
aps__jobrec_decode(const void *buf, size_t len, aps__jobrec **out)
{
    aps__rbuf r = {buf, len, 0, 0};
    aps__jobrec *rec;
    aps_job *j;
    size_t i, n;
    uint8_t u;

    *out = NULL;
    if (!buf)
        r.len = 0;
    if (aps__r_u8(&r) != APS__JOBREC_FORMAT_V1)
        return APS_ECORRUPT;
    rec = aps__jcalloc(1, sizeof *rec);
    if (!rec)
        return APS_ENOMEM;
    j = &rec->job;
    j->id = aps__r_str_req(&r);
    j->name = aps__r_str_req(&r);
    if (!r.rc) {
        j->trigger = aps__jcalloc(1, sizeof *j->trigger);
        if (!j->trigger)
            aps__r_fail(&r, APS_ENOMEM);
        else
            r_trigger(&r, j->trigger, 0);
    }
    r_target(&r, &j->target);
    j->executor = aps__r_str_req(&r);
    j->jobstore = aps__r_str_req(&r);
    u = aps__r_u8(&r);
    if (u > APS_MISFIRE_UNLIMITED)
        aps__r_fail(&r, APS_ECORRUPT);
    j->misfire = (aps_misfire_kind)u;
    j->misfire_grace_us = aps__r_i64(&r);
    j->coalesce = aps__r_i32(&r);
    if (j->coalesce < -1 || j->coalesce > 1)
        aps__r_fail(&r, APS_ECORRUPT);
    j->max_instances = aps__r_i32(&r);
    if (j->max_instances < 0)
        aps__r_fail(&r, APS_ECORRUPT);
    u = aps__r_u8(&r);
    if (u > APS_OVERLAP_CANCEL_RUNNING)
        aps__r_fail(&r, APS_ECORRUPT);
    j->overlap = (aps_overlap)u;
    n = aps__r_count(&r, MIN_LABEL);
    if (!r.rc && n) {
        j->labels = aps__jcalloc(n, sizeof *j->labels);
        if (!j->labels)
            aps__r_fail(&r, APS_ENOMEM);
        else
            j->n_labels = n;
        for (i = 0; i < j->n_labels && !r.rc; i++) {
            j->labels[i].key = aps__r_str_req(&r);
            j->labels[i].value = aps__r_str_req(&r);
        }
    }
    j->next_run_time = aps__r_i64(&r);
    j->paused = aps__r_bool(&r);
    j->create_time = aps__r_i64(&r);
    j->update_time = aps__r_i64(&r);
    j->stats.runs = aps__r_u64(&r);
    j->stats.failures = aps__r_u64(&r);
    j->stats.misses = aps__r_u64(&r);
    j->stats.max_instance_skips = aps__r_u64(&r);
    j->stats.coalesced = aps__r_u64(&r);
    aps__r_str_fixed(&r, j->stats.last_run_id, sizeof j->stats.last_run_id);
    j->stats.last_run_time = aps__r_i64(&r);
    j->stats.last_status = aps__r_i32(&r);
    j->stats.last_exit_code = aps__r_i32(&r);
    aps__r_str_fixed(&r, j->stats.last_error, sizeof j->stats.last_error);
    n = aps__r_count(&r, MIN_RUN);
    if (!r.rc && n) {
        rec->running = aps__jcalloc(n, sizeof *rec->running);
        if (!rec->running)
            aps__r_fail(&r, APS_ENOMEM);
        else
            rec->n_running = n;
        for (i = 0; i < rec->n_running && !r.rc; i++) {
            aps__r_str_fixed(&r, rec->running[i].run_id, sizeof rec->running[i].run_id);
            aps__r_str_fixed(&r, rec->running[i].executor, sizeof rec->running[i].executor);
            rec->running[i].started = aps__r_i64(&r);
            rec->running[i].run_times = r_times(&r, &rec->running[i].n_run_times);
        }
    }
    n = aps__r_count(&r, MIN_PENDING);
    if (!r.rc && n) {
        rec->pending = aps__jcalloc(n, sizeof *rec->pending);
        if (!rec->pending)
            aps__r_fail(&r, APS_ENOMEM);
        else
            rec->n_pending = n;
        for (i = 0; i < rec->n_pending && !r.rc; i++) {
            rec->pending[i].run_times = r_times(&r, &rec->pending[i].n_run_times);
            rec->pending[i].backfill = aps__r_bool(&r);
        }
    }
    rec->n_lateness = aps__r_u32(&r);
    rec->lateness_pos = aps__r_u32(&r);
    if (!r.rc &&
        (rec->n_lateness > APS__LATENESS_WINDOW || rec->lateness_pos >= APS__LATENESS_WINDOW ||
         (rec->n_lateness < APS__LATENESS_WINDOW && rec->lateness_pos != rec->n_lateness)))
        aps__r_fail(&r, APS_ECORRUPT);
    if (rec->n_lateness > 0 && !r.rc &&
        (rec->lateness = aps__jcalloc(APS__LATENESS_WINDOW, sizeof *rec->lateness)) == NULL)
        aps__r_fail(&r, APS_ENOMEM);
    for (i = 0; i < rec->n_lateness && !r.rc; i++) {
        int64_t v = aps__r_i64(&r);
        if (v != aps__clamp_lateness(v)) /* never written: samples are int32 */
            aps__r_fail(&r, APS_ECORRUPT);
        else
            rec->lateness[i] = (int32_t)v;
    }
    if (!r.rc && r.pos != r.len)
        aps__r_fail(&r, APS_ECORRUPT);
    if (r.rc) {
        int rc = r.rc;

        /* A half-read record frees cleanly: every count was set only
         * once its (zeroed) array existed. */
        aps__jobrec_free(rec);
        return rc;
    }
    j->running_instances = (uint32_t)rec->n_running;
    j->queued_runs = (uint32_t)rec->n_pending;
    *out = rec;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Events                                                               */
/* ------------------------------------------------------------------ */

int
aps__event_encode(const aps_event *ev, void **buf, size_t *len)
{
    const aps_outcome *o = ev->outcome;
    aps__wbuf w = {0};

    *buf = NULL;
    *len = 0;
    aps__w_u8(&w, APS__EVENT_FORMAT_V2);
    aps__w_u64(&w, ev->sequence);
    aps__w_u8(&w, (uint8_t)ev->type);
    if (ev->type < APS_EVENT_SCHEDULER_STARTED || ev->type > APS_EVENT_JOB_MAX_INSTANCES)
        aps__w_fail(&w, APS_EINVAL);
    aps__w_i64(&w, ev->time);
    aps__w_str(&w, ev->job_id);
    aps__w_str(&w, ev->jobstore);
    aps__w_str(&w, ev->executor);
    w_times(&w, ev->run_times, ev->n_run_times);
    aps__w_str(&w, ev->run_id);
    aps__w_u8(&w, o ? 1 : 0);
    if (o) {
        if (o->status < APS_RUN_NONE || o->status > APS_RUN_INTERRUPTED)
            aps__w_fail(&w, APS_EINVAL);
        aps__w_u8(&w, (uint8_t)o->status);
        aps__w_u8(&w, o->has_exit_code ? 1 : 0);
        aps__w_i32(&w, o->exit_code);
        aps__w_i32(&w, o->signal);
        aps__w_blob(&w, o->stdout_tail, o->stdout_len);
        aps__w_blob(&w, o->stderr_tail, o->stderr_len);
        aps__w_u8(&w, o->stdout_truncated ? 1 : 0);
        aps__w_u8(&w, o->stderr_truncated ? 1 : 0);
        aps__w_i64(&w, o->start_time);
        aps__w_i64(&w, o->end_time);
        aps__w_str(&w, o->error);
        aps__w_str(&w, o->traceback);
        aps__w_str(&w, o->return_json);
    }
    aps__w_str(&w, ev->message);
    if (o) { /* V2 */
        aps__w_str(&w, o->error_type);
        aps__w_str(&w, o->worker_id);
    }
    if (w.rc) {
        free(w.p);
        return w.rc;
    }
    *buf = w.p;
    *len = w.len;
    return 0;
}

int
aps__event_decode(const void *buf, size_t len, aps_event **out)
{
    aps__rbuf r = {buf, len, 0, 0};
    aps_event *ev;
    aps_outcome *o;
    uint8_t u;
    int rc;

    *out = NULL;
    if (!buf)
        r.len = 0;
    uint8_t version = aps__r_u8(&r);
    if (version != APS__EVENT_FORMAT_V1 && version != APS__EVENT_FORMAT_V2)
        return APS_ECORRUPT;
    ev = aps__jcalloc(1, sizeof *ev);
    if (!ev)
        return APS_ENOMEM;
    ev->sequence = aps__r_u64(&r);
    u = aps__r_u8(&r);
    if (u < APS_EVENT_SCHEDULER_STARTED || u > APS_EVENT_JOB_MAX_INSTANCES)
        aps__r_fail(&r, APS_ECORRUPT);
    ev->type = (aps_event_type)u;
    ev->time = aps__r_i64(&r);
    ev->job_id = aps__r_str(&r);
    ev->jobstore = aps__r_str(&r);
    ev->executor = aps__r_str(&r);
    ev->run_times = r_times(&r, &ev->n_run_times);
    ev->run_id = aps__r_str(&r);
    if (aps__r_bool(&r) && !r.rc) {
        o = ev->outcome = aps__jcalloc(1, sizeof *o);
        if (!o) {
            aps__r_fail(&r, APS_ENOMEM);
        } else {
            u = aps__r_u8(&r);
            if (u > APS_RUN_INTERRUPTED)
                aps__r_fail(&r, APS_ECORRUPT);
            o->status = (aps_run_status)u;
            o->has_exit_code = aps__r_bool(&r);
            o->exit_code = aps__r_i32(&r);
            o->signal = aps__r_i32(&r);
            o->stdout_tail = aps__r_blob(&r, &o->stdout_len);
            o->stderr_tail = aps__r_blob(&r, &o->stderr_len);
            o->stdout_truncated = aps__r_bool(&r);
            o->stderr_truncated = aps__r_bool(&r);
            o->start_time = aps__r_i64(&r);
            o->end_time = aps__r_i64(&r);
            o->error = aps__r_str(&r);
            o->traceback = aps__r_str(&r);
            o->return_json = aps__r_str(&r);
        }
    }
    ev->message = aps__r_str(&r);
    if (version == APS__EVENT_FORMAT_V2 && ev->outcome) {
        ev->outcome->error_type = aps__r_str(&r);
        ev->outcome->worker_id = aps__r_str(&r);
    }
    if (!r.rc && r.pos != r.len)
        aps__r_fail(&r, APS_ECORRUPT);
    if (r.rc) {
        rc = r.rc;
        aps_event_free(ev);
        return rc;
    }
    *out = ev;
    return 0;
}
