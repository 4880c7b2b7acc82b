/*
 * The event pipeline. Events are appended to the durable log in the same
 * transaction as the change that caused them (or, for a job in another
 * store, in a write of their own right after), then published: put in an
 * in-memory ring in sequence order, from which subscribers and listeners
 * read. A subscriber reads from the ring while it keeps up, from the log
 * when it falls behind, and gets a gap when the log has been pruned past
 * it. Publishing never waits for a reader, so a slow subscriber cannot
 * slow the scheduler; see "subscribers" below for how its cost stays
 * independent of the number of subscribers.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "job.h"
#include "scheduler.h"

static int
evlist_grow(aps__evlist *l)
{
    size_t cap = l->cap ? l->cap * 2 : 8;
    aps_event **v = realloc(l->v, cap * sizeof(*v));
    if (v == NULL)
        return APS_ENOMEM;
    l->v = v;
    if (l->pre != NULL) {
        aps__evbytes *pre = realloc(l->pre, cap * sizeof(*pre));
        if (pre == NULL)
            return APS_ENOMEM; /* (v grown: harmless, cap unchanged) */
        l->pre = pre;
    }
    l->cap = cap;
    return 0;
}

int
aps__evlist_push(aps__evlist *l, aps_event *ev)
{
    if (l->n == l->cap && evlist_grow(l) != 0)
        return APS_ENOMEM;
    if (l->pre != NULL)
        l->pre[l->n] = (aps__evbytes){NULL, 0};
    l->v[l->n++] = ev;
    return 0;
}

int
aps__evlist_push_encoded(aps__evlist *l, aps_event *ev, const void *p, size_t len)
{
    if (l->pre == NULL) {
        /* The first: the ones before it are encoded when appended. */
        size_t cap = l->cap ? l->cap : 8;
        l->pre = calloc(cap, sizeof(*l->pre));
        if (l->pre == NULL)
            return APS_ENOMEM;
    }
    if (l->n == l->cap && evlist_grow(l) != 0)
        return APS_ENOMEM;
    l->pre[l->n] = (aps__evbytes){p, len};
    l->v[l->n++] = ev;
    return 0;
}

void
aps__evlist_clear(aps__evlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        aps_event_free(l->v[i]);
    l->n = 0;
}

void
aps__evlist_dispose(aps__evlist *l)
{
    aps__evlist_clear(l);
    free(l->v);
    free(l->pre);
    free(l->enc.p);
    memset(l, 0, sizeof(*l));
}

/* Copies s (NULL allowed) to *p, advancing it; returns the copy. */
static char *
pack_str(char **p, const char *s, size_t len)
{
    char *d;
    if (s == NULL)
        return NULL;
    d = memcpy(*p, s, len);
    *p += len;
    return d;
}

int
aps__event_new(aps_event_type type, aps_time at, const char *job_id, const char *jobstore,
               const char *executor, const char *run_id, const aps_time *run_times,
               size_t n_run_times, aps_event **out)
{
    /* One allocation: the loop makes two events per run. */
    size_t idl = job_id ? strlen(job_id) + 1 : 0, stl = jobstore ? strlen(jobstore) + 1 : 0;
    size_t exl = executor ? strlen(executor) + 1 : 0, rnl = run_id ? strlen(run_id) + 1 : 0;
    size_t tl = n_run_times * sizeof(aps_time);
    aps_event *ev = malloc(sizeof(*ev) + tl + idl + stl + exl + rnl);
    char *p;

    if (ev == NULL)
        return APS_ENOMEM;
    memset(ev, 0, sizeof(*ev));
    ev->packed = 1;
    ev->type = type;
    ev->time = at;
    if (n_run_times > 0) {
        ev->run_times = (aps_time *)(ev + 1);
        memcpy(ev->run_times, run_times, tl);
        ev->n_run_times = n_run_times;
    }
    p = (char *)(ev + 1) + tl;
    ev->job_id = pack_str(&p, job_id, idl);
    ev->jobstore = pack_str(&p, jobstore, stl);
    ev->executor = pack_str(&p, executor, exl);
    ev->run_id = pack_str(&p, run_id, rnl);
    *out = ev;
    return 0;
}

int
aps__events_append(aps_txn *txn, aps__evlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        int rc = 0;
        if (l->pre != NULL && l->pre[i].p != NULL) {
            rc = aps__txn_event_append(txn, l->v[i]->time, l->pre[i].p, l->pre[i].len,
                                       &l->v[i]->sequence);
            if (rc != 0)
                return rc;
            continue;
        }
        rc = aps__event_encode_into(l->v[i], &l->enc);
        if (rc == 0)
            rc = aps__txn_event_append(txn, l->v[i]->time, l->enc.p, l->enc.len,
                                       &l->v[i]->sequence);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
append_fn(aps_txn *txn, void *arg)
{
    return aps__events_append(txn, arg);
}

int
aps__events_commit(aps_scheduler *s, aps__evlist *l)
{
    if (l->n == 0)
        return 0;
    return aps__store_write(s->stores[s->log_store].st, append_fn, l);
}

/* Subscribers to wake once the lock is released (see deliver). */
typedef struct sigs {
    aps_subscriber *local[32];
    aps_subscriber **v;
    size_t n, cap;
} sigs;

static void deliver_event(aps_scheduler *s, const aps_event *ev, sigs *g);

static void
sigs_init(sigs *g)
{
    g->v = g->local;
    g->n = 0;
    g->cap = sizeof(g->local) / sizeof(g->local[0]);
}

static void
efd_write(int fd)
{
    uint64_t one = 1;
    /* A full eventfd counter still reads as readable: ignore EAGAIN. */
    ssize_t w = write(fd, &one, sizeof(one));
    (void)w;
}

/* Frees a subscriber whose last reference went. */
static void
sub_free(aps_subscriber *sub)
{
    close(sub->efd);
    for (size_t i = 0; i < sub->n_ids; i++)
        free(sub->ids[i]);
    free(sub->ids);
    free(sub->id_tab);
    free(sub->nodes);
    free(sub->q);
    free(sub);
}

static void
sub_unref(aps_subscriber *sub)
{
    if (__atomic_sub_fetch(&sub->refs, 1, __ATOMIC_ACQ_REL) == 0)
        sub_free(sub);
}

/* Lock held. The subscriber's fd is written once the lock is released,
 * under a reference, so that a concurrent close cannot free it (and its
 * fd number be reused) in between. */
static void
sigs_add(sigs *g, aps_subscriber *sub)
{
    if (g->n == g->cap) {
        aps_subscriber **v = malloc(2 * g->cap * sizeof(*v));
        if (v == NULL) {
            efd_write(sub->efd); /* out of memory: under the lock, rarely */
            return;
        }
        memcpy(v, g->v, g->n * sizeof(*v));
        if (g->v != g->local)
            free(g->v);
        g->v = v;
        g->cap *= 2;
    }
    __atomic_add_fetch(&sub->refs, 1, __ATOMIC_RELAXED);
    g->v[g->n++] = sub;
}

/* Lock not held. */
static void
sigs_flush(sigs *g)
{
    for (size_t i = 0; i < g->n; i++) {
        efd_write(g->v[i]->efd);
        sub_unref(g->v[i]);
    }
    if (g->v != g->local)
        free(g->v);
    sigs_init(g);
}

/* Puts ev at the ring's head (its sequence is ring_next) and queues it for
 * the live subscribers it matches. The event it pushes out goes to `dead`,
 * freed once the lock is released. Lock held. */
static void
ring_put(aps_scheduler *s, aps_event *ev, sigs *g, aps__evlist *dead)
{
    if (s->ring_next - s->ring_first == APS__RING_SIZE) {
        aps_event *old = s->ring[s->ring_first % APS__RING_SIZE];
        if (aps__evlist_push(dead, old) != 0)
            aps_event_free(old);
        s->ring[s->ring_first % APS__RING_SIZE] = NULL;
        s->ring_first++;
    }
    s->ring[s->ring_next % APS__RING_SIZE] = ev;
    s->ring_next++;
    deliver_event(s, ev, g);
}

void
aps__events_publish(aps_scheduler *s, aps__evlist *l)
{
    int changed = 0, listeners;
    aps__evlist dead = {0};
    sigs g;

    sigs_init(&g);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < l->n; i++) {
        aps_event *ev = l->v[i];
        if (ev->sequence < s->ring_next) {
            aps_event_free(ev); /* already published (cannot happen) */
        } else if (ev->sequence == s->ring_next) {
            ring_put(s, ev, &g, &dead);
            changed = 1;
        } else if (aps__evlist_push(&s->early, ev) != 0) {
            aps_event_free(ev);
        }
    }
    l->n = 0;
    /* Concurrent commits may publish out of order: drain what now fits. */
    for (int moved = 1; moved && s->early.n > 0;) {
        moved = 0;
        for (size_t i = 0; i < s->early.n; i++) {
            if (s->early.v[i]->sequence == s->ring_next) {
                ring_put(s, s->early.v[i], &g, &dead);
                s->early.v[i] = s->early.v[--s->early.n];
                moved = changed = 1;
                break;
            }
        }
    }
    if (changed && s->sub_waiters > 0)
        pthread_cond_broadcast(&s->sub_cv);
    /* Listeners run on the loop thread: wake it only when there are some
     * (a wake-up is a syscall and a whole loop pass). */
    listeners = changed && s->listener_cursor != NULL;
    pthread_mutex_unlock(&s->mu);
    sigs_flush(&g);
    aps__evlist_dispose(&dead);
    if (listeners)
        aps__scheduler_wake(s);
}

void
aps__events_dispatch_listeners(aps_scheduler *s, size_t max)
{
    /* Listeners read through a cursor of their own: from the ring while
     * they keep up, from the durable log when a burst outran the ring, so
     * no event is skipped (only what retention pruned). At most `max`
     * events per call (0: all): listeners slower than the events come
     * would otherwise hold the loop's pass (no job would fire); the rest
     * waits for the next pass, which a wake-up brings at once. */
    for (size_t k = 0;; k++) {
        if (max != 0 && k == max) {
            aps__scheduler_wake(s);
            return;
        }
        aps__listener *ls = NULL;
        size_t n = 0;
        aps_event *ev = NULL;

        pthread_mutex_lock(&s->mu);
        aps_subscriber *cursor = s->listener_cursor;
        pthread_mutex_unlock(&s->mu);
        if (cursor == NULL)
            return;
        int rc = aps_subscriber_next(cursor, 0, &ev, NULL);
        if (rc == APS_ERANGE)
            continue; /* pruned: the cursor moved to the oldest kept */
        if (rc != 0)
            return;
        pthread_mutex_lock(&s->mu);
        if (s->n_listeners > 0) {
            ls = malloc(s->n_listeners * sizeof(*ls));
            if (ls != NULL) {
                memcpy(ls, s->listeners, s->n_listeners * sizeof(*ls));
                n = s->n_listeners;
            }
        }
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < n; i++) {
            if (ls[i].mask & APS_EVENT_MASK(ev->type))
                ls[i].fn(ev, ls[i].userdata);
        }
        free(ls);
        aps_event_free(ev);
    }
}

void
aps__events_wake_all(aps_scheduler *s)
{
    sigs g;

    sigs_init(&g);
    pthread_mutex_lock(&s->mu);
    for (aps_subscriber *sub = s->subs; sub != NULL; sub = sub->next_sub)
        sigs_add(&g, sub);
    pthread_cond_broadcast(&s->sub_cv);
    pthread_mutex_unlock(&s->mu);
    sigs_flush(&g);
}

void
aps__events_dispose(aps_scheduler *s)
{
    for (uint64_t q = s->ring_first; q < s->ring_next; q++)
        aps_event_free(s->ring[q % APS__RING_SIZE]);
    s->ring_first = s->ring_next;
    aps__evlist_clear(&s->early);
    free(s->early.v);
    s->early.v = NULL;
    s->early.cap = 0;
    free(s->sub_ids);
    s->sub_ids = NULL;
    s->sub_ids_cap = s->sub_ids_n = 0;
}

int
aps_scheduler_add_listener(aps_scheduler *s, aps_listener_fn fn, uint32_t mask, void *userdata)
{
    aps_subscriber *cursor = NULL;
    if (s == NULL || fn == NULL)
        return APS_EINVAL;
    pthread_mutex_lock(&s->mu);
    int need_cursor = s->listener_cursor == NULL;
    pthread_mutex_unlock(&s->mu);
    /* A new listener hears events from now on, as APScheduler's. */
    if (need_cursor) {
        int rc = aps_subscribe(s, UINT64_MAX, APS_EVENT_ALL, NULL, &cursor);
        if (rc != 0)
            return rc;
    }
    pthread_mutex_lock(&s->mu);
    aps__listener *v = realloc(s->listeners, (s->n_listeners + 1) * sizeof(*v));
    if (v == NULL) {
        pthread_mutex_unlock(&s->mu);
        aps_subscriber_close(cursor);
        return APS_ENOMEM;
    }
    s->listeners = v;
    v[s->n_listeners++] = (aps__listener){fn, mask, userdata};
    if (s->listener_cursor == NULL) {
        s->listener_cursor = cursor;
        cursor = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    aps_subscriber_close(cursor); /* lost a race: one cursor is enough */
    return 0;
}

int
aps_scheduler_remove_listener(aps_scheduler *s, aps_listener_fn fn, void *userdata)
{
    int rc = APS_ENOENT;
    if (s == NULL)
        return APS_EINVAL;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_listeners; i++) {
        if (s->listeners[i].fn == fn && s->listeners[i].userdata == userdata) {
            memmove(&s->listeners[i], &s->listeners[i + 1],
                    (s->n_listeners - i - 1) * sizeof(*s->listeners));
            s->n_listeners--;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int
aps_scheduler_event_bounds(aps_scheduler *s, uint64_t *first, uint64_t *last)
{
    if (s == NULL)
        return APS_EINVAL;
    return aps__store_event_bounds(s->stores[s->log_store].st, first, last);
}

/* ---- subscribers ---------------------------------------------------------- */

/*
 * A subscriber is in one of two modes.
 *
 * Live (caught up with the ring's head): publish matches each event against
 * the index (a hash of job id -> subscribers filtering on it, and per event
 * type the subscribers without a job filter), so an event costs
 * O(subscribers it matches), not O(subscribers). The matching sequence is
 * appended to the subscriber's own queue, and aps_subscriber_next pops it
 * and copies the event from the ring: no scan. The eventfd is written only
 * when the subscriber asked for it (`armed`: the last aps_subscriber_next
 * found nothing), after the lock is released, so a publish makes at most
 * one syscall per subscriber that was idle and now has something.
 *
 * Cursor (behind): when its queue overflows (a slow reader) or the ring
 * overwrote a queued sequence, the subscriber scans from its oldest
 * undelivered sequence, as before: the ring (a chunk per lock hold), the
 * log when the ring no longer has it (records peeked at, decoded only when
 * they match), a gap when the log was pruned. When the scan reaches the
 * ring's head it turns live again under the lock, so nothing published
 * meanwhile is missed or seen twice. Sequence order holds in both modes.
 */

/* Sequences queued per live subscriber: at most a quarter of the ring
 * (16 KiB), so that 1000 subscribers cost little; one that falls further
 * behind scans the ring (cheap: a filter test per event) or the log. */
#define SUBQ_MIN 16u
#define SUBQ_MAX ((uint32_t)APS__RING_SIZE / 4)
/* Ring entries a behind subscriber examines per lock hold. */
#define SCAN_CHUNK 512
/* Log records a behind subscriber examines per read transaction (a
 * record that does not match costs a peek, no decode). */
#define LOG_BATCH 2048

static uint32_t
hash_id(const char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h ? h : 1; /* 0 means "not computed" (matches_raw) */
}

static void
node_link(aps__sub_node **head, aps__sub_node *n)
{
    n->next = *head;
    if (*head != NULL)
        (*head)->pprev = &n->next;
    *head = n;
    n->pprev = head;
}

static void
node_unlink(aps__sub_node *n)
{
    if (n->pprev == NULL)
        return;
    *n->pprev = n->next;
    if (n->next != NULL)
        n->next->pprev = n->pprev;
    n->next = NULL;
    n->pprev = NULL;
}

/* Makes room in the job id index for `more` entries (load factor <= 1).
 * Lock held. */
static int
ids_reserve(aps_scheduler *s, size_t more)
{
    size_t want = s->sub_ids_n + more, cap = s->sub_ids_cap;
    if (want <= cap)
        return 0;
    if (cap == 0)
        cap = 64;
    while (cap < want)
        cap *= 2;
    aps__sub_node **b = calloc(cap, sizeof(*b));
    if (b == NULL)
        return APS_ENOMEM;
    for (size_t i = 0; i < s->sub_ids_cap; i++) {
        while (s->sub_ids[i] != NULL) {
            aps__sub_node *n = s->sub_ids[i];
            node_unlink(n);
            node_link(&b[n->hash & (cap - 1)], n);
        }
    }
    free(s->sub_ids);
    s->sub_ids = b;
    s->sub_ids_cap = cap;
    return 0;
}

/* The filter, for the cursor mode (the live mode uses the index). The job
 * id need not be NUL-terminated (a log record's, peeked at); h is its
 * hash_id (computed when 0 is given). */
static int
matches_raw(const aps_subscriber *sub, aps_event_type type, const char *job_id, size_t len,
            uint32_t h)
{
    if ((unsigned)type > 31 || !(sub->mask & APS_EVENT_MASK(type)))
        return 0;
    if (sub->n_ids == 0)
        return 1;
    if (job_id == NULL)
        return 0;
    if (h == 0)
        h = hash_id(job_id, len);
    for (uint32_t i = h & sub->id_mask; sub->id_tab[i] != 0; i = (i + 1) & sub->id_mask) {
        const aps__sub_node *n = &sub->nodes[sub->id_tab[i] - 1];
        if (n->hash == h && n->len == len && memcmp(n->id, job_id, len) == 0)
            return 1;
    }
    return 0;
}

/* A ring event (lock held): its id's hash and length were kept at publish. */
static int
matches_ring(const aps_scheduler *s, const aps_subscriber *sub, uint64_t seq)
{
    const aps_event *ev = s->ring[seq % APS__RING_SIZE];
    return matches_raw(sub, ev->type, ev->job_id, s->ring_len[seq % APS__RING_SIZE],
                       s->ring_hash[seq % APS__RING_SIZE]);
}

/* Back to the cursor mode from `from`, its oldest undelivered sequence.
 * Lock held. */
static void
leave_live(aps_subscriber *sub, uint64_t from)
{
    sub->live = 0;
    sub->next = from;
    sub->q_head = sub->q_len = 0;
}

/* Doubles the queue (keeping its order). Lock held. */
static int
q_grow(aps_subscriber *sub)
{
    uint32_t cap = sub->q_cap ? sub->q_cap * 2 : SUBQ_MIN;
    if (cap > SUBQ_MAX)
        return APS_ENOMEM;
    uint64_t *q = malloc(cap * sizeof(*q));
    if (q == NULL)
        return APS_ENOMEM;
    for (uint32_t i = 0; i < sub->q_len; i++)
        q[i] = sub->q[(sub->q_head + i) & (sub->q_cap - 1)];
    free(sub->q);
    sub->q = q;
    sub->q_cap = cap;
    sub->q_head = 0;
    return 0;
}

/* Queues `seq` for a subscriber it matched. Lock held. */
static void
deliver(aps_subscriber *sub, uint64_t seq, sigs *g)
{
    if (!sub->live || seq < sub->next)
        return;
    if (sub->q_len == sub->q_cap && q_grow(sub) != 0) {
        /* Too far behind to queue: it reads the ring and the log instead,
         * from its oldest undelivered event. */
        leave_live(sub, sub->q_len > 0 ? sub->q[sub->q_head] : seq);
    } else {
        sub->q[(sub->q_head + sub->q_len) & (sub->q_cap - 1)] = seq;
        sub->q_len++;
    }
    if (sub->armed) {
        sub->armed = 0;
        sigs_add(g, sub);
    }
}

/* Publish-time matching of one event. Lock held. */
static void
deliver_event(aps_scheduler *s, const aps_event *ev, sigs *g)
{
    size_t len = ev->job_id != NULL ? strlen(ev->job_id) : 0;
    uint32_t h = ev->job_id != NULL ? hash_id(ev->job_id, len) : 0;
    s->ring_hash[ev->sequence % APS__RING_SIZE] = h;
    s->ring_len[ev->sequence % APS__RING_SIZE] = (uint32_t)(len < UINT32_MAX ? len : UINT32_MAX);
    if ((unsigned)ev->type > APS_EVENT_JOB_MAX_INSTANCES)
        return;
    for (aps__sub_node *n = s->sub_types[ev->type]; n != NULL; n = n->next)
        deliver(n->sub, ev->sequence, g);
    if (ev->job_id == NULL || s->sub_ids_n == 0)
        return;
    uint32_t bit = APS_EVENT_MASK(ev->type);
    for (aps__sub_node *n = s->sub_ids[h & (s->sub_ids_cap - 1)]; n != NULL; n = n->next) {
        if (n->hash == h && (n->sub->mask & bit) && strcmp(n->id, ev->job_id) == 0)
            deliver(n->sub, ev->sequence, g);
    }
}

int
aps_subscribe_ids(aps_scheduler *s, uint64_t after, uint32_t mask, const char *const *ids,
                  size_t n_ids, aps_subscriber **out)
{
    aps_subscriber *sub = NULL;
    int rc = APS_ENOMEM, wake = 0;

    if (s == NULL || out == NULL || (n_ids > 0 && ids == NULL) || n_ids > UINT32_MAX / 4)
        return APS_EINVAL;
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] == NULL)
            return APS_EINVAL;
    sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        return APS_ENOMEM;
    sub->s = s;
    sub->mask = mask ? mask : APS_EVENT_ALL;
    sub->refs = 1;
    sub->armed = 1; /* a poll loop may wait before its first next */
    sub->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sub->efd < 0) {
        free(sub);
        return APS_ENOMEM;
    }
    if (n_ids > 0) {
        /* The ids, unique (an event is queued once however often its id
         * was given), with a hash table for the cursor mode's filter. */
        uint32_t cap = 4;
        while (cap < 2 * n_ids)
            cap *= 2;
        sub->id_mask = cap - 1;
        sub->ids = calloc(n_ids, sizeof(char *));
        sub->nodes = calloc(n_ids, sizeof(*sub->nodes));
        sub->id_tab = calloc(cap, sizeof(*sub->id_tab));
        if (sub->ids == NULL || sub->nodes == NULL || sub->id_tab == NULL)
            goto fail;
        for (size_t i = 0; i < n_ids; i++) {
            size_t len = strlen(ids[i]);
            if (len > UINT32_MAX) {
                rc = APS_EINVAL;
                goto fail;
            }
            uint32_t h = hash_id(ids[i], len), k = h & sub->id_mask;
            for (; sub->id_tab[k] != 0; k = (k + 1) & sub->id_mask) {
                const aps__sub_node *n = &sub->nodes[sub->id_tab[k] - 1];
                if (n->hash == h && n->len == len && memcmp(n->id, ids[i], len) == 0)
                    break;
            }
            if (sub->id_tab[k] != 0)
                continue; /* given twice */
            char *id = strdup(ids[i]);
            if (id == NULL)
                goto fail;
            sub->ids[sub->n_ids] = id;
            sub->nodes[sub->n_ids] =
                (aps__sub_node){.sub = sub, .id = id, .hash = h, .len = (uint32_t)len};
            sub->id_tab[k] = (uint32_t)++sub->n_ids;
        }
        sub->n_nodes = sub->n_ids;
    } else {
        for (int t = APS_EVENT_SCHEDULER_STARTED; t <= APS_EVENT_JOB_MAX_INSTANCES; t++)
            if (sub->mask & APS_EVENT_MASK(t))
                sub->n_nodes++;
        if (sub->n_nodes > 0 && (sub->nodes = calloc(sub->n_nodes, sizeof(*sub->nodes))) == NULL)
            goto fail;
    }

    pthread_mutex_lock(&s->mu);
    if (sub->n_ids > 0) {
        rc = ids_reserve(s, sub->n_ids);
        if (rc != 0) {
            pthread_mutex_unlock(&s->mu);
            goto fail;
        }
        for (size_t i = 0; i < sub->n_ids; i++)
            node_link(&s->sub_ids[sub->nodes[i].hash & (s->sub_ids_cap - 1)], &sub->nodes[i]);
        s->sub_ids_n += sub->n_ids;
    } else {
        size_t i = 0;
        for (int t = APS_EVENT_SCHEDULER_STARTED; t <= APS_EVENT_JOB_MAX_INSTANCES; t++) {
            if (sub->mask & APS_EVENT_MASK(t)) {
                sub->nodes[i].sub = sub;
                node_link(&s->sub_types[t], &sub->nodes[i++]);
            }
        }
    }
    sub->next = after == UINT64_MAX ? s->ring_next : after + 1;
    if (sub->next >= s->ring_next) {
        sub->live = 1;
    } else {
        sub->armed = 0; /* events are waiting: readable now */
        wake = 1;
    }
    sub->next_sub = s->subs;
    if (s->subs)
        s->subs->prev_sub = sub;
    s->subs = sub;
    pthread_mutex_unlock(&s->mu);
    if (wake)
        efd_write(sub->efd);
    *out = sub;
    return 0;

fail:
    sub_free(sub);
    return rc;
}

int
aps_subscribe(aps_scheduler *s, uint64_t after, uint32_t mask, const char *job_id,
              aps_subscriber **out)
{
    return aps_subscribe_ids(s, after, mask, job_id ? &job_id : NULL, job_id ? 1 : 0, out);
}

typedef struct log_read {
    aps_subscriber *sub;
    aps_event *found;
    uint64_t last_seen;
    uint64_t gap; /* the first record after a hole (pruned meanwhile); 0: none */
    int rc;
} log_read;

static int
log_visit(void *arg, uint64_t seq, aps_time at, const void *data, size_t len)
{
    log_read *lr = arg;
    aps_event *ev = NULL;
    aps_event_type type;
    const char *job_id;
    size_t job_id_len;
    (void)at;
    /* The log has no holes but at its old end: a record past the next one
     * means a prune (a commit's, after the bounds were read) took those
     * between, and the reader must get a gap, not skip them unnoticed. */
    if (seq != lr->last_seen + 1) {
        lr->gap = seq;
        return 1;
    }
    lr->last_seen = seq;
    /* Most records do not match a filtered subscriber: peek at the type
     * and job id, and decode only the ones that do. An undecodable record
     * is skipped, not fatal. */
    if (aps__event_peek(data, len, &type, &job_id, &job_id_len) != 0 ||
        !matches_raw(lr->sub, type, job_id, job_id_len, 0) ||
        aps__event_decode(data, len, &ev) != 0)
        return 0;
    ev->sequence = seq;
    lr->found = ev;
    return 1;
}

/* Reads the next matching event from the durable log (the cursor is behind
 * the ring). Lock not held; the cursor fields are the reader's own while it
 * is not live. */
static int
next_from_log(aps_subscriber *sub, uint64_t ring_first, aps_event **ev, uint64_t *gap_first)
{
    aps_store *log = sub->s->stores[sub->s->log_store].st;
    uint64_t first = 0, last = 0;
    int rc = aps__store_event_bounds(log, &first, &last);
    if (rc != 0)
        return rc;
    if (sub->next < first) {
        if (gap_first)
            *gap_first = first;
        sub->next = first;
        return APS_ERANGE;
    }
    while (sub->next < ring_first && sub->next <= last) {
        log_read lr = {sub, NULL, sub->next - 1, 0, 0};
        rc = aps__store_events(log, sub->next - 1, LOG_BATCH, log_visit, &lr);
        if (rc < 0)
            return rc;
        if (lr.gap != 0) {
            if (gap_first)
                *gap_first = lr.gap;
            sub->next = lr.gap;
            return APS_ERANGE;
        }
        if (lr.found != NULL) {
            sub->next = lr.found->sequence + 1;
            *ev = lr.found;
            return 0;
        }
        if (lr.last_seen < sub->next) {
            /* Pruned between the bounds and the read: report the gap. */
            rc = aps__store_event_bounds(log, &first, &last);
            if (rc != 0)
                return rc;
            if (sub->next < first) {
                if (gap_first)
                    *gap_first = first;
                sub->next = first;
                return APS_ERANGE;
            }
            break;
        }
        sub->next = lr.last_seen + 1;
    }
    return APS_ENOENT;
}

static void
deadline_after(struct timespec *ts, int64_t us)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += us / 1000000;
    ts->tv_nsec += (us % 1000000) * 1000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int
aps_subscriber_next(aps_subscriber *sub, int64_t timeout_us, aps_event **ev, uint64_t *gap_first)
{
    aps_scheduler *s;
    struct timespec deadline;
    int rc;

    if (sub == NULL || ev == NULL)
        return APS_EINVAL;
    s = sub->s;
    *ev = NULL;
    if (timeout_us > 0)
        deadline_after(&deadline, timeout_us);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (sub->live) {
            if (sub->q_len > 0) {
                uint64_t seq = sub->q[sub->q_head];
                if (seq < s->ring_first) {
                    /* The ring overwrote it: read on from the log. */
                    leave_live(sub, seq);
                    continue;
                }
                rc = aps__event_copy(s->ring[seq % APS__RING_SIZE], ev);
                if (rc == 0) {
                    sub->q_head = (sub->q_head + 1) & (sub->q_cap - 1);
                    sub->q_len--;
                }
                pthread_mutex_unlock(&s->mu);
                return rc;
            }
        } else if (sub->next < s->ring_first) {
            uint64_t ring_first = s->ring_first;
            pthread_mutex_unlock(&s->mu);
            rc = next_from_log(sub, ring_first, ev, gap_first);
            if (rc != APS_ENOENT)
                return rc;
            pthread_mutex_lock(&s->mu);
            /* Nothing matched in the log up to the ring's start as it was
             * then: on from there. Not from its start now, which may have
             * moved on meanwhile past events nobody looked at. */
            if (sub->next < ring_first)
                sub->next = ring_first;
            continue;
        } else {
            uint64_t end = s->ring_next;
            if (end > sub->next && end - sub->next > SCAN_CHUNK)
                end = sub->next + SCAN_CHUNK;
            for (; sub->next < end; sub->next++) {
                if (matches_ring(s, sub, sub->next)) {
                    rc = aps__event_copy(s->ring[sub->next % APS__RING_SIZE], ev);
                    if (rc == 0)
                        sub->next++;
                    pthread_mutex_unlock(&s->mu);
                    return rc;
                }
            }
            if (sub->next < s->ring_next) {
                /* A chunk examined: let the publishers in. */
                pthread_mutex_unlock(&s->mu);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            /* At the head: live from here on (under the lock, so no
             * publish falls between the scan and the queue). */
            sub->live = 1;
            sub->q_head = sub->q_len = 0;
        }
        /* Caught up. Clear the fd before arming it, so that a poll loop
         * does not spin; anything published meanwhile is seen below. */
        pthread_mutex_unlock(&s->mu);
        uint64_t drain;
        ssize_t r = read(sub->efd, &drain, sizeof(drain));
        (void)r;
        pthread_mutex_lock(&s->mu);
        if (!sub->live || sub->q_len > 0)
            continue;
        if (s->shut) {
            pthread_mutex_unlock(&s->mu);
            return APS_ESTATE;
        }
        sub->armed = 1;
        if (timeout_us == 0) {
            pthread_mutex_unlock(&s->mu);
            return APS_ENOENT;
        }
        s->sub_waiters++;
        int timed_out = 0;
        if (timeout_us < 0)
            pthread_cond_wait(&s->sub_cv, &s->mu);
        else
            timed_out = pthread_cond_timedwait(&s->sub_cv, &s->mu, &deadline) == ETIMEDOUT;
        s->sub_waiters--;
        if (timed_out && sub->live && sub->q_len == 0 && !s->shut) {
            pthread_mutex_unlock(&s->mu);
            return APS_ENOENT;
        }
    }
}

int
aps_subscriber_fd(aps_subscriber *sub)
{
    return sub ? sub->efd : -1;
}

int
aps_subscriber_position(aps_subscriber *sub, uint64_t *seq)
{
    if (sub == NULL || seq == NULL)
        return APS_EINVAL;
    aps_scheduler *s = sub->s;
    pthread_mutex_lock(&s->mu);
    if (!sub->live)
        *seq = sub->next - 1;
    else if (sub->q_len > 0)
        *seq = sub->q[sub->q_head] - 1;
    else /* everything published was matched at publish, and delivered */
        *seq = (sub->next > s->ring_next ? sub->next : s->ring_next) - 1;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void
aps_subscriber_close(aps_subscriber *sub)
{
    if (sub == NULL)
        return;
    aps_scheduler *s = sub->s;
    pthread_mutex_lock(&s->mu);
    if (sub->prev_sub)
        sub->prev_sub->next_sub = sub->next_sub;
    else
        s->subs = sub->next_sub;
    if (sub->next_sub)
        sub->next_sub->prev_sub = sub->prev_sub;
    for (size_t i = 0; i < sub->n_nodes; i++)
        node_unlink(&sub->nodes[i]);
    s->sub_ids_n -= sub->n_ids;
    sub->live = 0;
    pthread_mutex_unlock(&s->mu);
    /* A publish may still be writing its fd: the last reference frees it. */
    sub_unref(sub);
}
