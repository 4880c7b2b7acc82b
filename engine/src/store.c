/*
 * Job store: argument validation, reentrancy guard and dispatch to the
 * backend (store_lmdb.c, store_mem.c), plus encodings both backends share.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "store_backend.h"

/* Depth of store callbacks running on this thread. A callback that calls
 * back into the store would deadlock (the memory backend holds its lock; an
 * LMDB read visitor holds the map lock the writer may need to grow the map,
 * and a write callback runs on the writer thread itself), so such calls are
 * refused with APS_ESTATE instead. */
static _Thread_local int tls_cb_depth;

void
aps__store_cb_enter(void)
{
    tls_cb_depth++;
}

void
aps__store_cb_leave(void)
{
    tls_cb_depth--;
}

void
aps__store_seterr(aps_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

void *
aps__store_memdup(const void *data, size_t len)
{
    void *p = malloc(len ? len : 1);

    if (p && len)
        memcpy(p, data, len);
    return p;
}

void
aps__store_u64_encode(uint64_t v, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t
aps__store_u64_decode(const unsigned char in[8])
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

void
aps__store_time_encode(aps_time t, unsigned char out[8])
{
    /* Flipping the sign bit maps INT64_MIN..INT64_MAX onto 0..UINT64_MAX in
     * order, so big-endian bytes compare like the numbers. */
    aps__store_u64_encode((uint64_t)t ^ (UINT64_C(1) << 63), out);
}

aps_time
aps__store_time_decode(const unsigned char in[8])
{
    return (aps_time)(aps__store_u64_decode(in) ^ (UINT64_C(1) << 63));
}

size_t
aps__store_due_key(aps_time next_run, const char *id, size_t idlen, unsigned char *out)
{
    aps__store_time_encode(next_run, out);
    memcpy(out + APS_STORE_TIME_LEN, id, idlen);
    return APS_STORE_TIME_LEN + idlen;
}

int
aps__store_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

aps_time
aps__store_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (aps_time)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

aps_time
aps__store_clock_now(const aps_store *s)
{
    return s->cfg.clock.now ? s->cfg.clock.now(s->cfg.clock.ctx) : aps__store_now();
}

/* Length of a valid id, or 0 if `id` is NULL, empty or too long. */
static size_t
id_len(const char *id)
{
    size_t n;

    if (!id)
        return 0;
    n = strnlen(id, APS_STORE_ID_MAX + 1);
    return n > APS_STORE_ID_MAX ? 0 : n;
}

static size_t
key_len(const char *key)
{
    size_t n;

    if (!key)
        return 0;
    n = strnlen(key, APS_STORE_META_KEY_MAX + 1);
    return n > APS_STORE_META_KEY_MAX ? 0 : n;
}

static int
key_reserved(const char *key)
{
    return strncmp(key, APS_STORE_META_RESERVED, sizeof APS_STORE_META_RESERVED - 1) == 0;
}

/* Common checks of every store-level call. */
static int
check_store(aps_store *s)
{
    if (!s)
        return APS_EINVAL;
    if (tls_cb_depth)
        return APS_ESTATE;
    return 0;
}

int
aps__store_stats(aps_store *s, aps_store_stats *out)
{
    if (!s || !out)
        return APS_EINVAL;
    return s->ops->stats(s, out);
}

int
aps__store_space_low(aps_store *s)
{
    return s && s->ops->space_low ? s->ops->space_low(s) : 0;
}

void
aps__store_handed(aps_store *s, aps_time t)
{
    if (s && s->ops->handed)
        s->ops->handed(s, t);
}

aps_time
aps__store_handed_bound(aps_store *s)
{
    return s && s->ops->handed_bound ? s->ops->handed_bound(s) : INT64_MAX;
}

void
aps__store_handed_recovered(aps_store *s)
{
    if (s && s->ops->handed_recovered)
        s->ops->handed_recovered(s);
}

void
aps__store_close(aps_store *s)
{
    if (s)
        s->ops->close(s);
}

int
aps__store_write(aps_store *s, aps_write_fn fn, void *arg)
{
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!fn)
        return APS_EINVAL;
    return s->ops->write(s, fn, arg);
}

void
aps__store_write_async(aps_store *s, aps_write_fn fn, void *arg, aps_write_done_fn done,
                       void *done_arg)
{
    int rc = check_store(s);

    if (rc == 0 && !fn)
        rc = APS_EINVAL;
    if (rc == 0 && s->ops->write_async) {
        s->ops->write_async(s, fn, arg, done, done_arg);
        return;
    }
    if (rc == 0)
        rc = s->ops->write(s, fn, arg);
    done(done_arg, rc);
}

void
aps__store_write_lazy(aps_store *s, aps_write_fn fn, void *arg, aps_write_done_fn done,
                      void *done_arg)
{
    if (check_store(s) == 0 && fn && s->ops->write_lazy) {
        s->ops->write_lazy(s, fn, arg, done, done_arg);
        return;
    }
    aps__store_write_async(s, fn, arg, done, done_arg);
}

int
aps__txn_job_get(aps_txn *t, const char *id, const void **data, size_t *len, aps_time *next_run)
{
    size_t n = id_len(id);

    if (!t || !n)
        return APS_EINVAL;
    return t->store->ops->txn_job_get(t, id, n, data, len, next_run);
}

int
aps__txn_job_put(aps_txn *t, const char *id, const void *data, size_t len, aps_time next_run)
{
    size_t n = id_len(id);

    if (!t || !n || (!data && len))
        return APS_EINVAL;
    return t->store->ops->txn_job_put(t, id, n, data, len, next_run);
}

int
aps__txn_job_del(aps_txn *t, const char *id)
{
    size_t n = id_len(id);

    if (!t || !n)
        return APS_EINVAL;
    return t->store->ops->txn_job_del(t, id, n);
}

int
aps__txn_job_del_all(aps_txn *t, size_t *removed)
{
    size_t dummy;

    if (!t)
        return APS_EINVAL;
    return t->store->ops->txn_job_del_all(t, removed ? removed : &dummy);
}

int
aps__txn_event_append(aps_txn *t, aps_time at, const void *data, size_t len, uint64_t *seq)
{
    uint64_t dummy;

    if (!t || (!data && len))
        return APS_EINVAL;
    return t->store->ops->txn_event_append(t, at, data, len, seq ? seq : &dummy);
}

int
aps__txn_meta_get(aps_txn *t, const char *key, const void **data, size_t *len)
{
    size_t n = key_len(key);

    if (!t || !n)
        return APS_EINVAL;
    return t->store->ops->txn_meta_get(t, key, n, data, len);
}

int
aps__txn_meta_put(aps_txn *t, const char *key, const void *data, size_t len)
{
    size_t n = key_len(key);

    if (!t || !n || key_reserved(key) || (!data && len))
        return APS_EINVAL;
    return t->store->ops->txn_meta_put(t, key, n, data, len);
}

int
aps__txn_meta_del(aps_txn *t, const char *key)
{
    size_t n = key_len(key);

    if (!t || !n || key_reserved(key))
        return APS_EINVAL;
    return t->store->ops->txn_meta_del(t, key, n);
}

int
aps__store_job_get(aps_store *s, const char *id, void **data, size_t *len, aps_time *next_run)
{
    size_t n = id_len(id);
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!n)
        return APS_EINVAL;
    return s->ops->job_get(s, id, n, data, len, next_run);
}

int
aps__store_jobs_get(aps_store *s, const char *const *ids, size_t n, aps_store_jobs_cb cb, void *arg)
{
    int rc = check_store(s);

    if (rc)
        return rc;
    if ((!ids && n) || !cb)
        return APS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!id_len(ids[i]))
            return APS_EINVAL;
    if (s->ops->jobs_get)
        return s->ops->jobs_get(s, ids, n, cb, arg);
    for (size_t i = 0; i < n && rc == 0; i++) {
        void *data = NULL;
        size_t len = 0;
        aps_time next_run = APS_TIME_NONE;
        rc = s->ops->job_get(s, ids[i], id_len(ids[i]), &data, &len, &next_run);
        if (rc == APS_ENOENT) {
            rc = 0;
            continue;
        }
        if (rc == 0) {
            aps__store_cb_enter();
            rc = cb(arg, i, data, len, next_run);
            aps__store_cb_leave();
        }
        free(data);
    }
    return rc;
}

int
aps__store_job_list(aps_store *s, const char *after_id, size_t limit, aps_store_job_cb cb,
                    void *arg)
{
    size_t n = 0;
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!cb)
        return APS_EINVAL;
    if (after_id) {
        /* An empty or over-long cursor can not come from a previous page. */
        n = id_len(after_id);
        if (!n)
            return APS_EINVAL;
    }
    return s->ops->job_list(s, after_id, n, limit, cb, arg);
}

int
aps__store_due(aps_store *s, aps_time before, size_t limit, aps_store_job_cb cb, void *arg)
{
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!cb)
        return APS_EINVAL;
    return s->ops->due(s, before, limit, cb, arg);
}

int
aps__store_due_after(aps_store *s, aps_time after, const char *after_id, aps_time before,
                     size_t limit, aps_store_job_cb cb, void *arg)
{
    size_t n = id_len(after_id);
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!cb || !n)
        return APS_EINVAL;
    if (!s->ops->due_after)
        return s->ops->due(s, before, limit, cb, arg);
    return s->ops->due_after(s, after, after_id, n, before, limit, cb, arg);
}

int
aps__store_next_due(aps_store *s, aps_time *out)
{
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!out)
        return APS_EINVAL;
    return s->ops->next_due(s, out);
}

int
aps__store_count(aps_store *s, size_t *jobs)
{
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!jobs)
        return APS_EINVAL;
    return s->ops->count(s, jobs, NULL);
}

int
aps__store_counts(aps_store *s, size_t *jobs, size_t *scheduled)
{
    size_t j = 0, d = 0;
    int rc = check_store(s);

    if (rc == 0)
        rc = s->ops->count(s, &j, &d);
    if (rc == 0 && jobs)
        *jobs = j;
    if (rc == 0 && scheduled)
        *scheduled = d;
    return rc;
}

int
aps__store_events(aps_store *s, uint64_t after_seq, size_t limit, aps_store_event_cb cb, void *arg)
{
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!cb)
        return APS_EINVAL;
    return s->ops->events(s, after_seq, limit, cb, arg);
}

int
aps__store_event_bounds(aps_store *s, uint64_t *first, uint64_t *last)
{
    uint64_t f, l;
    int rc = check_store(s);

    if (rc)
        return rc;
    rc = s->ops->event_bounds(s, &f, &l);
    if (rc)
        return rc;
    if (first)
        *first = f;
    if (last)
        *last = l;
    return 0;
}

int
aps__store_meta_get(aps_store *s, const char *key, void **data, size_t *len)
{
    size_t n = key_len(key);
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!n)
        return APS_EINVAL;
    return s->ops->meta_get(s, key, n, data, len);
}

int
aps__store_meta_scan(aps_store *s, const char *prefix, aps_store_meta_cb cb, void *arg)
{
    size_t n;
    int rc = check_store(s);

    if (rc)
        return rc;
    if (!prefix || !cb)
        return APS_EINVAL;
    n = strnlen(prefix, APS_STORE_META_KEY_MAX + 1);
    if (n > APS_STORE_META_KEY_MAX)
        return APS_EINVAL;
    return s->ops->meta_scan(s, prefix, n, cb, arg);
}
