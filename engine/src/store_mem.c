/*
 * Job store, memory backend: the same semantics as the LMDB backend without
 * durability.
 *
 * Jobs sit in a treap (a randomized balanced tree) by id, for listing in id
 * order, in a hash table by id, for lookups, and, when they have a next run
 * time, in a binary min-heap by (next run time, id), the order of the LMDB
 * backend's `due` keys, so both backends order alike. Why not a second tree
 * for `due`: the scheduler loop rewrites two records per run, and moving a
 * job's due node in a treap (split, merge, a byte comparison per level, a
 * node freed and allocated) was most of a write; the heap compares times,
 * moves a new (later) time down a few levels in place, and allocates
 * nothing. Due scans walk the heap in order with a small second heap.
 * Meta is a treap too; events are a ring buffer (sequences are contiguous,
 * so an index is seq - first).
 *
 * Writes are serialized by a rwlock (readers share it). A failing callback
 * is undone from an undo log. Undo never allocates: every change keeps the
 * tree nodes and buffers it displaced in its log entry (a deleted job keeps
 * its node), so rolling back only relinks and frees; the log slot itself is
 * reserved before the change is made, and the hash table and the heap never
 * shrink, so a state rolled back to fits where it fitted before.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_backend.h"

/* ---- treap ---------------------------------------------------------- */

typedef struct tnode {
    struct tnode *l, *r;
    uint64_t prio;
    void *val; /* per tree: mjob* (jobs) or mval* (meta) */
    size_t klen;
    unsigned char key[];
} tnode;

typedef struct tree {
    tnode *root;
    size_t count;
} tree;

/* A job. Lives in the jobs node's allocation (after the key). */
typedef struct mjob {
    void *data;
    size_t len;
    aps_time next_run;
    size_t hpos;              /* its index in the due heap; NOT_DUE if none */
    uint64_t hash;            /* of its id */
    const unsigned char *id;  /* its node's key */
    size_t idlen;
} mjob;

#define NOT_DUE SIZE_MAX

/* A due heap entry: the time beside the job, so that most comparisons
 * touch the heap array only. */
typedef struct hent {
    aps_time t;
    mjob *j;
} hent;

/* A meta value. */
typedef struct mval {
    size_t len;
    unsigned char data[];
} mval;

static uint64_t
prio_next(uint64_t *state)
{
    /* xorshift64*: priorities only need to look random to keep the treap
     * balanced in expectation. */
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

static int
node_cmp(const tnode *n, const void *key, size_t klen)
{
    return aps__store_keycmp(n->key, n->klen, key, klen);
}

/* Splits `t` into keys < key (or <= key when `le`) and the rest. */
static void
split(tnode *t, const void *key, size_t klen, int le, tnode **l, tnode **r)
{
    int c;

    if (!t) {
        *l = *r = NULL;
        return;
    }
    c = node_cmp(t, key, klen);
    if (c < 0 || (le && c == 0)) {
        split(t->r, key, klen, le, &t->r, r);
        *l = t;
    } else {
        split(t->l, key, klen, le, l, &t->l);
        *r = t;
    }
}

/* Joins two treaps where every key of `a` is below every key of `b`. */
static tnode *
merge(tnode *a, tnode *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (a->prio > b->prio) {
        a->r = merge(a->r, b);
        return a;
    }
    b->l = merge(a, b->l);
    return b;
}

static tnode *
tree_find(const tree *t, const void *key, size_t klen)
{
    tnode *n = t->root;

    while (n) {
        int c = node_cmp(n, key, klen);

        if (c == 0)
            return n;
        n = c > 0 ? n->l : n->r;
    }
    return NULL;
}

/* Links a detached node (its key must not be present). Never allocates. */
static void
tree_link(tree *t, tnode *n, uint64_t *rng)
{
    tnode *l, *r;

    n->l = n->r = NULL;
    n->prio = prio_next(rng);
    split(t->root, n->key, n->klen, 0, &l, &r);
    t->root = merge(merge(l, n), r);
    t->count++;
}

/* Unlinks and returns the node with `key`, or NULL. */
static tnode *
tree_unlink(tree *t, const void *key, size_t klen)
{
    tnode *l, *m, *r;

    split(t->root, key, klen, 0, &l, &r);
    split(r, key, klen, 1, &m, &r);
    t->root = merge(l, r);
    if (m) {
        t->count--;
        m->l = m->r = NULL;
    }
    return m;
}

static tnode *
tree_first(const tree *t)
{
    tnode *n = t->root;

    while (n && n->l)
        n = n->l;
    return n;
}

/* Result of a visit: continue, or stop with a value. */
#define WALK_STOP_DONE 1 /* internal: stop, and report 0 */

/* In-order walk of the nodes after `from` (all when from is NULL; `incl`
 * includes `from` itself). Depth is O(log n) expected. */
static int
tree_walk(tnode *n, const void *from, size_t flen, int incl, int (*visit)(void *ctx, tnode *n),
          void *ctx)
{
    int rc;

    while (n) {
        int c = from ? node_cmp(n, from, flen) : 1;

        if (c > 0 || (c == 0 && incl)) {
            rc = tree_walk(n->l, from, flen, incl, visit, ctx);
            if (rc)
                return rc;
            rc = visit(ctx, n);
            if (rc)
                return rc;
            /* Everything right of n is after `from`. */
            from = NULL;
        }
        n = n->r;
    }
    return 0;
}

static tnode *
node_new(const void *key, size_t klen, size_t extra)
{
    /* The key is padded so a payload placed after it stays aligned. */
    size_t kpad = (klen + 15) & ~(size_t)15;
    tnode *n = malloc(sizeof *n + kpad + extra);

    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->klen = klen;
    memcpy(n->key, key, klen);
    n->val = extra ? (void *)(n->key + kpad) : NULL;
    return n;
}

/* ---- the store ------------------------------------------------------ */

typedef struct mevent {
    aps_time at;
    size_t len;
    void *data;
} mevent;

enum undo_kind {
    U_JOB_INS, /* node inserted: undo unlinks and frees it */
    U_JOB_REP, /* job replaced: old data and next run kept here */
    U_JOB_DEL, /* job unlinked: its node kept here */
    U_META_INS,
    U_META_REP, /* old value kept in old_data */
    U_META_DEL,
    U_EVENT /* event appended at the tail */
};

typedef struct undo {
    enum undo_kind kind;
    tnode *node;
    void *old_data;
    size_t old_len;
    aps_time old_next;
} undo;

typedef struct mem_store {
    aps_store base;
    pthread_rwlock_t lock;
    uint64_t rng;
    tree jobs, meta;
    mjob **htab; /* jobs by id hash, open addressing; at most half full */
    size_t hcap;
    hent *heap;  /* due jobs, a min-heap by (next run, id) */
    size_t hn, heap_cap;
    /* event ring: ev_count events from ev[ev_head], oldest first; the
     * newest has sequence ev_last */
    mevent *ev;
    size_t ev_cap, ev_head, ev_count;
    uint64_t ev_last;
    /* undo log of the running callback (writes are serialized) */
    undo *undo;
    size_t undo_n, undo_cap;
    aps_store_stats stats;
} mem_store;

typedef struct mem_txn {
    aps_txn base;
    mem_store *s;
} mem_txn;

static mem_store *
M(aps_store *s)
{
    return (mem_store *)s;
}

static mem_store *
MT(aps_txn *t)
{
    return ((mem_txn *)t)->s;
}

/* Makes room for one more undo entry, so the change after it can not fail
 * to be logged. */
static int
undo_reserve(mem_store *s)
{
    undo *u;
    size_t cap;

    if (s->undo_n < s->undo_cap)
        return 0;
    cap = s->undo_cap ? s->undo_cap * 2 : 16;
    u = realloc(s->undo, cap * sizeof *u);
    if (!u)
        return APS_ENOMEM;
    s->undo = u;
    s->undo_cap = cap;
    return 0;
}

static undo *
undo_push(mem_store *s, enum undo_kind kind, tnode *node)
{
    undo *u = &s->undo[s->undo_n++];

    memset(u, 0, sizeof *u);
    u->kind = kind;
    u->node = node;
    return u;
}

static mevent *
ev_at(mem_store *s, size_t i)
{
    return &s->ev[(s->ev_head + i) % s->ev_cap];
}

static void
job_free(tnode *n)
{
    mjob *j = n->val;

    free(j->data);
    free(n);
}

/* The jobs-tree node a job lives in. */
static tnode *
job_node(const mjob *j)
{
    return (tnode *)(void *)((unsigned char *)(uintptr_t)j->id - offsetof(tnode, key));
}

/* ---- jobs by id: the hash table ---------------------------------------- */

static uint64_t
id_hash(const void *id, size_t len)
{
    const unsigned char *p = id;
    uint64_t h = UINT64_C(1469598103934665603);

    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * UINT64_C(1099511628211);
    return h;
}

static mjob *
job_find(const mem_store *s, const void *id, size_t len)
{
    uint64_t h;

    if (!s->hcap)
        return NULL;
    h = id_hash(id, len);
    for (size_t i = h & (s->hcap - 1); s->htab[i]; i = (i + 1) & (s->hcap - 1)) {
        mjob *j = s->htab[i];

        if (j->hash == h && j->idlen == len && memcmp(j->id, id, len) == 0)
            return j;
    }
    return NULL;
}

/* Links j (room reserved by hash_reserve). */
static void
hash_insert(mem_store *s, mjob *j)
{
    size_t i = j->hash & (s->hcap - 1);

    while (s->htab[i])
        i = (i + 1) & (s->hcap - 1);
    s->htab[i] = j;
}

static void
hash_remove(mem_store *s, const mjob *j)
{
    const size_t m = s->hcap - 1;
    size_t i = j->hash & m;

    while (s->htab[i] != j)
        i = (i + 1) & m;
    /* Linear probing: later entries of the cluster move up unless their
     * home slot lies in (i, k]. */
    for (size_t k = (i + 1) & m; s->htab[k]; k = (k + 1) & m) {
        size_t home = s->htab[k]->hash & m;
        int stays = i <= k ? (home > i && home <= k) : (home > i || home <= k);

        if (!stays) {
            s->htab[i] = s->htab[k];
            i = k;
        }
    }
    s->htab[i] = NULL;
}

/* Room for n jobs, the table at most half full. Never shrinks. */
static int
hash_reserve(mem_store *s, size_t n)
{
    size_t cap = s->hcap ? s->hcap : 64;
    mjob **old = s->htab;
    size_t oldcap = s->hcap;

    while (cap < 2 * n)
        cap *= 2;
    if (cap == s->hcap)
        return 0;
    s->htab = calloc(cap, sizeof *s->htab);
    if (!s->htab) {
        s->htab = old;
        return APS_ENOMEM;
    }
    s->hcap = cap;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i])
            hash_insert(s, old[i]);
    }
    free(old);
    return 0;
}

/* ---- due jobs: the heap ------------------------------------------------- */

static int
hent_less(const hent *a, const hent *b)
{
    if (a->t != b->t)
        return a->t < b->t;
    return aps__store_keycmp(a->j->id, a->j->idlen, b->j->id, b->j->idlen) < 0;
}

static void
heap_set(mem_store *s, size_t i, hent e)
{
    s->heap[i] = e;
    e.j->hpos = i;
}

/* Moves the entry at i up or down to its place. */
static void
heap_fix(mem_store *s, size_t i)
{
    hent e = s->heap[i];

    while (i > 0 && hent_less(&e, &s->heap[(i - 1) / 2])) {
        heap_set(s, i, s->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= s->hn)
            break;
        if (c + 1 < s->hn && hent_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!hent_less(&s->heap[c], &e))
            break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, e);
}

/* Room for n due jobs. Never shrinks. */
static int
heap_reserve(mem_store *s, size_t n)
{
    size_t cap;
    hent *v;

    if (n <= s->heap_cap)
        return 0;
    cap = s->heap_cap ? s->heap_cap : 64;
    while (cap < n)
        cap *= 2;
    v = realloc(s->heap, cap * sizeof *v);
    if (!v)
        return APS_ENOMEM;
    s->heap = v;
    s->heap_cap = cap;
    return 0;
}

static void
heap_remove(mem_store *s, mjob *j)
{
    size_t i = j->hpos;

    j->hpos = NOT_DUE;
    if (--s->hn > i) {
        heap_set(s, i, s->heap[s->hn]);
        heap_fix(s, i);
    }
}

/* Gives j its next run time: it enters the heap (room reserved), moves in
 * it, or leaves it. */
static void
job_set_next(mem_store *s, mjob *j, aps_time next_run)
{
    j->next_run = next_run;
    if (next_run == APS_TIME_NONE) {
        if (j->hpos != NOT_DUE)
            heap_remove(s, j);
        return;
    }
    if (j->hpos == NOT_DUE) {
        j->hpos = s->hn++;
        s->heap[j->hpos].j = j;
    }
    s->heap[j->hpos].t = next_run;
    heap_fix(s, j->hpos);
}

/* Links a job's node everywhere (room reserved). */
static void
job_link(mem_store *s, tnode *n)
{
    mjob *j = n->val;

    tree_link(&s->jobs, n, &s->rng);
    hash_insert(s, j);
    j->hpos = NOT_DUE;
    job_set_next(s, j, j->next_run);
}

/* Unlinks a job's node from everything (the node is kept). */
static void
job_unlink(mem_store *s, tnode *n)
{
    mjob *j = n->val;

    tree_unlink(&s->jobs, n->key, n->klen);
    hash_remove(s, j);
    if (j->hpos != NOT_DUE)
        heap_remove(s, j);
}

/* Forgets the undo log after the callback succeeded: frees what the changes
 * displaced. */
static void
undo_commit(mem_store *s)
{
    for (size_t i = 0; i < s->undo_n; i++) {
        undo *u = &s->undo[i];

        switch (u->kind) {
        case U_JOB_REP:
            free(u->old_data);
            break;
        case U_JOB_DEL:
            job_free(u->node);
            break;
        case U_META_REP:
            free(u->old_data);
            break;
        case U_META_DEL:
            free(u->node->val);
            free(u->node);
            break;
        default:
            break;
        }
    }
    s->undo_n = 0;
}

/* Rolls the callback's changes back, newest first. Never allocates. */
static void
undo_rollback(mem_store *s)
{
    while (s->undo_n) {
        undo *u = &s->undo[--s->undo_n];
        tnode *n = u->node;
        mjob *j = n ? n->val : NULL;

        switch (u->kind) {
        case U_JOB_INS:
            job_unlink(s, n);
            job_free(n);
            break;
        case U_JOB_REP:
            free(j->data);
            j->data = u->old_data;
            j->len = u->old_len;
            job_set_next(s, j, u->old_next);
            break;
        case U_JOB_DEL:
            job_link(s, n);
            break;
        case U_META_INS:
            tree_unlink(&s->meta, n->key, n->klen);
            free(n->val);
            free(n);
            break;
        case U_META_REP:
            free(n->val);
            n->val = u->old_data;
            break;
        case U_META_DEL:
            tree_link(&s->meta, n, &s->rng);
            break;
        case U_EVENT: {
            mevent *e = ev_at(s, s->ev_count - 1);

            free(e->data);
            s->ev_count--;
            s->ev_last--;
            break;
        }
        }
    }
}

/* Drops events from the oldest end by count and age (see store.h). */
static void
prune_events(mem_store *s)
{
    size_t max = s->base.cfg.event_max_count;
    aps_time age = s->base.cfg.event_max_age_us;
    aps_time cutoff = age ? aps__store_clock_now(&s->base) - age : 0;

    while (s->ev_count) {
        mevent *e = ev_at(s, 0);

        if (!(max && s->ev_count > max) && !(age && e->at < cutoff))
            break;
        free(e->data);
        s->ev_head = (s->ev_head + 1) % s->ev_cap;
        s->ev_count--;
    }
}

static int
mem_write(aps_store *bs, aps_write_fn fn, void *arg)
{
    mem_store *s = M(bs);
    mem_txn t = {{bs}, s};
    int rc;

    pthread_rwlock_wrlock(&s->lock);
    s->undo_n = 0;
    aps__store_cb_enter();
    rc = fn(&t.base, arg);
    aps__store_cb_leave();
    if (rc) {
        undo_rollback(s);
    } else {
        undo_commit(s);
        prune_events(s);
        s->stats.commits++;
    }
    s->stats.writes++;
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

/* ---- write-transaction operations ----------------------------------- */

static int
mt_job_get(aps_txn *t, const char *id, size_t idlen, const void **data, size_t *len,
           aps_time *next_run)
{
    mjob *j = job_find(MT(t), id, idlen);

    if (!j)
        return APS_ENOENT;
    if (data)
        *data = j->data;
    if (len)
        *len = j->len;
    if (next_run)
        *next_run = j->next_run;
    return 0;
}

static int
mt_job_put(aps_txn *t, const char *id, size_t idlen, const void *data, size_t len,
           aps_time next_run)
{
    mem_store *s = MT(t);
    void *copy = NULL;
    tnode *n;
    mjob *j;
    undo *u;
    int rc;

    /* Allocate everything first: after this point nothing can fail. */
    rc = undo_reserve(s);
    if (rc)
        goto fail;
    rc = APS_ENOMEM;
    copy = aps__store_memdup(data, len);
    if (!copy)
        goto fail;
    j = job_find(s, id, idlen);
    if (next_run != APS_TIME_NONE && (!j || j->hpos == NOT_DUE) &&
        heap_reserve(s, s->hn + 1))
        goto fail;
    if (!j) {
        if (hash_reserve(s, s->jobs.count + 1))
            goto fail;
        n = node_new(id, idlen, sizeof(mjob));
        if (!n)
            goto fail;
        j = n->val;
        j->data = copy;
        j->len = len;
        j->next_run = next_run;
        j->hash = id_hash(id, idlen);
        j->id = n->key;
        j->idlen = idlen;
        job_link(s, n);
        undo_push(s, U_JOB_INS, n);
        return 0;
    }
    u = undo_push(s, U_JOB_REP, job_node(j));
    u->old_data = j->data;
    u->old_len = j->len;
    u->old_next = j->next_run;
    j->data = copy;
    j->len = len;
    job_set_next(s, j, next_run);
    return 0;

fail:
    free(copy);
    return rc;
}

static int
mt_job_del(aps_txn *t, const char *id, size_t idlen)
{
    mem_store *s = MT(t);
    mjob *j = job_find(s, id, idlen);
    int rc;

    if (!j)
        return APS_ENOENT;
    rc = undo_reserve(s);
    if (rc)
        return rc;
    job_unlink(s, job_node(j));
    undo_push(s, U_JOB_DEL, job_node(j));
    return 0;
}

static int
mt_job_del_all(aps_txn *t, size_t *removed)
{
    mem_store *s = MT(t);
    size_t n = 0;
    tnode *first;
    int rc;

    /* One logged delete per job: O(n log n), and undoable like any other
     * change. */
    while ((first = tree_first(&s->jobs)) != NULL) {
        rc = mt_job_del(t, (const char *)first->key, first->klen);
        if (rc)
            return rc;
        n++;
    }
    *removed = n;
    return 0;
}

static int
mt_event_append(aps_txn *t, aps_time at, const void *data, size_t len, uint64_t *seq)
{
    mem_store *s = MT(t);
    void *copy;
    mevent *e;
    int rc;

    rc = undo_reserve(s);
    if (rc)
        return rc;
    if (s->ev_count == s->ev_cap) {
        size_t cap = s->ev_cap ? s->ev_cap * 2 : 64;
        mevent *ev = malloc(cap * sizeof *ev);

        if (!ev)
            return APS_ENOMEM;
        for (size_t i = 0; i < s->ev_count; i++)
            ev[i] = *ev_at(s, i);
        free(s->ev);
        s->ev = ev;
        s->ev_cap = cap;
        s->ev_head = 0;
    }
    copy = aps__store_memdup(data, len);
    if (!copy)
        return APS_ENOMEM;
    e = ev_at(s, s->ev_count);
    e->at = at;
    e->len = len;
    e->data = copy;
    s->ev_count++;
    *seq = ++s->ev_last;
    undo_push(s, U_EVENT, NULL);
    return 0;
}

static int
mt_meta_get(aps_txn *t, const char *key, size_t keylen, const void **data, size_t *len)
{
    tnode *n = tree_find(&MT(t)->meta, key, keylen);
    mval *v;

    if (!n)
        return APS_ENOENT;
    v = n->val;
    if (data)
        *data = v->data;
    if (len)
        *len = v->len;
    return 0;
}

static int
mt_meta_put(aps_txn *t, const char *key, size_t keylen, const void *data, size_t len)
{
    mem_store *s = MT(t);
    mval *v;
    tnode *n;
    int rc;

    rc = undo_reserve(s);
    if (rc)
        return rc;
    v = malloc(sizeof *v + len);
    if (!v)
        return APS_ENOMEM;
    v->len = len;
    if (len)
        memcpy(v->data, data, len);
    n = tree_find(&s->meta, key, keylen);
    if (n) {
        undo_push(s, U_META_REP, n)->old_data = n->val;
        n->val = v;
        return 0;
    }
    n = node_new(key, keylen, 0);
    if (!n) {
        free(v);
        return APS_ENOMEM;
    }
    n->val = v;
    tree_link(&s->meta, n, &s->rng);
    undo_push(s, U_META_INS, n);
    return 0;
}

static int
mt_meta_del(aps_txn *t, const char *key, size_t keylen)
{
    mem_store *s = MT(t);
    tnode *n;
    int rc;

    if (!tree_find(&s->meta, key, keylen))
        return APS_ENOENT;
    rc = undo_reserve(s);
    if (rc)
        return rc;
    n = tree_unlink(&s->meta, key, keylen);
    undo_push(s, U_META_DEL, n);
    return 0;
}

/* ---- reads ------------------------------------------------------------ */

static int
mem_job_get(aps_store *bs, const char *id, size_t idlen, void **data, size_t *len,
            aps_time *next_run)
{
    mem_store *s = M(bs);
    int rc = 0;
    mjob *j;

    pthread_rwlock_rdlock(&s->lock);
    j = job_find(s, id, idlen);
    if (!j) {
        rc = APS_ENOENT;
        goto out;
    }
    if (data) {
        *data = aps__store_memdup(j->data, j->len);
        if (!*data) {
            rc = APS_ENOMEM;
            goto out;
        }
    }
    if (len)
        *len = j->len;
    if (next_run)
        *next_run = j->next_run;
out:
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

/* State of a job scan (list or due). */
typedef struct scan {
    aps_store_job_cb cb;
    void *arg;
    size_t limit, seen;
    aps_time before; /* due scans only */
    int rc;          /* the visitor's stop value */
} scan;

static int
visit_job(scan *sc, const unsigned char *idp, size_t idlen, const mjob *j)
{
    char id[APS_STORE_ID_MAX + 1];
    int rc;

    if (sc->limit && sc->seen >= sc->limit)
        return WALK_STOP_DONE;
    sc->seen++;
    memcpy(id, idp, idlen);
    id[idlen] = '\0';
    aps__store_cb_enter();
    rc = sc->cb(sc->arg, id, j->data, j->len, j->next_run);
    aps__store_cb_leave();
    if (rc) {
        sc->rc = rc;
        return WALK_STOP_DONE;
    }
    return 0;
}

static int
list_visit(void *ctx, tnode *n)
{
    return visit_job(ctx, n->key, n->klen, n->val);
}

/* A min-heap of due-heap indexes: the frontier of an in-order walk. */
static void
front_push(const mem_store *s, size_t *f, size_t *n, size_t v)
{
    size_t i = (*n)++;

    while (i > 0 && hent_less(&s->heap[v], &s->heap[f[(i - 1) / 2]])) {
        f[i] = f[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    f[i] = v;
}

static size_t
front_pop(const mem_store *s, size_t *f, size_t *n)
{
    size_t top = f[0], last = f[--*n], i = 0;

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= *n)
            break;
        if (c + 1 < *n && hent_less(&s->heap[f[c + 1]], &s->heap[f[c]]))
            c++;
        if (!hent_less(&s->heap[f[c]], &s->heap[last]))
            break;
        f[i] = f[c];
        i = c;
    }
    if (*n > 0)
        f[i] = last;
    return top;
}

/* Visits the due heap in order: the smallest entry not visited yet is
 * always in the frontier, which holds the children of the visited ones
 * (so it never holds more than one entry more than were visited). */
static void
due_walk(const mem_store *s, scan *sc, size_t *f)
{
    size_t n = 0;

    if (s->hn)
        front_push(s, f, &n, 0);
    while (n) {
        size_t i = front_pop(s, f, &n);
        const hent *e = &s->heap[i];

        if (e->t > sc->before || visit_job(sc, e->j->id, e->j->idlen, e->j))
            break;
        if (2 * i + 1 < s->hn)
            front_push(s, f, &n, 2 * i + 1);
        if (2 * i + 2 < s->hn)
            front_push(s, f, &n, 2 * i + 2);
    }
}

static int
mem_job_list(aps_store *bs, const char *after, size_t afterlen, size_t limit, aps_store_job_cb cb,
             void *arg)
{
    mem_store *s = M(bs);
    scan sc = {cb, arg, limit, 0, 0, 0};

    pthread_rwlock_rdlock(&s->lock);
    tree_walk(s->jobs.root, after, afterlen, 0, list_visit, &sc);
    pthread_rwlock_unlock(&s->lock);
    return sc.rc;
}

static int
mem_due(aps_store *bs, aps_time before, size_t limit, aps_store_job_cb cb, void *arg)
{
    mem_store *s = M(bs);
    scan sc = {cb, arg, limit, 0, before, 0};
    size_t stack_front[1026], *front = stack_front;

    pthread_rwlock_rdlock(&s->lock);
    if (!limit || limit >= sizeof stack_front / sizeof *stack_front - 1) {
        front = malloc((s->hn + 1) * sizeof *front);
        if (!front) {
            pthread_rwlock_unlock(&s->lock);
            return APS_ENOMEM;
        }
    }
    due_walk(s, &sc, front);
    pthread_rwlock_unlock(&s->lock);
    if (front != stack_front)
        free(front);
    return sc.rc;
}

static int
mem_next_due(aps_store *bs, aps_time *out)
{
    mem_store *s = M(bs);

    pthread_rwlock_rdlock(&s->lock);
    *out = s->hn ? s->heap[0].t : APS_TIME_NONE;
    pthread_rwlock_unlock(&s->lock);
    return 0;
}

static int
mem_count(aps_store *bs, size_t *jobs, size_t *scheduled)
{
    mem_store *s = M(bs);

    pthread_rwlock_rdlock(&s->lock);
    *jobs = s->jobs.count;
    if (scheduled)
        *scheduled = s->hn;
    pthread_rwlock_unlock(&s->lock);
    return 0;
}

static int
mem_events(aps_store *bs, uint64_t after_seq, size_t limit, aps_store_event_cb cb, void *arg)
{
    mem_store *s = M(bs);
    uint64_t first;
    size_t i, seen = 0;
    int rc = 0;

    pthread_rwlock_rdlock(&s->lock);
    first = s->ev_last - s->ev_count + 1;
    i = after_seq < first ? 0 : (size_t)(after_seq - first + 1);
    if (after_seq >= s->ev_last)
        i = s->ev_count;
    for (; i < s->ev_count && !(limit && seen >= limit); i++, seen++) {
        mevent *e = ev_at(s, i);

        aps__store_cb_enter();
        rc = cb(arg, first + i, e->at, e->data, e->len);
        aps__store_cb_leave();
        if (rc)
            break;
    }
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

static int
mem_event_bounds(aps_store *bs, uint64_t *first, uint64_t *last)
{
    mem_store *s = M(bs);

    pthread_rwlock_rdlock(&s->lock);
    *last = s->ev_last;
    *first = s->ev_last ? s->ev_last - s->ev_count + 1 : 0;
    pthread_rwlock_unlock(&s->lock);
    return 0;
}

static int
mem_meta_get(aps_store *bs, const char *key, size_t keylen, void **data, size_t *len)
{
    mem_store *s = M(bs);
    tnode *n;
    mval *v;
    int rc = 0;

    pthread_rwlock_rdlock(&s->lock);
    n = tree_find(&s->meta, key, keylen);
    if (!n) {
        rc = APS_ENOENT;
        goto out;
    }
    v = n->val;
    if (data) {
        *data = aps__store_memdup(v->data, v->len);
        if (!*data) {
            rc = APS_ENOMEM;
            goto out;
        }
    }
    if (len)
        *len = v->len;
out:
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

typedef struct meta_scan {
    const char *prefix;
    size_t prefixlen;
    aps_store_meta_cb cb;
    void *arg;
    int rc;
} meta_scan;

static int
meta_visit(void *ctx, tnode *n)
{
    meta_scan *ms = ctx;
    char key[APS_STORE_META_KEY_MAX + 1];
    mval *v = n->val;
    int rc;

    if (n->klen < ms->prefixlen || memcmp(n->key, ms->prefix, ms->prefixlen))
        return WALK_STOP_DONE; /* past the keys with the prefix */
    memcpy(key, n->key, n->klen);
    key[n->klen] = '\0';
    aps__store_cb_enter();
    rc = ms->cb(ms->arg, key, v->data, v->len);
    aps__store_cb_leave();
    if (rc) {
        ms->rc = rc;
        return WALK_STOP_DONE;
    }
    return 0;
}

static int
mem_meta_scan(aps_store *bs, const char *prefix, size_t prefixlen, aps_store_meta_cb cb, void *arg)
{
    mem_store *s = M(bs);
    meta_scan ms = {prefix, prefixlen, cb, arg, 0};

    pthread_rwlock_rdlock(&s->lock);
    /* Keys with the prefix are contiguous and start at the prefix itself. */
    tree_walk(s->meta.root, prefixlen ? prefix : NULL, prefixlen, 1, meta_visit, &ms);
    pthread_rwlock_unlock(&s->lock);
    return ms.rc;
}

static int
mem_stats(aps_store *bs, aps_store_stats *out)
{
    mem_store *s = M(bs);

    pthread_rwlock_rdlock(&s->lock);
    *out = s->stats;
    pthread_rwlock_unlock(&s->lock);
    return 0;
}

/* Frees a whole tree; `job` says the nodes carry an mjob. */
static void
tree_free(tnode *n, int kind)
{
    while (n) {
        tnode *r = n->r;

        tree_free(n->l, kind);
        if (kind == 1)
            job_free(n);
        else if (kind == 2)
            free(n->val), free(n);
        n = r;
    }
}

static void
mem_close(aps_store *bs)
{
    mem_store *s = M(bs);

    tree_free(s->jobs.root, 1);
    tree_free(s->meta.root, 2);
    free(s->htab);
    free(s->heap);
    for (size_t i = 0; i < s->ev_count; i++)
        free(ev_at(s, i)->data);
    free(s->ev);
    free(s->undo);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

static const aps_store_ops mem_ops = {
    .name = "memory",
    .write = mem_write,
    .job_get = mem_job_get,
    .job_list = mem_job_list,
    .due = mem_due,
    .next_due = mem_next_due,
    .count = mem_count,
    .events = mem_events,
    .event_bounds = mem_event_bounds,
    .meta_get = mem_meta_get,
    .meta_scan = mem_meta_scan,
    .stats = mem_stats,
    .close = mem_close,
    .txn_job_get = mt_job_get,
    .txn_job_put = mt_job_put,
    .txn_job_del = mt_job_del,
    .txn_job_del_all = mt_job_del_all,
    .txn_event_append = mt_event_append,
    .txn_meta_get = mt_meta_get,
    .txn_meta_put = mt_meta_put,
    .txn_meta_del = mt_meta_del,
};

int
aps__store_open_memory(const aps_store_config *cfg, aps_store **out, aps_error *err)
{
    pthread_rwlockattr_t attr;
    mem_store *s;

    if (!out) {
        aps__store_seterr(err, APS_EINVAL, "store: no output handle");
        return APS_EINVAL;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        aps__store_seterr(err, APS_ENOMEM, "store: out of memory");
        return APS_ENOMEM;
    }
    s->base.ops = &mem_ops;
    if (cfg)
        s->base.cfg = *cfg;
    s->rng = (uint64_t)(uintptr_t)s ^ (uint64_t)aps__store_now() ^ UINT64_C(0x9e3779b97f4a7c15);
    if (!s->rng)
        s->rng = 1;
    /* Writer-preferring: a stream of readers must not starve writes. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&s->lock, &attr)) {
        pthread_rwlockattr_destroy(&attr);
        free(s);
        aps__store_seterr(err, APS_ENOMEM, "store: cannot create a lock");
        return APS_ENOMEM;
    }
    pthread_rwlockattr_destroy(&attr);
    *out = &s->base;
    return 0;
}
