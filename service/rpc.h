/**
 * @file rpc.h
 * @brief What the RPC handlers share: the daemon's state (aps_app) and the
 *        method tables of each service.
 */
#ifndef APSD_SERVICE_RPC_H
#define APSD_SERVICE_RPC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"
#include "service/pump.h"
#include "service/server.h"

#define APSD_VERSION "0.1.0"

/** A configured executor, as GetScheduler reports it and AddJob checks it. */
typedef struct aps_app_executor {
    const char *name;
    const char *type;
    uint32_t max_workers;
    const char *const *allow; /**< command allow-list (processpool); NULL = any */
    size_t n_allow;
    uint32_t max_output_limit; /**< processpool: largest max_output_bytes a job may ask */
    const char *const *allow_env; /**< with `allow`: the env keys a job may set */
    size_t n_allow_env;
} aps_app_executor;

/** A configured job store. */
typedef struct aps_app_store {
    const char *name;
    const char *type;
} aps_app_store;

/** The daemon's state, shared (read-only after start) by every handler. */
typedef struct aps_app {
    aps_scheduler *sched;
    aps_pump *pump;
    aps_server *server;
    const char *default_tz;
    aps_time start_time;
    const aps_app_executor *executors;
    size_t n_executors;
    const aps_app_store *stores;
    size_t n_stores;
    /* job defaults (for GetScheduler) */
    int default_coalesce;
    int default_max_instances;
    int default_misfire_unlimited;
    int64_t default_misfire_us;
    /* event log retention (for GetScheduler) */
    uint64_t event_max_count;
    int64_t event_max_age_us;
    /* limits */
    int max_subscribers;     /**< SubscribeEvents streams at once */
    size_t subscriber_queue; /**< undelivered events before a stream is cut */
    int64_t heartbeat_us;    /**< bookmark interval */
    int backfill_max_runs;   /**< Backfill's max_runs limit */
    size_t max_health_watches; /**< Health.Watch streams open at once */
    int max_adds;            /**< AddJob calls waiting for their commit (--engine-queue) */
    atomic_int n_adds;
    atomic_int n_subscribers;
    /* Workers: the reflection/health state lives in builtin methods. */
    void *workers; /**< workers_rpc.c's state, NULL if absent */
} aps_app;

/** Appends the apsd.v1.Scheduler methods (built from protobuf-c's service
 *  descriptor) to `out` (room for `cap`). @return the number added, -1 if
 *  `cap` is too small. */
int aps_scheduler_methods(aps_app *app, aps_method *out, size_t cap);

/** Appends the apsd.v1.Workers methods. */
int aps_workers_methods(aps_app *app, aps_method *out, size_t cap);

/** The state Workers needs (aps_worker_attach etc.); NULL if the engine has
 *  no remote workers. */
int aps_workers_init(aps_app *app);
void aps_workers_fini(aps_app *app);

/** Appends grpc.health.v1.Health and the reflection methods (v1, v1alpha).
 *  `refl` is an aps_refl (may be NULL: reflection then UNIMPLEMENTED). */
int aps_builtin_methods(aps_app *app, void *refl, aps_method *out, size_t cap);

/** Ends a call with the status of an engine error, its message prefixed by
 *  `prefix` (e.g. "job.") when it names a field. */
void aps_rpc_fail_engine(aps_call *c, int rc, const aps_error *err, const char *prefix);

#endif /* APSD_SERVICE_RPC_H */
