/**
 * @file exec.h
 * @brief Executors (internal API): what runs a job's target.
 *
 * APScheduler hands each run to a named executor and the executor tells the
 * scheduler when it finishes. Here a run is an aps__run: the scheduler fills
 * in what to run and when it was due, the executor fills in the results and
 * calls aps__run_finished, which queues the run for the scheduler loop. The
 * misfire rule is applied by the executor when a run actually starts (as
 * APScheduler's run_job does), so a run that waited in a full executor's
 * queue is still judged by its real lateness.
 */
#ifndef APSD_ENGINE_EXEC_H
#define APSD_ENGINE_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"

typedef struct aps__run aps__run;
typedef struct aps__executor aps__executor;

/** CLOCK_MONOTONIC in microseconds: deadlines and durations that wall-clock
 *  changes must not move (executors' timeouts, the loop's write times). */
int64_t aps__mono_us(void);

/** What happened to one scheduled run time of a run. */
typedef struct aps__run_result {
    aps_time run_time; /**< the scheduled time */
    int missed;        /**< 1: later than misfire_grace_time, not run */
    aps_time started;  /**< when it started (lateness = started - run_time) */
    aps_outcome outcome; /**< when not missed; strings/tails owned by the run */
} aps__run_result;

/** One submission of a job to an executor. Owned by the scheduler. */
struct aps__run {
    char run_id[33];
    char *job_id;
    char *jobstore;
    char *executor;
    aps_target target;     /**< a deep copy */
    aps_time *run_times;   /**< scheduled times, ascending */
    size_t n_run_times;
    int backfill;          /**< 1: not subject to the misfire rule */
    int unlimited_grace;   /**< 1: no misfire limit */
    int64_t grace_us;      /**< the misfire limit otherwise */
    aps__run_result *results; /**< n_run_times entries, filled by the executor */
    int cancelled;         /**< set by a cancel request */
    int unrecorded;        /**< its completion could not be written (a full
                                disk): queued again for the next pass */
    aps_scheduler *sched;  /**< where aps__run_finished delivers it */
    aps__run *next;        /**< the scheduler's completion queue link */
    int packed;            /**< results, run_times and the three strings
                                share the run's allocation (aps__run_free) */
    int ends_job;          /**< its commit, ahead of its time, ended the
                                job's trigger: the job goes once it is
                                handed on (ended_note in scheduler.c) */
};

/** The operations of an executor kind. */
typedef struct aps__executor_ops {
    /** Queues `run` (ownership stays with the scheduler until the run is
     *  passed to aps__run_finished). APS_ELIMIT when the queue is full. */
    int (*submit)(aps__executor *ex, aps__run *run);
    /** Asks a queued or running run to stop; it still finishes through
     *  aps__run_finished (status CANCELLED). APS_ENOENT if unknown. */
    int (*cancel)(aps__executor *ex, const char *run_id);
    /** Stops taking runs; queued runs finish as INTERRUPTED; with `wait`,
     *  waits for running ones, else cancels them. Then joins its threads. */
    void (*shutdown)(aps__executor *ex, int wait);
    /** Frees the executor (after shutdown). */
    void (*destroy)(aps__executor *ex);
    /** Fills running, pending and connected_workers of `out` (a snapshot). */
    void (*stats)(aps__executor *ex, aps_executor_info *out);
    /** Optional (NULL: `submit` per run): queues runs[0..n) in order as
     *  `submit` would, at the cost of one, and returns how many it took
     *  (a prefix); the rest the caller submits one by one. */
    size_t (*submit_many)(aps__executor *ex, aps__run **runs, size_t n);
} aps__executor_ops;

/** An executor: a kind's ops plus its own state after this header. */
struct aps__executor {
    const aps__executor_ops *ops;
    char name[64];
    char type[32];
    uint32_t max_workers;
    uint32_t max_queue;
};

/**
 * Hands a finished run back to its scheduler (from any thread). Every run
 * submitted successfully is passed here exactly once.
 */
void aps__run_finished(aps__run *run);

/**
 * The misfire rule at start time: 1 if the run time `rt` of `run`, starting
 * at `now`, is too late to run (APScheduler: now - run_time > grace).
 */
int aps__run_is_missed(const aps__run *run, aps_time rt, aps_time now);

/** The scheduler's clock (thread-safe). */
aps_time aps__scheduler_now(aps_scheduler *s);

/**
 * Looks up a registered function.
 * @return 0, or APS_ENOENT.
 */
int aps__scheduler_function(aps_scheduler *s, const char *name, aps_job_fn *fn, void **userdata);

/** Frees a run and everything it owns. NULL is allowed. */
void aps__run_free(aps__run *run);

/** The executor named `name`, or NULL. Executors live as long as the scheduler. */
aps__executor *aps__scheduler_executor(aps_scheduler *s, const char *name);

/** The n-th executor (0-based), or NULL past the end: for iterating. */
aps__executor *aps__scheduler_executor_at(aps_scheduler *s, size_t n);

/** A constructor of an executor kind (see the table in scheduler.c). The
 *  scheduler `s` is passed for the kinds that call back into it. */
typedef int (*aps__executor_create_fn)(aps_scheduler *s, const aps_executor_def *def,
                                       aps__executor **out, aps_error *err);

/**
 * Creates a thread-pool executor running registered C functions
 * (APS_TARGET_FUNCTION): `max_workers` threads, a queue of `max_queue` runs.
 */
int aps__executor_threadpool_create(aps_scheduler *s, const aps_executor_def *def,
                                    aps__executor **out, aps_error *err);

/**
 * Creates a process executor ("processpool", APS_TARGET_COMMAND): children
 * reaped and read from one epoll loop thread (exec_process.c), at most
 * `max_workers` at once, a queue of `max_queue` runs, and the def's
 * processpool fields (allow-list, run-as, env, cwd, output cap, grace, rlimits).
 */
int aps__executor_process_create(aps_scheduler *s, const aps_executor_def *def,
                                 aps__executor **out, aps_error *err);

/**
 * Creates a remote-workers executor ("workers", APS_TARGET_REMOTE): runs wait
 * in named queues shared by every "workers" executor of `s` until a worker
 * attached with aps_worker_attach takes them with a lease (engine.h,
 * "Remote workers").
 */
int aps__executor_remote_create(aps_scheduler *s, const aps_executor_def *def,
                                aps__executor **out, aps_error *err);

#endif /* APSD_ENGINE_EXEC_H */
