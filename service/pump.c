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
    aps_pump_src *list;     /* the thread's own */
};

static void
kick(aps_pump *p)
{
    uint64_t one = 1;
    ssize_t w = write(p->efd, &one, sizeof one);
    (void)w;
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
        atomic_store(&s->pending, 1);
    }
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
            if (evs[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t r = read(p->efd, &v, sizeof v);
                (void)r;
            } else {
                atomic_store(&((aps_pump_src *)evs[i].data.ptr)->pending, 1);
            }
        }
        take_incoming(p);
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
        int tick = ms >= p->tick_ms;
        if (tick)
            last = now;
        for (aps_pump_src *s = p->list, *next; s != NULL; s = next) {
            next = s->next;
            if (!atomic_exchange(&s->pending, 0) && !tick)
                continue;
            if (!s->service(s, tick)) {
                unlink_src(p, s);
                s->release(s);
            }
        }
    }
    /* Stopping: end every stream. */
    take_incoming(p);
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
    atomic_store(&src->pending, 1);
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
    atomic_store(&src->pending, 1);
    kick(src->pump);
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
