/**
 * @file pump.h
 * @brief The stream pump: one thread that feeds every long-lived server
 *        stream (SubscribeEvents, Workers.Acquire) without ever blocking a
 *        completion-queue thread.
 *
 * A source is a stream's state. The pump services it (calls `service`) when
 * its fd becomes readable (edge-triggered: a source that stops reading early
 * is woken again by aps_pump_wake, e.g. when one of its writes completed),
 * when it is woken, and on every tick (heartbeats). All callbacks run on the
 * pump thread, one source at a time. Between ticks only the sources that
 * were woken are visited (a ready list), so an event costs the pump the
 * streams it concerns, not all of them.
 */
#ifndef APSD_SERVICE_PUMP_H
#define APSD_SERVICE_PUMP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct aps_pump aps_pump;
typedef struct aps_pump_src aps_pump_src;

struct aps_pump_src {
    /** Feeds the stream. @return 1 to keep the source, 0 when the stream is
     *  over (the pump then calls release). `tick` is 1 on timer ticks. */
    int (*service)(aps_pump_src *src, int tick);
    /** The pump stops: end the stream (e.g. UNAVAILABLE). Release follows. */
    void (*stop)(aps_pump_src *src);
    /** Frees the source. */
    void (*release)(aps_pump_src *src);
    /** Polled for readability; -1 = none. Must stay open until release. */
    int fd;

    /* private (zeroed by the owner before aps_pump_add; pump: see below) */
    aps_pump *pump;            /* set before the first aps_pump_wake */
    atomic_int pending;        /* queued: on the wake stack or the ready list */
    atomic_int added;          /* taken in by the pump thread */
    int dead;                  /* pump thread: ended while queued */
    aps_pump_src *next, *prev; /* all sources (pump thread) */
    aps_pump_src *ready_next;  /* the ready list / wake stack */
};

/** Creates and starts the pump; `tick_ms` is the period of tick services. */
int aps_pump_create(int tick_ms, aps_pump **out);

/** Hands a source to the pump (any thread); its private fields zeroed,
 *  except `pump`, which a wake before this call needs. It is serviced soon.
 *  @return 0, or -1 if the pump is stopping (the caller keeps the source). */
int aps_pump_add(aps_pump *p, aps_pump_src *src);

/** Asks for `src` to be serviced soon (any thread, async-signal-unsafe;
 *  lock-free once the pump took the source in, a short lock before: safe
 *  from a call's watch callback). A source is queued once however often it
 *  is woken before its service. */
void aps_pump_wake(aps_pump_src *src);

/** Number of sources (approximate, any thread). */
int aps_pump_count(aps_pump *p);

/** Stops every source (stop, then release), joins the thread. Idempotent. */
void aps_pump_stop(aps_pump *p);

/** Frees the pump (after aps_pump_stop). NULL is allowed. */
void aps_pump_destroy(aps_pump *p);

#endif /* APSD_SERVICE_PUMP_H */
