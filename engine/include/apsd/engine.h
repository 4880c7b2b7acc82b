/**
 * @file engine.h
 * @brief The apsd engine: APScheduler's scheduler as an embeddable C library.
 *
 * One public header (LMDB's lmdb.h is the model). Conventions:
 * - Every function returns an int: 0 (APS_OK) on success or a negative
 *   APS_E* code. Results come back through out-parameters.
 * - Functions that validate user input take an optional `aps_error *err`
 *   which, on failure, receives a message a user can act on, naming the
 *   field (`hour: 25 is out of range 0-23`). `err` may be NULL.
 * - A function that fails has changed nothing.
 * - Times are `aps_time`: int64 microseconds since the Unix epoch, UTC.
 *
 * Thread safety is stated per object below.
 */
#ifndef APSD_ENGINE_H
#define APSD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup errors Errors
 * errno-compatible where one fits (libuv style); apsd's own codes sit in a
 * reserved range (-30600...) so LMDB and errno codes pass through unchanged.
 * @{ */
#define APS_OK 0
#define APS_ENOENT (-2)    /**< not found: job, zone, store */
#define APS_EIO (-5)       /**< I/O error */
#define APS_ENOMEM (-12)   /**< out of memory */
#define APS_EBUSY (-16)    /**< resource in use (a store opened by another process) */
#define APS_EEXIST (-17)   /**< already exists (job id) */
#define APS_EINVAL (-22)   /**< invalid argument; the message names the field */
#define APS_ENOSPC (-28)   /**< no space left on the device */
#define APS_ERANGE (-34)   /**< value out of range */
#define APS_ECORRUPT (-30600) /**< a stored record cannot be decoded */
#define APS_ESTATE (-30601)   /**< operation not allowed in the current state */
#define APS_ELIMIT (-30602)   /**< a configured limit was reached */

/** Message buffer filled by functions that validate input. */
typedef struct aps_error {
    int code;       /**< the APS_E* code also returned */
    char msg[256];  /**< NUL-terminated, e.g. `day_of_week: unknown weekday "fooday"` */
} aps_error;

/** A static, human-readable description of an APS_E* code (or an errno). */
const char *aps_strerror(int code);
/** @} */

/** @defgroup time Time
 * @{ */
/** Microseconds since 1970-01-01T00:00:00Z. */
typedef int64_t aps_time;
/** "No time": an unset option, or a trigger with no further fire time. */
#define APS_TIME_NONE INT64_MIN

/**
 * Parses an RFC 3339 timestamp (`2026-11-23T10:00:00+01:00`, `...Z`, with
 * up to 9 fractional digits, truncated to microseconds).
 * @return 0, or APS_EINVAL (message in err).
 */
int aps_time_parse(const char *text, aps_time *out, aps_error *err);

/**
 * Formats `t` as RFC 3339 with the UTC offset in force in zone `tz` (NULL or
 * "UTC" gives `Z`). Fraction printed only when non-zero (6 digits).
 * @return 0, APS_ENOENT (unknown zone) or APS_ERANGE (buffer too small).
 */
int aps_time_format(aps_time t, const char *tz, char *buf, size_t len);

/** The current wall-clock time (CLOCK_REALTIME). */
aps_time aps_time_now(void);

/**
 * Checks that an IANA zone name can be loaded from the system tzdata
 * (`TZDIR` or /usr/share/zoneinfo).
 * @return 0, or APS_ENOENT with `timezone: unknown time zone "X"` in err.
 */
int aps_timezone_check(const char *name, aps_error *err);
/** @} */

/** @defgroup triggers Triggers
 * APScheduler's triggers with its keyword names. `aps_trigger_next` has the
 * semantics of APScheduler 3's `get_next_fire_time(previous, now)`.
 * @{ */
typedef enum aps_trigger_kind {
    APS_TRIGGER_CRON = 1,
    APS_TRIGGER_INTERVAL = 2,
    APS_TRIGGER_DATE = 3,
    APS_TRIGGER_CALENDAR_INTERVAL = 4, /**< APScheduler 4 */
    APS_TRIGGER_ALL_OF = 5,            /**< AndTrigger */
    APS_TRIGGER_ANY_OF = 6,            /**< OrTrigger */
} aps_trigger_kind;

/**
 * A trigger description, as a user gives it. Strings are borrowed (NULL =
 * not given); times are APS_TIME_NONE when not given; `timezone` NULL means
 * the default zone passed to aps_trigger_create.
 */
typedef struct aps_trigger_spec aps_trigger_spec;
struct aps_trigger_spec {
    aps_trigger_kind kind;
    int64_t jitter_us; /**< 0 = no jitter; else a random 0..jitter delay */
    union {
        struct {
            const char *year, *month, *day, *week, *day_of_week;
            const char *hour, *minute, *second;
            const char *crontab; /**< 5-field crontab; excludes the fields above */
            aps_time start_date, end_date;
            const char *timezone;
        } cron;
        struct {
            int64_t weeks, days, hours, minutes, seconds, microseconds;
            /** start NONE = creation time + one interval (APScheduler 3:
             *  `datetime.now() + interval`), so the first fire is one
             *  interval after creation. */
            aps_time start_date, end_date;
            const char *timezone;
        } interval;
        struct {
            aps_time run_date;
            const char *timezone;
        } date;
        struct {
            int32_t years, months, weeks, days;
            int32_t hour, minute, second; /**< wall-clock time of each fire */
            aps_time start_date, end_date; /**< local dates of these in the zone */
            const char *timezone;
        } calendar_interval;
        struct {
            const aps_trigger_spec *triggers; /**< borrowed array */
            size_t count;
        } combo; /**< all_of / any_of */
    } u;
};

/** A validated, compiled trigger. Not thread-safe: one user at a time. */
typedef struct aps_trigger aps_trigger;

/**
 * Validates `spec` and compiles it. `now` fills in defaults that depend on
 * the current time (an interval's start date), `default_tz` (NULL = "UTC")
 * is used when the spec names no zone.
 * @param[out] out  the trigger, owned by the caller (aps_trigger_destroy).
 * @return 0; APS_EINVAL (bad expression, out of range, ...) or APS_ENOENT
 *         (unknown zone), message in err naming the field; APS_ENOMEM.
 */
int aps_trigger_create(const aps_trigger_spec *spec, const char *default_tz,
                       aps_time now, aps_trigger **out, aps_error *err);

/** Frees a trigger. NULL is allowed. */
void aps_trigger_destroy(aps_trigger *t);

/**
 * The next fire time after `previous` (APS_TIME_NONE for the first), not
 * before `now`, as APScheduler 3's `get_next_fire_time(previous, now)`.
 * @param[out] next  the fire time, or APS_TIME_NONE when it never fires again.
 * @return 0, or APS_EINVAL if the trigger can not compute (never loops forever).
 */
int aps_trigger_next(aps_trigger *t, aps_time previous, aps_time now, aps_time *next);

/** Seeds the jitter source (deterministic tests). Default: random. */
void aps_trigger_seed(aps_trigger *t, uint64_t seed);

/**
 * A short description in APScheduler's `str(trigger)` style, e.g.
 * `cron[month='6-8', day='last fri', hour='5']` or `interval[0:00:03]`.
 * @return 0, or APS_ERANGE if `len` is too small (output truncated).
 */
int aps_trigger_describe(const aps_trigger *t, char *buf, size_t len);
/** @} */

/** @defgroup jobs Jobs
 * APScheduler's Job, with apsd's additions (overlap policy, labels,
 * statistics). A job is described by an aps_job_spec (borrowed strings) and
 * read back as an aps_job (owned by the caller, aps_job_free).
 * @{ */

/** misfire_grace_time's three states. */
typedef enum aps_misfire_kind {
    APS_MISFIRE_DEFAULT = 0,   /**< the scheduler's job default */
    APS_MISFIRE_DURATION = 1,  /**< at most `misfire_grace_us` late */
    APS_MISFIRE_UNLIMITED = 2, /**< however late (APScheduler: None) */
} aps_misfire_kind;

/** What a run beyond max_instances does (Temporal's overlap policies). */
typedef enum aps_overlap {
    APS_OVERLAP_DEFAULT = 0,        /**< the scheduler's default: SKIP */
    APS_OVERLAP_SKIP = 1,           /**< JOB_MAX_INSTANCES (APScheduler) */
    APS_OVERLAP_QUEUE_ONE = 2,      /**< keep one pending run */
    APS_OVERLAP_QUEUE_ALL = 3,      /**< keep every run pending (bounded) */
    APS_OVERLAP_CANCEL_RUNNING = 4, /**< cancel the oldest running instance */
} aps_overlap;

typedef enum aps_target_kind {
    APS_TARGET_NONE = 0,
    APS_TARGET_COMMAND = 1,  /**< a program, run by a process executor */
    APS_TARGET_REMOTE = 2,   /**< a task handed to remote workers */
    APS_TARGET_FUNCTION = 3, /**< a C function registered with the scheduler */
} aps_target_kind;

/** What a job runs. Strings borrowed in a spec, owned inside an aps_job. */
typedef struct aps_target {
    aps_target_kind kind;
    union {
        struct {
            char **argv;   /**< argc entries, argv[0] the program */
            size_t argc;
            char **env;    /**< envc entries "KEY=VALUE" added to the base env */
            size_t envc;
            char *cwd;     /**< NULL = the executor's default */
            int64_t timeout_us;   /**< 0 = none */
            uint32_t max_output;  /**< bytes of stdout/stderr tail kept; 0 = default */
        } command;
        struct {
            char *task;        /**< "module:func" */
            char *args_json;   /**< a JSON array, NULL = [] */
            char *kwargs_json; /**< a JSON object, NULL = {} */
            char *queue;       /**< NULL = "default" */
        } remote;
        struct {
            char *name; /**< as given to aps_scheduler_register_function */
            char *arg;  /**< passed to the function; may be NULL */
        } function;
    } u;
} aps_target;

/** A label (key=value) for selecting jobs. */
typedef struct aps_label {
    char *key;
    char *value;
} aps_label;

/** A job as the user describes it. Every pointer is borrowed. */
typedef struct aps_job_spec {
    const char *id;   /**< NULL = generated: 44 hex, ms time then 128 random bits */
    const char *name; /**< NULL = the id */
    const aps_trigger_spec *trigger; /**< NULL: a one-shot date job at next_run_time (or now) */
    aps_target target;
    const char *executor; /**< NULL = "default" */
    const char *jobstore; /**< NULL = "default" */
    aps_misfire_kind misfire;
    int64_t misfire_grace_us; /**< with APS_MISFIRE_DURATION; > 0 */
    int coalesce;             /**< -1 = default, 0 = false, 1 = true */
    int max_instances;        /**< 0 = default, else >= 1 */
    aps_overlap overlap;
    const aps_label *labels;
    size_t n_labels;
    aps_time next_run_time; /**< APS_TIME_NONE = the trigger's first fire time */
    int paused;             /**< add the job paused (no next run time) */
} aps_job_spec;

/** Lateness and outcome statistics kept per job (in the store). */
typedef struct aps_job_stats {
    uint64_t runs, failures, misses, max_instance_skips, coalesced;
    char last_run_id[33];    /**< "" if none */
    aps_time last_run_time;  /**< scheduled time of the last finished run */
    int last_status;         /**< an aps_run_status of the last finished run */
    int32_t last_exit_code;  /**< command runs: exit code, or -signal */
    char last_error[256];    /**< error text of the last failed run */
    int64_t lateness_p50_us, lateness_p90_us, lateness_p99_us, lateness_max_us;
    uint32_t lateness_samples; /**< runs the percentiles are computed over */
} aps_job_stats;

/** A job as stored. Owned by whoever received it: aps_job_free. */
typedef struct aps_job {
    char *id;
    char *name;
    aps_trigger_spec *trigger; /**< effective trigger (zone, start filled in); owned */
    aps_target target;
    char *executor;
    char *jobstore;
    aps_misfire_kind misfire; /**< as given: DEFAULT follows the scheduler's default */
    int64_t misfire_grace_us;
    int coalesce;      /**< -1 = default */
    int max_instances; /**< 0 = default */
    aps_overlap overlap;
    aps_label *labels;
    size_t n_labels;
    aps_time next_run_time; /**< APS_TIME_NONE = paused */
    int paused;
    aps_time create_time, update_time;
    uint32_t running_instances;
    uint32_t queued_runs;
    aps_job_stats stats;
} aps_job;

/** Whether a command's environment entry ("KEY=VALUE") may be set under a
 *  command allow-list whose permitted keys are `keys` (exact, or a prefix
 *  ending in '*'). 1 or 0. */
int aps_env_allowed(const char *const *keys, size_t n_keys, const char *entry);

/** Frees a job returned by the engine. NULL is allowed. */
void aps_job_free(aps_job *job);
/** @} */

/** @defgroup events Events
 * Every APScheduler event, numbered as apsd.v1.EventType (APScheduler's
 * EVENT_* constants are 1 << (n - 1)). Each event stored in the durable log
 * has a sequence number that never repeats or goes backwards.
 * @{ */
typedef enum aps_event_type {
    APS_EVENT_SCHEDULER_STARTED = 1,
    APS_EVENT_SCHEDULER_SHUTDOWN = 2,
    APS_EVENT_SCHEDULER_PAUSED = 3,
    APS_EVENT_SCHEDULER_RESUMED = 4,
    APS_EVENT_EXECUTOR_ADDED = 5,
    APS_EVENT_EXECUTOR_REMOVED = 6,
    APS_EVENT_JOBSTORE_ADDED = 7,
    APS_EVENT_JOBSTORE_REMOVED = 8,
    APS_EVENT_ALL_JOBS_REMOVED = 9,
    APS_EVENT_JOB_ADDED = 10,
    APS_EVENT_JOB_REMOVED = 11,
    /** Also when the loop pauses a due job whose trigger fails (its zone
     *  gone from the system, an all_of whose parts never meet): `message`
     *  says why, and the job's store goes on firing its other jobs. */
    APS_EVENT_JOB_MODIFIED = 12,
    APS_EVENT_JOB_EXECUTED = 13,
    APS_EVENT_JOB_ERROR = 14,
    APS_EVENT_JOB_MISSED = 15,
    APS_EVENT_JOB_SUBMITTED = 16,
    APS_EVENT_JOB_MAX_INSTANCES = 17,
} aps_event_type;

/** A mask bit per event type, for listeners and subscribers. */
#define APS_EVENT_MASK(type) (1u << (type))
#define APS_EVENT_ALL 0xFFFFFFFEu

/** How a run ended (apsd.v1.RunStatus). */
typedef enum aps_run_status {
    APS_RUN_NONE = 0,
    APS_RUN_SUCCEEDED = 1,
    APS_RUN_FAILED = 2,       /**< non-zero exit, function error, task error */
    APS_RUN_TIMED_OUT = 3,
    APS_RUN_CANCELLED = 4,
    APS_RUN_SPAWN_FAILED = 5,
    APS_RUN_LEASE_EXPIRED = 6,
    APS_RUN_INTERRUPTED = 7, /**< the scheduler stopped (or crashed) while it ran */
} aps_run_status;

/** The outcome of a run (JOB_EXECUTED, JOB_ERROR). Owned by its event. */
typedef struct aps_outcome {
    aps_run_status status;
    int has_exit_code;
    int32_t exit_code;   /**< with has_exit_code */
    int32_t signal;      /**< a command killed by a signal; 0 = none */
    void *stdout_tail;
    size_t stdout_len;
    void *stderr_tail;
    size_t stderr_len;
    int stdout_truncated, stderr_truncated;
    aps_time start_time, end_time;
    char *error;         /**< NULL on success */
    char *traceback;     /**< remote tasks */
    char *return_json;   /**< remote tasks: the return value as JSON */
    char *error_type;    /**< remote tasks: the exception's type name */
    char *worker_id;     /**< remote tasks: the worker that ran it */
} aps_outcome;

/** An event. Owned by whoever received it: aps_event_free. */
typedef struct aps_event {
    uint64_t sequence;   /**< 0 for events not in the durable log */
    aps_event_type type;
    aps_time time;       /**< JOB_MISSED: when the run was judged too late */
    char *job_id;        /**< NULL for scheduler events */
    char *jobstore;
    char *executor;
    aps_time *run_times; /**< scheduled run time(s): several when coalesced */
    size_t n_run_times;
    char *run_id;        /**< 32 hex digits, time-ordered (UUIDv7's layout:
                              12 of wall-clock ms, 20 random) */
    aps_outcome *outcome; /**< JOB_EXECUTED / JOB_ERROR; NULL otherwise */
    char *message;        /**< JOB_MISSED: run times beyond those listed;
                               JOB_MODIFIED: why the loop paused the job */
    /** Internal: job_id, jobstore, executor, run_id and run_times share the
     * event's allocation (the engine's own events: one malloc each). 0 in
     * an event built field by field. */
    int packed;
} aps_event;

/** Frees an event. NULL is allowed. */
void aps_event_free(aps_event *ev);
/** The event type's name without prefix, e.g. "JOB_EXECUTED". */
const char *aps_event_type_name(aps_event_type type);
/** @} */

/** @defgroup scheduler Scheduler
 * APScheduler's scheduler: named job stores and executors, job defaults,
 * and three ways to run the loop: blocking (start runs the loop on the
 * caller's thread), background (start spawns the loop thread), external
 * (the caller polls aps_scheduler_fd and calls aps_scheduler_process).
 *
 * Thread safety: every job and scheduler function may be called from any
 * thread, concurrently, including from listeners and job functions.
 * @{ */
typedef struct aps_scheduler aps_scheduler;

/** A clock, injectable for deterministic tests. */
typedef struct aps_clock {
    aps_time (*now)(void *ctx);
    void *ctx;
} aps_clock;

/** A named job store (APScheduler's `jobstores={...}`). */
typedef struct aps_store_def {
    const char *name;   /**< e.g. "default" */
    const char *type;   /**< "lmdb" (persistent) or "memory" */
    const char *path;   /**< lmdb: the data directory */
} aps_store_def;

/** The default largest per-job output tail of a processpool executor. */
#define APS_OUTPUT_LIMIT_DEFAULT (16u * 1024 * 1024)

/** A named executor (APScheduler's `executors={...}`). Several of each
 * type may be configured, each with its own pool. Zero fields = defaults. */
typedef struct aps_executor_def {
    const char *name;      /**< e.g. "default" */
    const char *type;      /**< "threadpool" (registered C functions),
                                "processpool" (commands), "workers" (remote tasks) */
    uint32_t max_workers;  /**< runs at once: threads / children / leased runs; 0 = 10 */
    uint32_t max_queue;    /**< runs waiting for a slot; 0 = 10000 */
    /* processpool */
    const char *const *allow; /**< allow-list: absolute executables, or directories
                                   ending in '/'; NULL = any executable */
    size_t n_allow;
    /** With an allow-list: the environment keys a job may set (exact, or a
     *  prefix ending in '*'); none by default. Keys such as LD_PRELOAD,
     *  BASH_ENV, BASH_FUNC_*, PYTHONPATH or PATH make an allowed program
     *  run other code, so the allow-list alone would not hold. */
    const char *const *allow_env;
    size_t n_allow_env;
    const char *run_as_user;  /**< when the daemon is root: run children as this user */
    const char *run_as_group; /**< and group (NULL = the user's primary group) */
    const char *const *base_env; /**< "K=V" entries every child gets; NULL =
                                      PATH=/usr/local/bin:/usr/bin:/bin only */
    size_t n_base_env;
    const char *cwd;          /**< default working directory; NULL = "/" */
    uint32_t max_output;      /**< default bytes of stdout/stderr tail kept; 0 = 64 KiB */
    uint32_t max_output_limit; /**< largest per-job max_output accepted; 0 =
                                    APS_OUTPUT_LIMIT_DEFAULT */
    int64_t kill_grace_us;     /**< SIGTERM to SIGKILL on timeout/cancel; 0 = 5 s; at most a day */
    uint64_t rlimit_cpu_s;    /**< RLIMIT_CPU of children; 0 = inherited */
    uint64_t rlimit_as;       /**< RLIMIT_AS (bytes); 0 = inherited */
    uint64_t rlimit_nofile;   /**< RLIMIT_NOFILE; 0 = inherited */
    /** A directory where the pids of running commands are noted (in a
     *  subdirectory named after the executor; not synced: only a crash of
     *  this process, not of the machine, leaves commands running). When the
     *  executor is created it stops, with SIGKILL to their process groups,
     *  the commands a crashed predecessor left running, so that a run
     *  reported "interrupted by restart" is not still running. NULL: none. */
    const char *state_dir;
    /* workers */
    int64_t lease_us;         /**< lease of a handed-out run; 0 = 60 s */
} aps_executor_def;

typedef struct aps_scheduler_config {
    const aps_store_def *stores;  /**< none: one "default" memory store */
    size_t n_stores;
    const aps_executor_def *executors; /**< none: "default" threadpool(10) */
    size_t n_executors;
    /* job_defaults, as APScheduler 3: coalesce true, max_instances 1,
     * misfire_grace_time 1 s. Zero values mean these defaults. */
    int default_no_coalesce;             /**< 1: job_defaults coalesce=False */
    uint32_t default_max_instances;      /**< 0 = 1 */
    aps_misfire_kind default_misfire;    /**< DEFAULT = 1 s */
    int64_t default_misfire_grace_us;
    const char *timezone;                /**< default zone; NULL = "UTC" */
    const aps_clock *clock;              /**< NULL = the real clock */
    uint64_t event_max_count;            /**< event log retention; 0 = 100000 */
    int64_t event_max_age_us;            /**< 0 = 7 days (by `clock`) */
    int64_t request_id_retention_us;     /**< idempotency window; 0 = 1 hour */
    uint64_t jitter_seed;                /**< 0 = random */
    int no_sync;                         /**< lmdb without fsync: tests only */
    /** LMDB stores: how long before their time due runs are committed, so
     *  that the fsync does not delay them; each run is still handed to its
     *  executor at its time, by a thread of its own. Runs are gathered:
     *  the loop takes them once the earliest is 3/4 of this ahead (this
     *  less 25 ms at most), with all those due within it, so they share
     *  commits (at 10,000 runs/s one per ~12 ms instead of one per pass).
     *  A change to a job before the time of its run committed ahead
     *  (remove, pause, resume, modify, reschedule, run now, a backfill with
     *  runs, a replacing add, remove all) withdraws that run, as APScheduler would not have
     * submitted it yet: it never starts and ends as JOB_ERROR, status CANCELLED, "withdrawn before
     * its time: ...", not counted in the job's statistics; a modified (run now, backfilled) job's
     * next run time goes back to that time, so the run comes as modified (judged then against
     * max_instances beside the runs started now). (A removal of all jobs written in the same commit
     * as the run, rare, misses it: it starts as committed.) While the scheduler is paused, such
     *  runs wait for the resume (then their executor applies
     *  misfire_grace_time). 0 = 50 ms; negative = off. Off with an
     *  injected clock and in APS_RUN_EXTERNAL mode. A process that dies
     *  (a crash, a kill) before such a run's time loses nothing: the run
     *  never started (a page of shared memory in /dev/shm, named in the
     *  store's lock file, which outlives the process, marks the runs
     *  handed on), so after the restart it ends
     *  as withdrawn ("...: the scheduler stopped first") and its time is
     *  the job's next run time again: it runs then, or, that time past,
     *  as APScheduler runs a time missed while it was down (after a
     *  restart of the machine, which loses the page, or without /dev/shm,
     *  it is reported interrupted, as a started run is). A job whose trigger ends with
     *  such a run (a date job) stays until the run is handed on at its
     *  time, when APScheduler would submit it and remove the job. Until
     *  the run is handed on (its time, or the resume of a paused
     *  scheduler) aps_job_get and aps_job_list show its time as the job's
     *  next_run_time, and do not count it in running_instances, as
     *  APScheduler shows a job before it submits the run. A shutdown
     *  withdraws such runs in the same way, at once (aps_scheduler_shutdown). */
    int64_t commit_ahead_us;
    /** Above commit_ahead_us: the window widens while the store's writes
     *  are slow (a disk shared with a busy writer), to twice the longest of
     *  the loop's writes in the last 10 s, or while the loop's passes are
     *  long (many runs at once), to twice the longest time from when a
     *  pass could have taken a run to its commit (0.4 s at most, growing
     *  by 12.5 ms per pass while the loop is busy), up to
     *  this, so that neither makes runs late (aps_store_info.commit_ahead_us
     *  tells the window). Both effects of the window above then reach this
     *  far.
     *  0 = 1 s; negative (or at most commit_ahead_us) = it stays
     *  commit_ahead_us. */
    int64_t commit_ahead_max_us;
    /** SCHED_FIFO priority (1-99) of the loop thread and the commit-ahead
     *  thread while they wait for due times, so that busy threads (of this
     *  process or of others) do not delay a wake-up. Each drops to normal
     *  priority once it has been busy for 50 ms since it woke (the loop
     *  checks between batches of due jobs), so a backlog of due jobs
     *  cannot starve the machine, and takes the priority again when it
     *  next sleeps. Listeners (aps_scheduler_add_listener) run on the loop
     *  thread, so at this priority too: keep them short. Needs CAP_SYS_NICE
     *  or an RLIMIT_RTPRIO of at least this value; refused, the threads run
     *  at normal priority (aps_scheduler_loop_priority() tells). Background
     *  and blocking modes (the caller's thread: restored on return), not
     *  APS_RUN_EXTERNAL. 0 = normal priority. */
    int loop_priority;
    /** The least time from one of the loop's passes to the next that only
     *  a due time asks for (and between the commit-ahead thread's hand-offs
     *  of runs): at high rates a wake-up per due time cost more CPU than
     *  the runs. A run is handed on up to this much after its time while
     *  others keep the loop busy; a due time this long after the last pass
     *  is not delayed. A job whose misfire grace is shorter than this can
     *  miss runs it would otherwise make. Real clock only. 0 = 250 us;
     *  negative = none (a pass per due time). */
    int64_t pass_spacing_us;
    /** LMDB stores: bytes of disk held in a file `reserve` in each store's
     *  directory. A run is committed before it starts, so a full disk would
     *  stop every job: the first write that finds the disk full empties the
     *  file and goes on in the space given back. From then on, until twice
     *  this is free again (the file is then made anew), new jobs and
     *  backfills are refused with APS_ENOSPC (aps_store_info.low_space),
     *  while stored jobs go on firing and can be modified or removed; the
     *  empty file keeps it so across a restart. 0 = 32 MiB; negative = no
     *  reserve (a full disk fails every write). */
    int64_t disk_reserve_bytes;
    /** LMDB stores: let the file grow by up to this many bytes before
     *  reusing the pages that commits free, so that commits write their
     *  pages in one run at the file's end rather than scattered over it:
     *  faster where scattered writes are slow (HDDs, many virtual disks;
     *  here 64 threads adding jobs with ids of their own: 14,000-15,700
     *  adds/s without, 20,300-20,900 with 256 MiB). Counted in bytes the
     *  store's writer writes; the file takes up to about twice this beyond
     *  its data, and keeps it. A write that finds the disk full is tried
     *  again in the pages held back before the disk reserve is given; none
     *  are held while the reserve is out or missing, nor for a minute after
     *  a full disk. 0 or less = off (LMDB's own reuse, lowest free page
     *  first). */
    int64_t write_window_bytes;
    /** LMDB stores: open a directory on a network or cluster file system
     *  (NFS, SMB/CIFS, AFS, CephFS, GFS2, Lustre, ..., and FUSE ones such
     *  as sshfs or GlusterFS) rather than refuse it. LMDB's lock works
     *  within one host: only for a store that no other host ever opens. */
    int allow_network_fs;
} aps_scheduler_config;

/** The scheduler's state (APScheduler's STATE_*). */
typedef enum aps_scheduler_state {
    APS_STATE_STOPPED = 0,
    APS_STATE_RUNNING = 1,
    APS_STATE_PAUSED = 2,
} aps_scheduler_state;

/** How aps_scheduler_start runs the loop. */
typedef enum aps_run_mode {
    APS_RUN_BLOCKING = 0,   /**< on the caller's thread until shutdown */
    APS_RUN_BACKGROUND = 1, /**< on a thread of its own */
    APS_RUN_EXTERNAL = 2,   /**< the caller drives aps_scheduler_process */
} aps_run_mode;

/**
 * Creates a scheduler: opens its stores (an lmdb store in use by another
 * process gives APS_EBUSY `store is in use by pid N`; one on a network
 * file system APS_EINVAL, see allow_network_fs), creates its executors.
 * The scheduler is stopped: jobs may be added, none fire.
 */
int aps_scheduler_create(const aps_scheduler_config *cfg, aps_scheduler **out, aps_error *err);

/**
 * Starts the scheduler. Runs missed while stopped follow the misfire and
 * coalesce rules. BLOCKING returns after aps_scheduler_shutdown (called from
 * another thread, a listener or a job), having waited for running jobs as
 * that asked. APS_ESTATE if already started, or once shut down: a scheduler
 * does not start twice (its executors are stopped); create another on the
 * same stores.
 */
int aps_scheduler_start(aps_scheduler *s, aps_run_mode mode);

/**
 * Stops the loop; with `wait`, waits for running jobs to finish (and, in
 * the thread and process pools, runs already queued there), else cancels
 * them. Runs waiting in a
 * job's overlap queue stay there, in the stored job: the next scheduler on
 * the store starts them first when the job is next due. Emits
 * SCHEDULER_SHUTDOWN. Idempotent. A job may call it (not destroy): its own
 * run ends when it returns, and destroy waits for that. Runs committed
 * ahead (commit_ahead_us) that were not handed on (their time has not
 * come, or the scheduler is paused) do not start, as APScheduler would not
 * have submitted them: each ends as withdrawn ("...: the scheduler stopped
 * first"), and its time is its job's next run time again for the next
 * scheduler on the store. Changes to jobs made meanwhile wait for that
 * write (see aps_job_add_async for those made from its callback).
 * APS_ESTATE from an aps_job_add_async callback (a store's writer thread,
 * which its writes wait for).
 */
int aps_scheduler_shutdown(aps_scheduler *s, int wait);

/** Shuts down if needed and frees everything. NULL is allowed. Not from
 *  an aps_job_add_async callback. */
void aps_scheduler_destroy(aps_scheduler *s);

/** APScheduler's pause(): jobs stop firing until resume (state persists);
 *  runs committed ahead (commit_ahead_us) wait for the resume too.
 *  Emits SCHEDULER_PAUSED when it was running; paused already, does
 *  nothing. APS_ESTATE when not started. */
int aps_scheduler_pause(aps_scheduler *s);
/** APScheduler's resume(): emits SCHEDULER_RESUMED when it was paused;
 *  running already, does nothing. APS_ESTATE when not started. */
int aps_scheduler_resume(aps_scheduler *s);
/** The current state. */
aps_scheduler_state aps_scheduler_get_state(aps_scheduler *s);

/**
 * External loop: a file descriptor that becomes readable when
 * aps_scheduler_process should be called before the next_wakeup it last
 * returned (finished runs; an added or changed job only when it is due
 * before that: one committed during a call is in the next_wakeup that
 * call returns, so the caller must honour next_wakeup too).
 * Level-triggered; owned by the scheduler.
 */
int aps_scheduler_fd(aps_scheduler *s);

/**
 * External loop: does all due work without blocking (listeners get 1,024
 * events a call at most; with more left, the fd stays readable).
 * @param[out] next_wakeup  when to call again at the latest (APS_TIME_NONE:
 *             only when the fd is readable). May be NULL.
 */
int aps_scheduler_process(aps_scheduler *s, aps_time *next_wakeup);

/** A registered C function (the "function" target). Runs on an executor
 * thread. Return 0 for success; else fill `error` (NUL-terminated). */
typedef int (*aps_job_fn)(const char *job_id, const char *arg, aps_time scheduled,
                          void *userdata, char *error, size_t error_len);

/** Registers `fn` under `name` for APS_TARGET_FUNCTION jobs. */
int aps_scheduler_register_function(aps_scheduler *s, const char *name, aps_job_fn fn,
                                    void *userdata);

/** Options of a mutating call: idempotency and replace. */
typedef struct aps_mutation {
    const char *request_id; /**< retry key: a repeat within the retention window returns the first result */
    int replace_existing;   /**< aps_job_add: replace a job with the same id */
    /** A hash of the whole request (0 = none). Stored with the request id;
     *  a repeat of the id with a different non-zero fingerprint fails with
     *  APS_EINVAL ("request_id: ... different request") instead of replaying. */
    uint64_t request_fingerprint;
} aps_mutation;

/**
 * Adds a job (APScheduler's add_job). Emits JOB_ADDED in the same durable
 * commit. @param[out] out the stored job (may be NULL).
 * @return 0; APS_EINVAL/APS_ENOENT (bad spec, message names the field),
 *         APS_EEXIST (id taken), APS_ENOSPC, APS_EIO.
 */
int aps_job_add(aps_scheduler *s, const aps_job_spec *spec, const aps_mutation *m,
                aps_job **out, aps_error *err);

/** The completion of aps_job_add_async: `rc` and `err` as aps_job_add
 *  returns them; `job` (the callback owns it: aps_job_free) is NULL on error. */
typedef void (*aps_job_add_cb)(void *userdata, int rc, aps_job *job, const aps_error *err);

/**
 * aps_job_add without waiting for the durable commit, for callers that must
 * not block (an RPC server's event threads). The spec is validated and
 * copied before this returns; `cb` runs exactly once: on this thread when
 * the add fails up front or every store involved is a memory store, else on
 * an LMDB store's writer thread once the job and its JOB_ADDED event are on
 * disk (or the write failed). `cb` must not block; synchronous engine
 * writes to that store from it fail with APS_ESTATE. While a shutdown takes
 * back the runs committed ahead (a moment at its start,
 * aps_scheduler_shutdown), the changes that may withdraw such runs fail
 * with APS_ESTATE when made from `cb` (a replacing aps_job_add,
 * aps_job_modify, _reschedule, _pause, _resume, _run_now, _remove,
 * _backfill, _remove_all), and a replacing aps_job_add_async made from it
 * is put off until that is written (its `cb` then runs afterwards, on the
 * shutdown's thread for a memory store). aps_scheduler_destroy completes
 * the adds still in flight: their callbacks run before it returns.
 */
void aps_job_add_async(aps_scheduler *s, const aps_job_spec *spec, const aps_mutation *m,
                       aps_job_add_cb cb, void *userdata);

/** Gets a job by id (ids are unique across stores). APS_ENOENT. */
int aps_job_get(aps_scheduler *s, const char *id, aps_job **out);

/** Filters for aps_job_list. */
typedef struct aps_job_filter {
    const char *jobstore;   /**< NULL = all */
    int paused;             /**< -1 = either */
    const aps_label *labels; /**< all must match */
    size_t n_labels;
} aps_job_filter;

/**
 * Lists jobs in id order, a page at a time. `after_id` NULL starts at the
 * beginning; `*next_after` (malloc'd, NULL at the end) continues.
 */
int aps_job_list(aps_scheduler *s, const aps_job_filter *f, const char *after_id, size_t limit,
                 aps_job ***jobs, size_t *n, char **next_after);

/** Frees a list returned by aps_job_list. */
void aps_job_list_free(aps_job **jobs, size_t n);

/** Fields aps_job_modify changes. */
enum {
    APS_MODIFY_NAME = 1u << 0,
    APS_MODIFY_TRIGGER = 1u << 1,
    APS_MODIFY_TARGET = 1u << 2,
    APS_MODIFY_EXECUTOR = 1u << 3,
    APS_MODIFY_MISFIRE = 1u << 4,
    APS_MODIFY_COALESCE = 1u << 5,
    APS_MODIFY_MAX_INSTANCES = 1u << 6,
    APS_MODIFY_OVERLAP = 1u << 7,
    APS_MODIFY_LABELS = 1u << 8,
    APS_MODIFY_NEXT_RUN_TIME = 1u << 9,
    APS_MODIFY_JOBSTORE = 1u << 10,
};

/**
 * Changes the fields named in `mask` to their values in `spec` (APScheduler's
 * modify_job). A new trigger does not recompute the next run time (as
 * APScheduler); setting next_run_time on a paused job resumes it. A higher
 * max_instances starts runs queued for a slot (overlap QUEUE_*) at once.
 */
int aps_job_modify(aps_scheduler *s, const char *id, const aps_job_spec *spec, uint32_t mask,
                   const aps_mutation *m, aps_job **out, aps_error *err);

/** Replaces the trigger and recomputes the next run time from now. */
int aps_job_reschedule(aps_scheduler *s, const char *id, const aps_trigger_spec *trigger,
                       const aps_mutation *m, aps_job **out, aps_error *err);

/** Pauses a job: clears its next run time. */
int aps_job_pause(aps_scheduler *s, const char *id, const aps_mutation *m, aps_job **out);

/**
 * Resumes a job: next run time recomputed from now. A trigger with no
 * further fire time removes the job (as APScheduler); *out is then NULL.
 */
int aps_job_resume(aps_scheduler *s, const char *id, const aps_mutation *m, aps_job **out);

/**
 * Runs the job once now, beside its schedule (its next run time does not
 * move; a paused job stays paused). The run is not subject to
 * misfire_grace_time. When max_instances runs are running it follows the
 * overlap policy: SKIP refuses it (APS_ESTATE), the others queue it.
 * @param[out] run_id  may be NULL: the run's id when it started at once,
 *                     "" when it is queued. A request-id replay answers
 *                     as the first call did (run_id and queued).
 * @param[out] queued  may be NULL: 1 when it waits for an instance slot.
 * @return 0, APS_ENOENT, APS_ESTATE (message in err), or a store error.
 */
int aps_job_run_now(aps_scheduler *s, const char *id, const aps_mutation *m, char run_id[33],
                    int *queued, aps_error *err);

/** Removes a job. Emits JOB_REMOVED. APS_ENOENT. */
int aps_job_remove(aps_scheduler *s, const char *id, const aps_mutation *m);

/** Removes every job (of one store, or all: NULL). Emits ALL_JOBS_REMOVED. */
int aps_job_remove_all(aps_scheduler *s, const char *jobstore, const aps_mutation *m,
                       size_t *removed);

/**
 * Runs the job's fire times in [start, end) now (each a queued run, not
 * subject to misfire_grace_time). At most `max_runs` (0 = 1000). A run
 * committed ahead whose time has not come is withdrawn first (as by
 * aps_job_run_now), so it does not hold an instance slot the backfill needs.
 * @param[out] count runs queued.
 */
int aps_job_backfill(aps_scheduler *s, const char *id, aps_time start, aps_time end,
                     size_t max_runs, const aps_mutation *m, size_t *count, aps_error *err);

/** A listener (APScheduler's add_listener(cb, mask)), called on the loop
 *  thread, in sequence order, at most 1,024 events per loop pass (the rest
 *  in the passes that follow at once), so that slow listeners do not hold
 *  the firing of jobs. */
typedef void (*aps_listener_fn)(const aps_event *ev, void *userdata);

/** Adds a listener for the event types in `mask` (APS_EVENT_MASK bits). */
int aps_scheduler_add_listener(aps_scheduler *s, aps_listener_fn fn, uint32_t mask,
                               void *userdata);
/** Removes a listener added with the same fn and userdata. APS_ENOENT. */
int aps_scheduler_remove_listener(aps_scheduler *s, aps_listener_fn fn, void *userdata);

/** A cursor over the durable event log, live once caught up. */
typedef struct aps_subscriber aps_subscriber;

/**
 * Opens a cursor delivering events with sequence > `after` (0 = from the
 * oldest retained; UINT64_MAX = live only), filtered by `mask` and
 * optionally one job id. A slow subscriber never slows the scheduler.
 */
int aps_subscribe(aps_scheduler *s, uint64_t after, uint32_t mask, const char *job_id,
                  aps_subscriber **out);

/**
 * As aps_subscribe, filtered by any of `n_ids` job ids (copied; n_ids 0 =
 * every event, also non-job ones). Matching costs O(1) per event whatever
 * the number of subscribers and ids. @return 0; APS_EINVAL; APS_ENOMEM.
 */
int aps_subscribe_ids(aps_scheduler *s, uint64_t after, uint32_t mask, const char *const *ids,
                      size_t n_ids, aps_subscriber **out);

/**
 * Next event, waiting up to `timeout_us` (0 = don't wait, -1 = forever).
 * @return 0 with *ev (owned by caller); APS_ENOENT if none arrived in time;
 *         APS_ERANGE when events asked for were pruned: *gap_first is then
 *         the oldest sequence still available, and the cursor moves there;
 *         APS_ESTATE when the scheduler shut down.
 */
int aps_subscriber_next(aps_subscriber *sub, int64_t timeout_us, aps_event **ev,
                        uint64_t *gap_first);

/** A file descriptor readable when events may be waiting (for poll loops:
 *  after it polls readable, call aps_subscriber_next until APS_ENOENT). */
int aps_subscriber_fd(aps_subscriber *sub);

/** The newest sequence the cursor has passed: every event up to it was
 *  returned or did not match (a bookmark). @return 0; APS_EINVAL. */
int aps_subscriber_position(aps_subscriber *sub, uint64_t *seq);

/** Closes a cursor. NULL is allowed. */
void aps_subscriber_close(aps_subscriber *sub);

/** Oldest and newest sequence in the event log (0, 0 when empty). */
int aps_scheduler_event_bounds(aps_scheduler *s, uint64_t *first, uint64_t *last);

/** A job store's figures (aps_scheduler_store_info). */
typedef struct aps_store_info {
    const char *name;       /**< borrowed from the scheduler */
    const char *type;       /**< "lmdb" or "memory" */
    uint64_t jobs;          /**< jobs in it */
    uint64_t unscheduled;   /**< of those, without a next run time: paused (or
                                 finished: waiting for their queued runs, or
                                 one-shot, their run just handed on, until
                                 the loop removes them) */
    aps_time next_run_time; /**< the earliest (a run committed ahead counts
                                 until its time when it is the scheduler's
                                 earliest, so the least over the stores is
                                 exact); APS_TIME_NONE if none */
    int64_t commit_ahead_us; /**< how far ahead of their time its runs are
                                  committed now (0: not at all, or not yet) */
    int low_space;           /**< its disk filled up and it gave its reserve
                                  back: new jobs and backfills are refused
                                  (disk_reserve_bytes) */
} aps_store_info;

/** An executor's figures (aps_scheduler_executor_info). */
typedef struct aps_executor_info {
    const char *name;           /**< borrowed from the scheduler */
    const char *type;           /**< "threadpool", "processpool" or "workers" */
    uint32_t max_workers;       /**< most runs at once; 0 = no limit */
    uint32_t running;           /**< runs executing now (workers: leased) */
    uint32_t pending;           /**< submitted, waiting for a slot or a worker */
    uint32_t connected_workers; /**< workers: attached worker handles */
    uint32_t stopped_leftovers; /**< processpool: commands left running by a crashed
                                     predecessor, stopped at create (state_dir) */
} aps_executor_info;

/** Store `i` (0-based, in configuration order): constant time, no scan.
 *  APS_ENOENT past the last store. */
int aps_scheduler_store_info(aps_scheduler *s, size_t i, aps_store_info *out);

/** Executor `i` (0-based, in configuration order). APS_ENOENT past the last. */
int aps_scheduler_executor_info(aps_scheduler *s, size_t i, aps_executor_info *out);

/** The SCHED_FIFO priority the loop runs at while waiting: the configured
 *  loop_priority once started with it, 0 if none was asked for, the mode
 *  has no loop thread, or the system refused it (no CAP_SYS_NICE, or
 *  RLIMIT_RTPRIO too low). */
int aps_scheduler_loop_priority(aps_scheduler *s);
/** @} */

/** @defgroup workers Remote workers
 * The engine side of apsd.v1.Workers (proto/apsd/v1/workers.proto). Jobs
 * with a `remote` target run on an executor of type "workers": the executor
 * queues each run under its target's queue name, and worker programs (a
 * binding's worker process through the gRPC service, or an embedding
 * program directly) attach to a queue, take runs with a lease and report
 * each run's result.
 *
 * Queues are global to a scheduler. Every "workers" executor of a
 * scheduler feeds one shared registry of named queues, so a worker attached
 * to queue "q" takes the runs of "q" whichever executor they were submitted
 * to, in submission order. The executor still applies its own settings to
 * its runs: `max_queue` bounds its runs waiting in any queue (0 = 10000;
 * one more is refused, the run then ends as SPAWN_FAILED), `max_workers`
 * bounds its runs leased at once (0 = 10, as for every executor), and
 * `lease_us` is the default lease of its runs (0 = 60 s, at most
 * #APS_WORKER_LEASE_MAX_US). Run ids are global too, so aps_worker_complete
 * and aps_worker_extend need only the scheduler.
 *
 * A run is handed to one worker at most once: no two workers ever hold the
 * same run, and a run whose lease ends is not handed out again (APScheduler
 * has no retries). The misfire rule is applied when a worker takes a run
 * (that is when it starts): run times later than misfire_grace_time end as
 * JOB_MISSED and are left out of the dispatch; a run whose run times are all
 * missed ends at once and is not dispatched. A queued run ends that way as
 * soon as its last run time is too late, taken or not, so a queue without
 * workers does not hold its jobs' max_instances slots. A run with several
 * run times (coalesce off, the job behind) is executed once by its worker,
 * and the result is reported for each of its run times.
 *
 * A lease ends in one of four ways:
 * - aps_worker_complete: JOB_EXECUTED (SUCCEEDED, `return_json`) or
 *   JOB_ERROR (FAILED, `error`, `traceback`); the outcome's start_time is
 *   when the run was taken, end_time when it was completed;
 * - expiry: the scheduler clock reaches the deadline without a completion
 *   or an extension. The run ends as JOB_ERROR, LEASE_EXPIRED, "lease
 *   expired", which frees its max_instances slot. Expiry is judged on the
 *   scheduler's clock (an injected clock works) by one timer thread per
 *   scheduler, and by every complete or extend call;
 * - cancellation (overlap policy CANCEL_RUNNING): JOB_ERROR, CANCELLED;
 * - shutdown of the executor: JOB_ERROR, INTERRUPTED. Shutdown does not
 *   wait for leased runs, even with `wait`: a worker may never come back.
 * In the last three cases the run is also put on its worker's cancel list
 * (aps_worker_cancels) so that the worker stops it; a later complete or
 * extend of it fails with APS_ESTATE.
 *
 * Leases outlive a worker handle: after aps_worker_detach (a stream that
 * ended) the runs it held keep their leases and may still be extended and
 * completed by run id and token, e.g. by the same worker reconnected. They
 * no longer count against any handle's max_in_flight, and their cancels
 * reach nobody (the worker learns at its next complete or extend).
 *
 * Finished runs are remembered (the last #APS_WORKER_FINISHED_KEPT of a
 * scheduler) so that a retried complete succeeds again and a late one gets
 * APS_ESTATE; a run forgotten since gives APS_ENOENT.
 *
 * Thread safety: every function may be called from any thread. A worker
 * handle may be used by several threads at once, but aps_worker_detach must
 * not run concurrently with another call on the same handle.
 *
 * Mapping to gRPC status codes (for the service): APS_EINVAL from
 * aps_worker_complete or aps_worker_extend with non-empty ids and a valid
 * result means a wrong lease token, which workers.proto reports as
 * FAILED_PRECONDITION, as it does APS_ESTATE; APS_ELIMIT is
 * RESOURCE_EXHAUSTED.
 * @{ */

/** Most bytes of a queue name (as target.remote.queue). */
#define APS_WORKER_QUEUE_MAX 63
/** Most bytes of a worker id. */
#define APS_WORKER_ID_MAX 200
/** Largest max_in_flight of one worker handle. */
#define APS_WORKER_IN_FLIGHT_MAX 1000
/** Most task names in a worker's filter. */
#define APS_WORKER_TASKS_MAX 256
/** Longest lease (and lease extension): one day. */
#define APS_WORKER_LEASE_MAX_US (INT64_C(86400) * 1000000)
/** Most bytes of one result (return_json + error + error_type + traceback). */
#define APS_WORKER_RESULT_MAX (1u << 20)
/** Most worker handles attached to one scheduler at once. */
#define APS_WORKERS_MAX 10000
/** Finished runs a scheduler remembers for complete and extend. */
#define APS_WORKER_FINISHED_KEPT 65536

/** A worker attached to a queue (an Acquire stream). Opaque. */
typedef struct aps_worker aps_worker;

/**
 * Called whenever runs may be available for a worker or a cancel is
 * pending for it, from any engine thread, never while the engine holds a
 * lock. It must be quick, must not block, and must not call back into the
 * engine: it is meant to wake the worker's owner (a gRPC stream, an event
 * loop), which then calls aps_worker_take and aps_worker_cancels.
 *
 * It is edge-triggered: once called, it is not called again for the same
 * worker until the worker calls aps_worker_take or aps_worker_cancels.
 * So, when woken, take until a call returns fewer runs than asked, and
 * fetch the cancels. It may be called when nothing turns out to be
 * available. It is not called for runs already waiting when the worker
 * attaches: take once after attaching.
 */
typedef void (*aps_worker_notify_fn)(void *userdata);

/** How a worker attaches (AcquireRequest). Pointers are borrowed for the
 *  call; zero fields are defaults. */
typedef struct aps_worker_options {
    const char *queue;        /**< NULL or "" = "default"; at most
                                   #APS_WORKER_QUEUE_MAX bytes, no spaces or
                                   control characters */
    const char *worker_id;    /**< required: 1-#APS_WORKER_ID_MAX bytes, no
                                   control characters, e.g. "host-12/pid-4711" */
    uint32_t max_in_flight;   /**< runs held and not finished: 0 = 1, at most
                                   #APS_WORKER_IN_FLIGHT_MAX */
    const char *const *tasks; /**< take only runs of these tasks ("module:func");
                                   NULL or n_tasks 0 = any task of the queue */
    size_t n_tasks;           /**< at most #APS_WORKER_TASKS_MAX */
    int64_t lease_us;         /**< lease of each run taken: 0 = the run's
                                   executor's lease_us; at most
                                   #APS_WORKER_LEASE_MAX_US */
    aps_worker_notify_fn notify; /**< may be NULL (a worker that polls or
                                      blocks in aps_worker_take) */
    void *userdata;           /**< passed to notify */
} aps_worker_options;

/** A run handed to a worker (apsd.v1.Dispatch). Owned by the caller of
 *  aps_worker_take: aps_dispatch_free. Every string is non-NULL. */
typedef struct aps_dispatch {
    char run_id[33];        /**< as in the JOB_SUBMITTED/EXECUTED/ERROR events */
    char lease_token[33];   /**< secret proving the lease: give it to
                                 aps_worker_complete and aps_worker_extend */
    char *job_id;
    char *task;             /**< "module:func" */
    char *args_json;        /**< a JSON array ("[]" when the job has none) */
    char *kwargs_json;      /**< a JSON object ("{}" when the job has none) */
    char *queue;
    aps_time *run_times;    /**< the scheduled run times to run, ascending
                                 (missed ones left out); at least one */
    size_t n_run_times;
    aps_time lease_deadline; /**< on the scheduler's clock */
    int64_t lease_us;        /**< the lease length granted */
} aps_dispatch;

/** The result of a run (CompleteRequest). Strings are borrowed for the
 *  call; NULL = not given. */
typedef struct aps_task_result {
    int ok;                  /**< 1: the task returned; 0: it raised */
    const char *return_json; /**< ok: the return value as JSON; NULL = null */
    const char *error;       /**< !ok: the exception's message, str(exc) */
    const char *error_type;  /**< !ok: the exception's type, e.g. "ValueError" */
    const char *traceback;   /**< !ok: the formatted traceback */
} aps_task_result;

/**
 * Attaches a worker to a queue of the scheduler's "workers" executors.
 * The worker takes nothing until it calls aps_worker_take.
 * @param[in] s    the scheduler; it must outlive the calls made with the
 *                 handle except aps_worker_detach (which may come after
 *                 aps_scheduler_destroy).
 * @param[in] opt  queue, identity, limits and the notify callback.
 * @param[out] out the handle, owned by the caller: aps_worker_detach.
 * @param[out] err on failure, a message naming the field. May be NULL.
 * @return 0, or
 *   - APS_EINVAL: a bad option (queue, worker_id, max_in_flight, tasks,
 *     lease_us) or a NULL argument;
 *   - APS_ENOENT: the scheduler has no executor of type "workers";
 *   - APS_ESTATE: its "workers" executors have shut down;
 *   - APS_ELIMIT: #APS_WORKERS_MAX workers are attached;
 *   - APS_ENOMEM.
 */
int aps_worker_attach(aps_scheduler *s, const aps_worker_options *opt, aps_worker **out,
                      aps_error *err);

/**
 * Takes up to `max` runs of the worker's queue, leasing each to this
 * worker with a new random token and a deadline now + lease. Never hands a
 * run to two workers, never exceeds the worker's max_in_flight or an
 * executor's max_workers. Runs are taken oldest first, skipping runs of
 * other tasks when the worker has a task filter.
 * @param[in] w          the worker.
 * @param[in] max        most runs wanted (>= 1).
 * @param[in] timeout_us how long to wait when none is available: 0 = don't
 *                       wait, -1 = until one is (or the executors shut down).
 * @param[out] out       an array of *n dispatches, owned by the caller
 *                       (aps_dispatch_free); NULL when *n is 0.
 * @param[out] n         how many were taken; 0 when none came in time.
 * @return 0 (also when none came: *n is 0), or
 *   - APS_EINVAL: NULL arguments or `max` 0;
 *   - APS_ESTATE: the "workers" executors have shut down: no run will come;
 *   - APS_ENOMEM, or APS_EIO (no random bytes for a token): nothing was
 *     taken (runs found all missed may have ended as JOB_MISSED).
 */
int aps_worker_take(aps_worker *w, size_t max, int64_t timeout_us, aps_dispatch **out,
                    size_t *n);

/** Frees an array of `n` dispatches returned by aps_worker_take and
 *  everything they own. NULL is allowed. */
void aps_dispatch_free(aps_dispatch *d, size_t n);

/**
 * Takes the list of runs this worker held that the scheduler has ended
 * without it (cancelled, interrupted by shutdown, lease expired): stop
 * them; their results are no longer accepted. Each run is listed once.
 * At most #APS_WORKER_IN_FLIGHT_MAX wait; older ones beyond are dropped.
 * @param[out] run_ids an array of *n run ids, owned by the caller (free());
 *                     NULL when *n is 0.
 * @param[out] n       how many.
 * @return 0, APS_EINVAL (NULL arguments) or APS_ENOMEM (the list is kept).
 */
int aps_worker_cancels(aps_worker *w, char (**run_ids)[33], size_t *n);

/**
 * Reports the result of a run and releases its lease: JOB_EXECUTED
 * (SUCCEEDED, return_json) or JOB_ERROR (FAILED, error). The engine's
 * outcome has no field of its own for the exception type, so the error
 * text is "<error_type>: <error>" (as Python prints an exception) when a
 * type is given. Repeating a complete that succeeded, with the same token
 * and an identical result, returns 0 and does nothing (a safe retry).
 * @param[in] s           the scheduler.
 * @param[in] run_id      the dispatch's run id.
 * @param[in] lease_token the dispatch's lease token.
 * @param[in] r           the result.
 * @return 0, or
 *   - APS_EINVAL: empty or NULL run_id, lease_token or r; return_json is
 *     not JSON; or a wrong lease token;
 *   - APS_ENOENT: no such run (or forgotten, see #APS_WORKER_FINISHED_KEPT);
 *   - APS_ESTATE: the run already ended: its lease expired, it was
 *     cancelled or interrupted, or it was completed with another result;
 *   - APS_ELIMIT: the result is larger than #APS_WORKER_RESULT_MAX;
 *   - APS_ENOMEM: nothing was changed.
 */
int aps_worker_complete(aps_scheduler *s, const char *run_id, const char *lease_token,
                        const aps_task_result *r);

/**
 * Extends a run's lease (a heartbeat): the new deadline is now + extend_us
 * on the scheduler's clock. Call it well before the deadline, e.g. at a
 * third of the lease.
 * @param[in] extend_us  the new lease length: 0 = the length granted at
 *                       take; at most #APS_WORKER_LEASE_MAX_US.
 * @param[out] deadline  the new deadline. May be NULL.
 * @param[out] granted_us the lease length granted. May be NULL.
 * @return 0, or APS_EINVAL (empty ids, extend_us out of range, a wrong
 *         lease token), APS_ENOENT (no such run), APS_ESTATE (the run
 *         already ended: completed, expired, cancelled or interrupted).
 */
int aps_worker_extend(aps_scheduler *s, const char *run_id, const char *lease_token,
                      int64_t extend_us, aps_time *deadline, int64_t *granted_us);

/**
 * Detaches a worker and frees its handle (the Acquire stream ended). The
 * runs it holds keep their leases (see above). When it returns, notify is
 * not running and will not be called again for this worker. NULL is
 * allowed.
 */
void aps_worker_detach(aps_worker *w);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* APSD_ENGINE_H */
