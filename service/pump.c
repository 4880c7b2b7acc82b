/* The stream pump: an epoll thread over every stream source. See pump.h. */
#include "service/pump.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "service/log.h"

struct aps_pump {
    int epfd, efd;
    int tick_ms;
    pthread_t th;
    int running;
    atomic_int stopping;
    atomic_int count;
    pthread_mutex_t mu;
    aps_pump_src *incoming; /* added, not yet taken by the thread (mu) */
    /* Sources woken from any thread: a lock-free stack (push: CAS; the
     * thread takes it whole), so a wake never waits for the pump. */
    _Atomic(aps_pump_src *) wakes;
    aps_pump_src *list;     /* the thread's own */
    aps_pump_src *ready, *ready_tail; /* the thread's own: to service, in order */
};

static void
kick(aps_pump *p)
{
    uint64_t one = 1;
    ssize_t w = write(p->efd, &one, sizeof one);
    (void)w;
}

/*
 * Wake-ups. `pending` goes 0 -> 1 when a wake is due, and whoever makes
 * that transition (a waker, the epoll loop, take_incoming) queues the
 * source once, on the wake stack or the ready list; it goes back to 0
 * only when the pump takes the source off the ready list. So a source is
 * queued at most once, and a source that ends while queued (`dead`) is
 * released when taken off, never while the queue holds it.
 */

/* Pump thread. */
static void
ready_push(aps_pump *p, aps_pump_src *s)
{
    s->ready_next = NULL;
    if (p->ready_tail)
        p->ready_tail->ready_next = s;
    else
        p->ready = s;
    p->ready_tail = s;
}

/* Moves the woken sources to the ready list, oldest first. Pump thread. */
static void
take_wakes(aps_pump *p)
{
    aps_pump_src *w = atomic_exchange(&p->wakes, NULL), *rev = NULL;
    while (w != NULL) {
        aps_pump_src *n = w->ready_next;
        w->ready_next = rev;
        rev = w;
        w = n;
    }
    while (rev != NULL) {
        aps_pump_src *n = rev->ready_next;
        ready_push(p, rev);
        rev = n;
    }
}

static void
unlink_src(aps_pump *p, aps_pump_src *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        p->list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->fd >= 0)
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    atomic_fetch_sub(&p->count, 1);
}

static void
take_incoming(aps_pump *p)
{
    pthread_mutex_lock(&p->mu);
    aps_pump_src *in = p->incoming;
    p->incoming = NULL;
    /* Queued for a first service here; from now on wakes queue it (see
     * aps_pump_wake: under mu, so none falls in between). */
    for (aps_pump_src *s = in; s != NULL; s = s->next) {
        atomic_store(&s->pending, 1);
        atomic_store(&s->added, 1);
    }
    pthread_mutex_unlock(&p->mu);
    while (in != NULL) {
        aps_pump_src *s = in;
        in = in->next;
        s->prev = NULL;
        s->next = p->list;
        if (p->list)
            p->list->prev = s;
        p->list = s;
        if (s->fd >= 0) {
            struct epoll_event ee = {.events = EPOLLIN | EPOLLET, .data.ptr = s};
            if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, s->fd, &ee) != 0)
                aps_log(APS_LOG_ERROR, "pump: epoll_ctl failed", "errno=%d", errno);
        }
        ready_push(p, s);
    }
}

/* A source's stream is over: it leaves the pump. One still queued for a
 * service (woken meanwhile) is released when taken off the queue, so that
 * the queue never holds a freed source. Pump thread. */
static void
finish_src(aps_pump *p, aps_pump_src *s)
{
    unlink_src(p, s);
    if (atomic_exchange(&s->pending, 1) == 0)
        s->release(s);
    else
        s->dead = 1;
}

static void *
pump_main(void *arg)
{
    aps_pump *p = arg;
    struct epoll_event evs[64];
    struct timespec last, now;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (!atomic_load(&p->stopping)) {
        int n = epoll_wait(p->epfd, evs, 64, p->tick_ms);
        for (int i = 0; i < n; i++) {
            aps_pump_src *s = evs[i].data.ptr;
            if (s == NULL) {
                uint64_t v;
                ssize_t r = read(p->efd, &v, sizeof v);
                (void)r;
            } else if (atomic_exchange(&s->pending, 1) == 0) {
                ready_push(p, s);
            }
        }
        take_incoming(p);
        take_wakes(p);
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
        if (ms >= p->tick_ms) {
            last = now;
            for (aps_pump_src *s = p->list, *next; s != NULL; s = next) {
                next = s->next;
                if (!s->service(s, 1))
                    finish_src(p, s);
            }
        }
        /* The woken ones only (taken as a batch: a source woken while
         * this runs waits for the next round, so none can starve the
         * others). */
        aps_pump_src *s;
        while ((s = p->ready) != NULL) {
            p->ready = s->ready_next;
            if (p->ready == NULL)
                p->ready_tail = NULL;
            if (s->dead) {
                s->release(s);
                continue;
            }
            atomic_store(&s->pending, 0);
            if (!s->service(s, 0))
                finish_src(p, s);
        }
    }
    /* Stopping: end every stream. The ready list first: it may hold
     * sources that ended, and it points at live ones released below. */
    take_incoming(p);
    take_wakes(p);
    while (p->ready != NULL) {
        aps_pump_src *s = p->ready;
        p->ready = s->ready_next;
        if (s->dead)
            s->release(s);
    }
    p->ready_tail = NULL;
    while (p->list != NULL) {
        aps_pump_src *s = p->list;
        unlink_src(p, s);
        s->stop(s);
        s->release(s);
    }
    return NULL;
}

int
aps_pump_create(int tick_ms, aps_pump **out)
{
    aps_pump *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    p->tick_ms = tick_ms > 0 ? tick_ms : 1000;
    pthread_mutex_init(&p->mu, NULL);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->epfd < 0 || p->efd < 0)
        goto fail;
    struct epoll_event ee = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->efd, &ee) != 0)
        goto fail;
    if (pthread_create(&p->th, NULL, pump_main, p) != 0)
        goto fail;
    pthread_setname_np(p->th, "apsd-pump");
    p->running = 1;
    *out = p;
    return 0;
fail:
    aps_pump_destroy(p);
    return -1;
}

int
aps_pump_add(aps_pump *p, aps_pump_src *src)
{
    pthread_mutex_lock(&p->mu);
    if (atomic_load(&p->stopping)) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    src->pump = p;
    src->prev = NULL;
    src->next = p->incoming;
    p->incoming = src;
    atomic_fetch_add(&p->count, 1);
    pthread_mutex_unlock(&p->mu);
    kick(p);
    return 0;
}

void
aps_pump_wake(aps_pump_src *src)
{
    aps_pump *p = src->pump;
    if (!atomic_load(&src->added)) {
        /* Before the thread took it in (the engine's notify may fire that
         * early): its first service comes anyway, and nothing may point
         * at it yet (aps_pump_add may still fail and the owner free it). */
        pthread_mutex_lock(&p->mu);
        int added = atomic_load(&src->added);
        pthread_mutex_unlock(&p->mu);
        if (!added)
            return;
    }
    if (atomic_exchange(&src->pending, 1) != 0)
        return; /* already queued */
    aps_pump_src *old = atomic_load(&p->wakes);
    do
        src->ready_next = old;
    while (!atomic_compare_exchange_weak(&p->wakes, &old, src));
    if (old == NULL)
        kick(p); /* the first since the thread took the stack */
}

int
aps_pump_count(aps_pump *p)
{
    return atomic_load(&p->count);
}

void
aps_pump_stop(aps_pump *p)
{
    if (p == NULL || !p->running)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, 1);
    pthread_mutex_unlock(&p->mu);
    kick(p);
    pthread_join(p->th, NULL);
    p->running = 0;
}

void
aps_pump_destroy(aps_pump *p)
{
    if (p == NULL)
        return;
    aps_pump_stop(p);
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->efd >= 0)
        close(p->efd);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
