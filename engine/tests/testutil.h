/*
 * testutil.h: what several engine tests share (//engine:testutil, test
 * code only): a clock the test sets, to inject as aps_scheduler_config.clock
 * (test_scheduler.c, test_loop.c, test_exec_remote.c, test_subscribers.c),
 * a fresh directory for a store, a function job with APScheduler's
 * defaults, and the trigger helpers of test_cron.c and test_triggers.c. A helper that finds something
 * wrong fails the running cmocka test.
 */
#ifndef APSD_ENGINE_TESTUTIL_H
#define APSD_ENGINE_TESTUTIL_H

#include <stdint.h>

#include "apsd/engine.h"

/** 2026-11-23T10:00:00Z in microseconds: the time of tu_clock until
 * tu_clock_set changes it. */
#define TU_T0 (INT64_C(1795428000) * INT64_C(1000000))

/** A clock that stands still at the time tu_clock_set gave it (TU_T0 before
 * that). The scheduler's threads may read it while the test thread sets it. */
extern const aps_clock tu_clock;

/** Sets the time of tu_clock to `t`. Thread-safe. */
void tu_clock_set(aps_time t);

/** An empty directory for `name` under $TEST_TMPDIR (else /tmp), removed
 * first if a previous run left it; fails the test if it cannot be. The
 * path is valid until the next call. */
const char *tu_tmpdir(const char *name);

/** A job running the registered C function `function` (with `arg`, may
 * be NULL) on `trigger` (NULL: now), with APScheduler's defaults for the
 * rest (coalesce, max_instances, misfire_grace_time from job_defaults).
 * The spec borrows its arguments. */
aps_job_spec tu_function_job(const char *id, const aps_trigger_spec *trigger,
                             const char *function, const char *arg);

/** A function to register (aps_scheduler_register_function) with the
 * address of an int as userdata: each run adds 1 to it, atomically (read it
 * with __atomic_load_n). */
int tu_count_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata,
                char *error, size_t error_len);

/** A date trigger firing once at `when` (the default zone). */
aps_trigger_spec tu_date(aps_time when);

/** Adds `spec` to `s`; fails the test, with the engine's message, if it is
 * refused. */
void tu_job_add(aps_scheduler *s, const aps_job_spec *spec);

/** The time `text` (RFC 3339, as aps_time_parse reads it); fails the test
 * when it does not parse. */
aps_time tu_time(const char *text);

/** The trigger of `s` created at `now`, with UTC as the default time zone;
 * fails the test when the spec is refused. The caller owns the trigger
 * (aps_trigger_free). */
aps_trigger *tu_trigger(const aps_trigger_spec *s, aps_time now);

/** Checks the fire times of `t`: t1 = next(NONE, now), t(k+1) = next(tk, tk)
 * must be want[0..n-1] (RFC 3339 texts); with `ends`, the one after them
 * must be NONE. Fails the test at the first difference. */
void tu_check_sequence(aps_trigger *t, aps_time now, const char *const *want, int n, int ends);

#endif /* APSD_ENGINE_TESTUTIL_H */
