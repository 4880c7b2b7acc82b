/*
 * Write logs (store.h): a transaction of a store that has no data, whose
 * writes are recorded to be replayed into a real transaction later. The
 * aps__txn_* functions have checked every argument before they dispatch
 * here, and replay calls the real store's backend directly, so the
 * checks are not made twice.
 */
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_backend.h"

enum { OP_JOB_PUT, OP_JOB_DEL, OP_META_PUT, OP_META_DEL };

typedef struct log_op {
    int kind;
    size_t key, keylen;   /* offset and length in the log's bytes */
    size_t data, datalen; /* the same (puts) */
    aps_time next_run;    /* OP_JOB_PUT */
} log_op;

struct aps_txn_log {
    aps_store store; /* ops: the recording backend below */
    aps_txn txn;     /* txn.store = &store */
    log_op *ops;
    size_t n_ops, cap_ops;
    unsigned char *bytes;
    size_t n_bytes, cap_bytes;
};

#define LOG(t) ((aps_txn_log *)((char *)(t)-offsetof(aps_txn_log, txn)))

/* Copies len bytes to the log's bytes; their offset in *off. */
static int
log_bytes(aps_txn_log *l, const void *p, size_t len, size_t *off)
{
    if (len > l->cap_bytes - l->n_bytes) {
        size_t cap = l->cap_bytes ? l->cap_bytes : 4096;
        while (cap - l->n_bytes < len) {
            if (cap > SIZE_MAX / 2)
                return APS_ENOMEM;
            cap *= 2;
        }
        unsigned char *b = realloc(l->bytes, cap);
        if (b == NULL)
            return APS_ENOMEM;
        l->bytes = b;
        l->cap_bytes = cap;
    }
    if (len > 0)
        memcpy(l->bytes + l->n_bytes, p, len);
    *off = l->n_bytes;
    l->n_bytes += len;
    return 0;
}

static int
log_op_add(aps_txn *t, int kind, const char *key, size_t keylen, const void *data, size_t len,
           aps_time next_run)
{
    aps_txn_log *l = LOG(t);
    log_op op = {kind, 0, keylen, 0, len, next_run};
    size_t mark = l->n_bytes;
    if (l->n_ops == l->cap_ops) {
        size_t cap = l->cap_ops ? l->cap_ops * 2 : 64;
        log_op *v = realloc(l->ops, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        l->ops = v;
        l->cap_ops = cap;
    }
    int rc = log_bytes(l, key, keylen, &op.key);
    if (rc == 0)
        rc = log_bytes(l, data, len, &op.data);
    if (rc != 0) {
        l->n_bytes = mark;
        return rc;
    }
    l->ops[l->n_ops++] = op;
    return 0;
}

static int
log_job_put(aps_txn *t, const char *id, size_t idlen, const void *data, size_t len,
            aps_time next_run)
{
    return log_op_add(t, OP_JOB_PUT, id, idlen, data, len, next_run);
}

static int
log_job_del(aps_txn *t, const char *id, size_t idlen)
{
    return log_op_add(t, OP_JOB_DEL, id, idlen, NULL, 0, APS_TIME_NONE);
}

static int
log_meta_put(aps_txn *t, const char *key, size_t keylen, const void *data, size_t len)
{
    return log_op_add(t, OP_META_PUT, key, keylen, data, len, APS_TIME_NONE);
}

static int
log_meta_del(aps_txn *t, const char *key, size_t keylen)
{
    return log_op_add(t, OP_META_DEL, key, keylen, NULL, 0, APS_TIME_NONE);
}

/* What a log cannot answer: it has no data to read, and an append's
 * sequence is the real store's to give. */
static int
log_job_get(aps_txn *t, const char *id, size_t idlen, const void **data, size_t *len,
            aps_time *next_run)
{
    (void)t, (void)id, (void)idlen, (void)data, (void)len, (void)next_run;
    return APS_ESTATE;
}

static int
log_job_del_all(aps_txn *t, size_t *removed)
{
    (void)t, (void)removed;
    return APS_ESTATE;
}

static int
log_event_append(aps_txn *t, aps_time at, const void *data, size_t len, uint64_t *seq)
{
    (void)t, (void)at, (void)data, (void)len, (void)seq;
    return APS_ESTATE;
}

static int
log_meta_get(aps_txn *t, const char *key, size_t keylen, const void **data, size_t *len)
{
    (void)t, (void)key, (void)keylen, (void)data, (void)len;
    return APS_ESTATE;
}

/* Only the transaction functions: the log's store is never seen by
 * anything but aps__txn_*. */
static const aps_store_ops log_ops = {
    .name = "write log",
    .txn_job_get = log_job_get,
    .txn_job_put = log_job_put,
    .txn_job_del = log_job_del,
    .txn_job_del_all = log_job_del_all,
    .txn_event_append = log_event_append,
    .txn_meta_get = log_meta_get,
    .txn_meta_put = log_meta_put,
    .txn_meta_del = log_meta_del,
};

int
aps__txn_log_new(aps_txn_log **out)
{
    aps_txn_log *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return APS_ENOMEM;
    l->store.ops = &log_ops;
    l->txn.store = &l->store;
    *out = l;
    return 0;
}

void
aps__txn_log_free(aps_txn_log *l)
{
    if (l == NULL)
        return;
    free(l->ops);
    free(l->bytes);
    free(l);
}

void
aps__txn_log_reset(aps_txn_log *l)
{
    l->n_ops = 0;
    l->n_bytes = 0;
}

aps_txn *
aps__txn_log_txn(aps_txn_log *l)
{
    return &l->txn;
}

size_t
aps__txn_log_mark(const aps_txn_log *l)
{
    return l->n_ops;
}

void
aps__txn_log_rewind(aps_txn_log *l, size_t mark)
{
    if (mark >= l->n_ops)
        return;
    l->n_ops = mark;
    l->n_bytes = l->ops[mark].key; /* its bytes came first */
}

int
aps__txn_log_replay(aps_txn *t, const aps_txn_log *l, size_t from, size_t to)
{
    const aps_store_ops *ops = t->store->ops;
    if (to > l->n_ops)
        to = l->n_ops;
    for (size_t i = from; i < to; i++) {
        const log_op *op = &l->ops[i];
        const char *key = (const char *)l->bytes + op->key;
        const unsigned char *data = op->datalen > 0 ? l->bytes + op->data : NULL;
        int rc = 0;
        switch (op->kind) {
        case OP_JOB_PUT:
            rc = ops->txn_job_put(t, key, op->keylen, data, op->datalen, op->next_run);
            break;
        case OP_JOB_DEL:
            rc = ops->txn_job_del(t, key, op->keylen);
            break; /* (APS_ENOENT: below) */
        case OP_META_PUT:
            rc = ops->txn_meta_put(t, key, op->keylen, data, op->datalen);
            break;
        default:
            rc = ops->txn_meta_del(t, key, op->keylen);
            break;
        }
        /* A delete was recorded as done without knowing whether there was
         * anything to delete: what is not there is deleted. */
        if (rc == APS_ENOENT && (op->kind == OP_JOB_DEL || op->kind == OP_META_DEL))
            rc = 0;
        if (rc != 0)
            return rc;
    }
    return 0;
}
