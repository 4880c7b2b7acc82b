/**
 * @file scheduler.h
 * @brief The scheduler's internal state, shared by scheduler.c (the loop and
 *        job API) and events.c (the event pipeline: log, listeners,
 *        subscribers).
 */
#ifndef APSD_ENGINE_SCHEDULER_H
#define APSD_ENGINE_SCHEDULER_H

#include <pthread.h>
#include <stdint.h>

#include "apsd/engine.h"
#include "codec.h"
#include "exec.h"
#include "job.h"
#include "store.h"

/** Events kept in memory for live subscribers; older ones come from the log. */
#define APS__RING_SIZE 8192

/** Seconds of due writes the adaptive commit-ahead looks back on. */
#define APS__AHEAD_WINDOW_S 10

typedef struct aps__store_slot {
    char name[64];
    char type[16];
    aps_store *st;
    int durable; /* commits wait for the disk: commit-ahead applies */
    aps_time deferred; /* the loop's: see process_store */
    int failed;        /* the loop's: its last pass failed (retried later) */
    size_t due_batch;  /* the loop's: due jobs per write (process_store) */
    /* Adaptive commit-ahead (the loop's): the longest lead the writes of
     * due jobs needed in each of the last APS__AHEAD_WINDOW_S seconds, by
     * monotonic second (need_sec), for their own time (need_write) and for
     * the passes' (need_pass); lead_us the lead last used (atomic: store
     * info).
     * Its last pass: began at pass_mono (monotonic; 0: none since the loop
     * last stood still), ended at pass_end (0: not yet), with lead
     * pass_lead and horizon (upto) pass_horizon after pass_mono; pass_more:
     * it stopped with due jobs left (PASS_MAX). */
    int64_t need_write[APS__AHEAD_WINDOW_S];
    int64_t need_pass[APS__AHEAD_WINDOW_S];
    int64_t need_sec[APS__AHEAD_WINDOW_S];
    int64_t lead_us;
    int64_t pass_mono, pass_end, pass_lead, pass_horizon;
    int pass_more;
    /* Held runs (committed ahead, in the hold queue) of this store that
     * end their job (a date job's): the job has no next run time in the
     * store meanwhile (hold_mu; aps_scheduler_store_info). */
    size_t held_ends;
} aps__store_slot;

typedef struct aps__exec_slot {
    char name[64];
    aps__executor *ex;
} aps__exec_slot;

typedef struct aps__function {
    char *name;
    aps_job_fn fn;
    void *userdata;
} aps__function;

typedef struct aps__listener {
    aps_listener_fn fn;
    uint32_t mask;
    void *userdata;
} aps__listener;

/** Bytes of an event encoded ahead (aps__evlist_push_encoded); borrowed. */
typedef struct aps__evbytes {
    const void *p; /* NULL: encoded when appended */
    size_t len;
} aps__evbytes;

/** A growable list of owned events, with the buffer they are encoded in
 * (reused: appending them to the log allocates nothing). */
typedef struct aps__evlist {
    aps_event **v;
    aps__evbytes *pre; /* NULL until an event comes encoded ahead; then as v */
    size_t n, cap;
    aps__wbuf enc;
} aps__evlist;

/** A compiled trigger cached by job id (the loop's own, single-threaded). */
typedef struct aps__trig_entry {
    char *id;
    aps_time update_time;
    aps_trigger *trigger;
} aps__trig_entry;

/** A subscriber's entry in the publish-time index (events.c): one per job
 *  id of its filter, or, without a job filter, one per event type of its
 *  mask. */
typedef struct aps__sub_node {
    aps_subscriber *sub;
    const char *id; /* borrowed from sub->ids; NULL in a type node */
    uint32_t hash;  /* of id */
    uint32_t len;   /* of id */
    struct aps__sub_node *next, **pprev;
} aps__sub_node;

/* A cursor over the event log; see "subscribers" in events.c. The fields
 * after `efd` are guarded by the scheduler's mu. */
struct aps_subscriber {
    aps_scheduler *s;
    uint32_t mask;
    char **ids;      /* unique job ids; none (n_ids 0) = any */
    size_t n_ids;
    uint32_t *id_tab; /* open addressing: index + 1 into nodes, by hash */
    uint32_t id_mask; /* id_tab's size - 1 */
    int efd;         /* eventfd, readable when events may be waiting */
    int refs;        /* the owner + signals in flight (atomic) */
    aps__sub_node *nodes;
    size_t n_nodes;

    /* Cursor mode: the next sequence to examine. Live mode: no event
     * below it is queued (a subscription after a future sequence). */
    uint64_t next;
    int live;        /* caught up: publish queues its matching sequences */
    int armed;       /* it found nothing: the next match writes efd */
    uint64_t *q;     /* live mode: matching sequences, oldest first */
    uint32_t q_cap, q_head, q_len; /* q_cap: 0 or a power of two */
    aps_subscriber *prev_sub, *next_sub;
};

struct aps_scheduler {
    /* configuration (immutable after create) */
    char tz[64];
    int default_coalesce;
    uint32_t default_max_instances;
    int default_unlimited_grace;
    int64_t default_grace_us;
    aps_clock clock;
    int64_t request_retention_us;
    uint64_t jitter_seed;
    size_t disk_reserve_bytes; /* per LMDB store (aps_scheduler_config) */

    aps__store_slot *stores;
    size_t n_stores;
    size_t log_store; /* index of the store holding the event log */
    aps__exec_slot *execs;
    size_t n_execs;

    /* Serializes pause and resume: each reads the state, then writes the
     * change durably (outside mu) only if it is one. */
    pthread_mutex_t pause_mu;

    pthread_mutex_t mu; /* guards everything below */
    aps_scheduler_state state;
    int started;
    int stopping;
    int stop_wait; /* the `wait` of the shutdown that set stopping */
    int shut; /* shut down since the last start: subscribers get APS_ESTATE */
    aps_run_mode mode;
    pthread_t thread;
    int have_thread;
    aps__listener *listeners;
    size_t n_listeners;
    aps_subscriber *listener_cursor; /* where listeners read (created with the first) */
    aps__run *completed;    /* finished runs, newest first */
    /* When the loop looks again (APS_TIME_NONE: not before a wake-up), and
     * whether a run finished since without waking it (aps__run_finished);
     * in_pass: it is in a pass, which may have read the stores already
     * (wake_for); pass_wake: the earliest time a commit during the pass
     * asked it to look again by (APS_TIME_NONE: none). */
    aps_time loop_next;
    int in_pass;
    aps_time pass_wake;
    uint64_t passes; /* passes made (aps_scheduler_process), for tests */
    int completion_unwoken;
    int64_t completion_slack_us; /* how long a finished run may wait for loop_next */
    size_t n_running;       /* runs handed to executors, not yet finished */
    pthread_cond_t idle_cv; /* signalled when n_running drops */
    /* changes that may withdraw held runs, on their way (under mu), and
     * the shutdown's withdrawal of them holding new ones back (gate_enter) */
    size_t gate_n;
    int gate_closed;
    pthread_cond_t gate_cv;
    size_t gate_waiting; /* changes waiting for it to open (tests) */
    /* asynchronous replacing adds made on a store writer thread while the
     * gate was closed (they cannot wait there): written when it opens */
    struct add_ctx *gate_later;

    /* the event ring: sequences [ring_first, ring_next) are in memory */
    aps_event *ring[APS__RING_SIZE];
    uint64_t ring_first, ring_next;
    /* hash and length of each ring event's job id (events.c: a behind
     * subscriber's filter reuses them) */
    uint32_t ring_hash[APS__RING_SIZE], ring_len[APS__RING_SIZE];
    /* out-of-order arrivals (concurrent commits) wait here */
    aps__evlist early;
    aps_subscriber *subs;
    pthread_cond_t sub_cv;
    unsigned sub_waiters; /* threads waiting on sub_cv */
    /* The subscribers' index (events.c): a hash table by job id (buckets
     * a power of two, or none yet), and lists by event type of those
     * without a job filter. */
    aps__sub_node **sub_ids;
    size_t sub_ids_cap, sub_ids_n;
    aps__sub_node *sub_types[APS_EVENT_JOB_MAX_INSTANCES + 1];

    /* Registered functions, looked up by every run of the thread pool:
     * a lock of their own, shared by the lookups. */
    pthread_rwlock_t fn_lock;
    aps__function *functions;
    size_t n_functions;

    /* the loop's own state (loop thread only) */
    aps__trig_entry *trig;
    size_t n_trig, cap_trig;
    aps_time last_request_prune;
    aps_time timer_armed; /* the deadline timer_fd holds (APS_TIME_NONE: none) */
    char (*due_ids)[APS__ID_MAX + 1]; /* process_store's batches of ids (DUE_WRITES) */
    struct aps__loop_state *loop; /* decoded-record cache, buffers (scheduler.c) */

    /* Commit-ahead (aps_scheduler_config.commit_ahead_us): runs committed
     * before their time wait in `held` (a min-heap by first run time) for
     * the hold thread, which hands each to its executor at its time. */
    int64_t ahead_us;     /* configured; 0 = off */
    int64_t ahead_max_us; /* the most it widens to (store_ahead); 0 = not */
    /* aps_scheduler_config.pass_spacing_us; 0 = none, and always 0 on an
     * injected clock. */
    int64_t spacing_us;
    /* Real-time priority (aps_scheduler_config.loop_priority): asked for,
     * obtained (0: refused or not asked; atomic), and whether the loop
     * thread is at it now (the loop thread's own). */
    int loop_priority;
    int loop_rt;
    int loop_rt_on;
    aps_time loop_woke; /* start of its current busy streak; NONE: asleep */
    /* How long the loop and the hold thread keep the priority while busy
     * (RT_BUSY_US; set before start, tests shorten it). */
    int64_t rt_busy_us;
    int hold_active;   /* set while the hold thread runs (loop thread reads) */
    pthread_mutex_t hold_mu;
    pthread_cond_t hold_cv; /* CLOCK_REALTIME, as run times are */
    aps__run **held;
    size_t n_held, cap_held;
    int hold_stop;
    int hold_paused; /* the scheduler is paused: held runs wait (hold_mu) */
    /* Runs a change withdrew before they reached the hold queue (hold_mu;
     * see hold_withdraw in scheduler.c). */
    struct aps__tomb *tombs;
    size_t n_tombs, cap_tombs;
    pthread_t hold_thread;
    /* The latest run time handed on (atomic): the stores' marks are this
     * far already (handed_mark in scheduler.c). */
    aps_time handed_max;
    /* Set (atomic) once this process made a run: from then on, runs in a
     * store's index may be its own (recover_interrupted). */
    int runs_made;
    /* Due jobs and finished runs the loop prepared (due_prep in
     * scheduler.c) that the store's writer made as prepared, and those it
     * did again because their record had changed since it was read
     * (atomic; for tests and diagnosis). */
    uint64_t prep_used, prep_redone;
    /* Jobs whose last run, committed ahead, was handed on: the loop
     * removes them (hold_mu; process_ended in scheduler.c). */
    struct aps__ended *ended;
    size_t n_ended, cap_ended;

    int wake_fd;  /* eventfd: mutations, completions, shutdown */
    int timer_fd; /* timerfd on CLOCK_REALTIME, absolute, cancelled on clock jumps */
    int epoll_fd; /* the pollable fd of the external loop */
};

/** @name Event pipeline (events.c)
 * @{ */
int aps__evlist_push(aps__evlist *l, aps_event *ev);
/** aps__evlist_push of an event already encoded (aps__event_encode_append)
 *  into `len` bytes at `p`, which stay the caller's and must outlive the
 *  event's append to the log. */
int aps__evlist_push_encoded(aps__evlist *l, aps_event *ev, const void *p, size_t len);
void aps__evlist_clear(aps__evlist *l);
/** Frees the events, the list and its buffer; the list is empty again. */
void aps__evlist_dispose(aps__evlist *l);

/** Builds an event (strings copied; run_times copied). */
int aps__event_new(aps_event_type type, aps_time at, const char *job_id, const char *jobstore,
                   const char *executor, const char *run_id, const aps_time *run_times,
                   size_t n_run_times, aps_event **out);

/** Appends every event of `l` to the log inside `txn`, setting sequences. */
int aps__events_append(aps_txn *txn, aps__evlist *l);

/** Appends events of `l` to the log store in a write of their own. */
int aps__events_commit(aps_scheduler *s, aps__evlist *l);

/** Hands committed events (with sequences) to subscribers and listeners;
 *  takes ownership of the events, empties `l`. */
void aps__events_publish(aps_scheduler *s, aps__evlist *l);

/** Calls listeners for events they have not seen, at most `max` (0: all;
 *  with more left, the loop is woken for another pass). Loop thread. */
void aps__events_dispatch_listeners(aps_scheduler *s, size_t max);

/** Wakes every subscriber (shutdown). */
void aps__events_wake_all(aps_scheduler *s);

/** Frees the ring (destroy). */
void aps__events_dispose(aps_scheduler *s);
/** @} */

/** Wakes the loop (a mutation, a completion, shutdown). */
void aps__scheduler_wake(aps_scheduler *s);

/**
 * Test hook: when set, a shutdown calls it once it has taken the held runs
 * back and before it writes their withdrawal, with changes held back
 * (gate_enter): a test makes a change there. Never set outside tests.
 */
extern void (*aps__shutdown_withdraw_test)(aps_scheduler *s);

/**
 * Test hook: when set, the loop calls it on its thread once it has prepared
 * a batch of due jobs (done 0) or of finished runs (done 1) of a durable
 * store and before it queues their write: a test changes a job there, as
 * another thread could. Never set outside tests.
 */
extern void (*aps__prepared_test)(aps_scheduler *s, int done);

#endif /* APSD_ENGINE_SCHEDULER_H */
