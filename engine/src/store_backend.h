/**
 * @file store_backend.h
 * @brief The interface a job-store backend implements (store_lmdb.c,
 *        store_mem.c), and helpers they share (store.c). Not for users of
 *        the store: they include store.h.
 *
 * store.c validates every argument (ids, keys, NULL pointers, reentrancy)
 * before dispatching, so backend functions can assume them valid. Ids and
 * keys arrive with their length (no NUL needed).
 */
#ifndef APSD_ENGINE_STORE_BACKEND_H
#define APSD_ENGINE_STORE_BACKEND_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/** The backend's functions; one static table per backend. */
typedef struct aps_store_ops {
    const char *name;
    int (*write)(aps_store *s, aps_write_fn fn, void *arg);
    /** Optional: queues the write, calls done(done_arg, rc) once it is
     *  committed or failed, and returns at once (see aps__store_write_async). */
    void (*write_async)(aps_store *s, aps_write_fn fn, void *arg, aps_write_done_fn done,
                        void *done_arg);
    /** Optional: write_async whose commit may wait a little for later
     *  writes (see aps__store_write_lazy). */
    void (*write_lazy)(aps_store *s, aps_write_fn fn, void *arg, aps_write_done_fn done,
                       void *done_arg);
    int (*job_get)(aps_store *s, const char *id, size_t idlen, void **data, size_t *len,
                   aps_time *next_run);
    /** Optional (else job_get per id): ids checked, NUL-terminated. */
    int (*jobs_get)(aps_store *s, const char *const *ids, size_t n, aps_store_jobs_cb cb,
                    void *arg);
    int (*job_list)(aps_store *s, const char *after, size_t afterlen, size_t limit,
                    aps_store_job_cb cb, void *arg);
    int (*due)(aps_store *s, aps_time before, size_t limit, aps_store_job_cb cb, void *arg);
    /** Optional: due, from the entry after (after, after_id). */
    int (*due_after)(aps_store *s, aps_time after, const char *after_id, size_t idlen,
                     aps_time before, size_t limit, aps_store_job_cb cb, void *arg);
    int (*next_due)(aps_store *s, aps_time *out);
    int (*count)(aps_store *s, size_t *jobs, size_t *scheduled);
    int (*events)(aps_store *s, uint64_t after_seq, size_t limit, aps_store_event_cb cb, void *arg);
    int (*event_bounds)(aps_store *s, uint64_t *first, uint64_t *last);
    int (*meta_get)(aps_store *s, const char *key, size_t keylen, void **data, size_t *len);
    int (*meta_scan)(aps_store *s, const char *prefix, size_t prefixlen, aps_store_meta_cb cb,
                     void *arg);
    int (*stats)(aps_store *s, aps_store_stats *out);
    int (*space_low)(aps_store *s); /* NULL: never */
    /* Optional, all three (aps__store_handed and after): */
    void (*handed)(aps_store *s, aps_time t);
    aps_time (*handed_bound)(aps_store *s);
    void (*handed_recovered)(aps_store *s);
    void (*close)(aps_store *s);

    int (*txn_job_get)(aps_txn *t, const char *id, size_t idlen, const void **data, size_t *len,
                       aps_time *next_run);
    int (*txn_job_put)(aps_txn *t, const char *id, size_t idlen, const void *data, size_t len,
                       aps_time next_run);
    int (*txn_job_del)(aps_txn *t, const char *id, size_t idlen);
    int (*txn_job_del_all)(aps_txn *t, size_t *removed);
    int (*txn_event_append)(aps_txn *t, aps_time at, const void *data, size_t len, uint64_t *seq);
    int (*txn_meta_get)(aps_txn *t, const char *key, size_t keylen, const void **data, size_t *len);
    int (*txn_meta_put)(aps_txn *t, const char *key, size_t keylen, const void *data, size_t len);
    int (*txn_meta_del)(aps_txn *t, const char *key, size_t keylen);
} aps_store_ops;

/** The common head of every backend's store; backends embed it first. */
struct aps_store {
    const aps_store_ops *ops;
    aps_store_config cfg;
};

/** The common head of every backend's transaction; embedded first. */
struct aps_txn {
    aps_store *store;
};

/** Length of the sortable time prefix of `due` keys and stored values. */
#define APS_STORE_TIME_LEN 8
/** Longest `due` key: time prefix + id. */
#define APS_STORE_DUE_KEY_MAX (APS_STORE_TIME_LEN + APS_STORE_ID_MAX)

/**
 * Encodes `t` as 8 big-endian bytes with the sign bit flipped, so that
 * memcmp order is numeric order, negative times included (and
 * #APS_TIME_NONE, INT64_MIN, encodes as all zeros).
 */
void aps__store_time_encode(aps_time t, unsigned char out[8]);
/** Inverse of aps__store_time_encode. */
aps_time aps__store_time_decode(const unsigned char in[8]);
/** 8 big-endian bytes of an unsigned value (event sequences, counters). */
void aps__store_u64_encode(uint64_t v, unsigned char out[8]);
/** Inverse of aps__store_u64_encode. */
uint64_t aps__store_u64_decode(const unsigned char in[8]);

/**
 * Builds the `due` key of (next_run, id) into `out` (at least
 * #APS_STORE_DUE_KEY_MAX bytes) and returns its length.
 */
size_t aps__store_due_key(aps_time next_run, const char *id, size_t idlen, unsigned char *out);

/** Bytewise key order: memcmp, then the shorter first (LMDB's default). */
int aps__store_keycmp(const void *a, size_t alen, const void *b, size_t blen);

/** The wall clock in microseconds. */
aps_time aps__store_now(void);

/** Now by the store's configured clock (cfg.clock), for event ages. */
aps_time aps__store_clock_now(const aps_store *s);

/**
 * Marks the calling thread as running a store callback (write callback or
 * read visitor) until the matching leave. While marked, aps__store_*
 * functions return #APS_ESTATE: that is how reentrancy deadlocks are refused.
 */
void aps__store_cb_enter(void);
/** Ends aps__store_cb_enter. */
void aps__store_cb_leave(void);

/** Fills `err` (may be NULL) with `code` and a formatted message. */
void aps__store_seterr(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** A malloc'd copy of `len` bytes (at least 1 byte allocated), or NULL. */
void *aps__store_memdup(const void *data, size_t len);

#endif /* APSD_ENGINE_STORE_BACKEND_H */
