/**
 * @file exec_process.h
 * @brief The process executor's internals that tests and benchmarks read.
 *
 * The executor itself is created through aps__executor_process_create
 * (exec.h) and used through aps__executor_ops like every other kind; this
 * header only adds counters and a test switch.
 */
#ifndef APSD_ENGINE_EXEC_PROCESS_H
#define APSD_ENGINE_EXEC_PROCESS_H

#include <stdint.h>

#include "exec.h"

/** How a process executor learns that a child exited. */
typedef enum aps__reaper {
    APS__REAP_PIDFD = 1,    /**< a pidfd per child in the epoll set */
    APS__REAP_SIGNALFD = 2, /**< signalfd(SIGCHLD) plus a 50 ms poll (fallback) */
} aps__reaper;

/** Counters of a process executor, read with aps__executor_process_stats. */
typedef struct aps__process_stats {
    uint32_t children;      /**< children alive (spawned, not yet reaped) now */
    uint32_t peak_children; /**< most children alive at once since create */
    uint32_t busy;          /**< runs holding a worker slot now */
    uint32_t queued;        /**< runs waiting for a slot */
    uint64_t spawned;       /**< children started since create */
    uint64_t spawn_failed;  /**< run times that ended SPAWN_FAILED */
    aps__reaper reaper;
} aps__process_stats;

/**
 * Reads the counters of a "processpool" executor. Thread-safe.
 * @return 0, or APS_EINVAL if `ex` is not a process executor.
 */
int aps__executor_process_stats(aps__executor *ex, aps__process_stats *out);

/**
 * Tests only: executors created while `on` is set use the signalfd
 * fallback even where pidfd_open works, so that path is exercised.
 */
void aps__executor_process_force_signalfd(int on);

#endif /* APSD_ENGINE_EXEC_PROCESS_H */
