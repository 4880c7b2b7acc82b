/*
 * The event pipeline. Events are appended to the durable log in the same
 * transaction as the change that caused them (or, for a job in another
 * store, in a write of their own right after), then published: put in an
 * in-memory ring in sequence order, from which subscribers and listeners
 * read. A subscriber is a cursor: it reads from the ring while it keeps up,
 * from the log when it falls behind, and gets a gap when the log has been
 * pruned past it. Publishing never waits for a reader, so a slow subscriber
 * cannot slow the scheduler.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "job.h"
#include "scheduler.h"

int
aps__evlist_push(aps__evlist *l, aps_event *ev)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        aps_event **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
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

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int
aps__event_new(aps_event_type type, aps_time at, const char *job_id, const char *jobstore,
               const char *executor, const char *run_id, const aps_time *run_times,
               size_t n_run_times, aps_event **out)
{
    aps_event *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return APS_ENOMEM;
    ev->type = type;
    ev->time = at;
    ev->job_id = dup_or_null(job_id);
    ev->jobstore = dup_or_null(jobstore);
    ev->executor = dup_or_null(executor);
    ev->run_id = dup_or_null(run_id);
    if (n_run_times > 0) {
        ev->run_times = malloc(n_run_times * sizeof(aps_time));
        if (ev->run_times != NULL) {
            memcpy(ev->run_times, run_times, n_run_times * sizeof(aps_time));
            ev->n_run_times = n_run_times;
        }
    }
    if ((job_id && !ev->job_id) || (jobstore && !ev->jobstore) || (executor && !ev->executor) ||
        (run_id && !ev->run_id) || (n_run_times && !ev->run_times)) {
        aps_event_free(ev);
        return APS_ENOMEM;
    }
    *out = ev;
    return 0;
}

int
aps__events_append(aps_txn *txn, aps__evlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        void *buf = NULL;
        size_t len = 0;
        int rc = aps__event_encode(l->v[i], &buf, &len);
        if (rc != 0)
            return rc;
        rc = aps__txn_event_append(txn, l->v[i]->time, buf, len, &l->v[i]->sequence);
        free(buf);
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

static void
signal_subscribers(aps_scheduler *s)
{
    uint64_t one = 1;
    for (aps_subscriber *sub = s->subs; sub != NULL; sub = sub->next_sub) {
        /* A full eventfd counter still reads as readable: ignore EAGAIN. */
        ssize_t w = write(sub->efd, &one, sizeof(one));
        (void)w;
    }
    pthread_cond_broadcast(&s->sub_cv);
}

/* Puts ev at the ring's head (its sequence is ring_next). Lock held. */
static void
ring_put(aps_scheduler *s, aps_event *ev)
{
    if (s->ring_next - s->ring_first == APS__RING_SIZE) {
        aps_event_free(s->ring[s->ring_first % APS__RING_SIZE]);
        s->ring[s->ring_first % APS__RING_SIZE] = NULL;
        s->ring_first++;
    }
    s->ring[s->ring_next % APS__RING_SIZE] = ev;
    s->ring_next++;
}

void
aps__events_publish(aps_scheduler *s, aps__evlist *l)
{
    int changed = 0;

    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < l->n; i++) {
        aps_event *ev = l->v[i];
        if (ev->sequence < s->ring_next) {
            aps_event_free(ev); /* already published (cannot happen) */
        } else if (ev->sequence == s->ring_next) {
            ring_put(s, ev);
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
                ring_put(s, s->early.v[i]);
                s->early.v[i] = s->early.v[--s->early.n];
                moved = changed = 1;
                break;
            }
        }
    }
    if (changed)
        signal_subscribers(s);
    pthread_mutex_unlock(&s->mu);
    if (changed)
        aps__scheduler_wake(s); /* listeners run on the loop thread */
}

void
aps__events_dispatch_listeners(aps_scheduler *s)
{
    /* Listeners read through a cursor of their own: from the ring while
     * they keep up, from the durable log when a burst outran the ring, so
     * no event is skipped (only what retention pruned). */
    for (;;) {
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
    pthread_mutex_lock(&s->mu);
    signal_subscribers(s);
    pthread_mutex_unlock(&s->mu);
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

static int
matches(const aps_subscriber *sub, const aps_event *ev)
{
    if (!(sub->mask & APS_EVENT_MASK(ev->type)))
        return 0;
    if (sub->job_id != NULL && (ev->job_id == NULL || strcmp(sub->job_id, ev->job_id) != 0))
        return 0;
    return 1;
}

int
aps_subscribe(aps_scheduler *s, uint64_t after, uint32_t mask, const char *job_id,
              aps_subscriber **out)
{
    aps_subscriber *sub = NULL;

    if (s == NULL || out == NULL)
        return APS_EINVAL;
    sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        return APS_ENOMEM;
    sub->s = s;
    sub->mask = mask ? mask : APS_EVENT_ALL;
    sub->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sub->efd < 0 || (job_id != NULL && (sub->job_id = strdup(job_id)) == NULL)) {
        if (sub->efd >= 0)
            close(sub->efd);
        free(sub);
        return APS_ENOMEM;
    }
    pthread_mutex_lock(&s->mu);
    sub->next = after == UINT64_MAX ? s->ring_next : after + 1;
    sub->next_sub = s->subs;
    if (s->subs)
        s->subs->prev_sub = sub;
    s->subs = sub;
    pthread_mutex_unlock(&s->mu);
    if (sub->next < s->ring_next) {
        uint64_t one = 1;
        ssize_t w = write(sub->efd, &one, sizeof(one));
        (void)w;
    }
    *out = sub;
    return 0;
}

typedef struct log_read {
    aps_subscriber *sub;
    aps_event *found;
    uint64_t last_seen;
    int rc;
} log_read;

static int
log_visit(void *arg, uint64_t seq, aps_time at, const void *data, size_t len)
{
    log_read *lr = arg;
    aps_event *ev = NULL;
    (void)at;
    lr->last_seen = seq;
    if (aps__event_decode(data, len, &ev) != 0)
        return 0; /* an undecodable record is skipped, not fatal */
    ev->sequence = seq;
    if (matches(lr->sub, ev)) {
        lr->found = ev;
        return 1;
    }
    aps_event_free(ev);
    return 0;
}

/* Reads the next matching event from the durable log (the cursor is behind
 * the ring). Lock not held. */
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
        log_read lr = {sub, NULL, sub->next - 1, 0};
        rc = aps__store_events(log, sub->next - 1, 256, log_visit, &lr);
        if (rc < 0)
            return rc;
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
        if (sub->next < s->ring_first) {
            uint64_t ring_first = s->ring_first;
            pthread_mutex_unlock(&s->mu);
            rc = next_from_log(sub, ring_first, ev, gap_first);
            if (rc != APS_ENOENT)
                return rc;
            pthread_mutex_lock(&s->mu);
            if (sub->next < s->ring_first)
                sub->next = s->ring_first; /* nothing matched in the log part */
            continue;
        }
        while (sub->next < s->ring_next) {
            const aps_event *src = s->ring[sub->next % APS__RING_SIZE];
            sub->next++;
            if (matches(sub, src)) {
                rc = aps__event_copy(src, ev);
                pthread_mutex_unlock(&s->mu);
                return rc;
            }
        }
        /* Caught up. */
        uint64_t drain;
        ssize_t r = read(sub->efd, &drain, sizeof(drain));
        (void)r;
        if (s->shut) {
            pthread_mutex_unlock(&s->mu);
            return APS_ESTATE;
        }
        if (timeout_us == 0) {
            pthread_mutex_unlock(&s->mu);
            return APS_ENOENT;
        }
        if (timeout_us < 0) {
            pthread_cond_wait(&s->sub_cv, &s->mu);
        } else if (pthread_cond_timedwait(&s->sub_cv, &s->mu, &deadline) == ETIMEDOUT &&
                   sub->next >= s->ring_next) {
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
    pthread_mutex_unlock(&s->mu);
    close(sub->efd);
    free(sub->job_id);
    free(sub);
}
