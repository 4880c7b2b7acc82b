/*
 * testutil.c: see testutil.h. The clock and the trigger helpers had been
 * written out in each test; one copy here keeps them from drifting apart.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"
#include "testutil.h"

/* The pages of runs handed on (store_lmdb.c) go in the test's temporary
 * directory, which Bazel removes, not in /dev/shm, where a test that kills
 * a process or drops a store would leave them. (A test binary that uses
 * nothing of this file does not get it.) */
__attribute__((constructor)) static void
tu_handed_dir(void)
{
    const char *t = getenv("TEST_TMPDIR");
    if (t != NULL && *t != '\0')
        aps__store_handed_dir_test = t;
}

/* ---- directories ------------------------------------------------------------ */

const char *
tu_tmpdir(const char *name)
{
    static char dir[256];
    char cmd[300];
    const char *base = getenv("TEST_TMPDIR");

    snprintf(dir, sizeof(dir), "%s/%s-%d", base ? base : "/tmp", name, (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return dir;
}

/* ---- jobs ------------------------------------------------------------------ */

aps_job_spec
tu_function_job(const char *id, const aps_trigger_spec *trigger, const char *function,
                const char *arg)
{
    aps_job_spec j;
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.trigger = trigger;
    j.target.kind = APS_TARGET_FUNCTION;
    j.target.u.function.name = (char *)function;
    j.target.u.function.arg = (char *)arg;
    j.coalesce = -1;
    j.next_run_time = APS_TIME_NONE;
    return j;
}

int
tu_count_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
            size_t error_len)
{
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)error;
    (void)error_len;
    __atomic_fetch_add((int *)userdata, 1, __ATOMIC_SEQ_CST);
    return 0;
}

aps_trigger_spec
tu_date(aps_time when)
{
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_DATE;
    t.u.date.run_date = when;
    return t;
}

void
tu_job_add(aps_scheduler *s, const aps_job_spec *spec)
{
    aps_error err;
    if (aps_job_add(s, spec, NULL, NULL, &err) != 0)
        fail_msg("add %s: %s", spec->id ? spec->id : "(generated id)", err.msg);
}

/* ---- the clock ------------------------------------------------------------ */

/* A mutex, not an atomic: aps_time is 64 bits and the scheduler's threads
 * read the clock while the test thread sets it. */
static pthread_mutex_t clock_mu = PTHREAD_MUTEX_INITIALIZER;
static aps_time clock_time = TU_T0;

static aps_time
clock_now(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&clock_mu);
    aps_time t = clock_time;
    pthread_mutex_unlock(&clock_mu);
    return t;
}

const aps_clock tu_clock = {clock_now, NULL};

void
tu_clock_set(aps_time t)
{
    pthread_mutex_lock(&clock_mu);
    clock_time = t;
    pthread_mutex_unlock(&clock_mu);
}

/* ---- triggers --------------------------------------------------------------- */

aps_time
tu_time(const char *text)
{
    aps_time t = APS_TIME_NONE;
    aps_error err;

    if (aps_time_parse(text, &t, &err) != 0)
        fail_msg("bad time in test: %s (%s)", text, err.msg);
    return t;
}

aps_trigger *
tu_trigger(const aps_trigger_spec *s, aps_time now)
{
    aps_trigger *t = NULL;
    aps_error err;

    memset(&err, 0, sizeof err);
    if (aps_trigger_create(s, "UTC", now, &t, &err) != 0)
        fail_msg("trigger rejected: %s", err.msg);
    return t;
}

static void
format(aps_time t, char *buf, size_t len)
{
    if (t == APS_TIME_NONE)
        snprintf(buf, len, "none");
    else
        aps_time_format(t, NULL, buf, len);
}

void
tu_check_sequence(aps_trigger *t, aps_time now, const char *const *want, int n, int ends)
{
    aps_time prev = APS_TIME_NONE, got;
    char buf[64];
    int i;

    for (i = 0; i < n + ends; i++) {
        assert_int_equal(aps_trigger_next(t, prev, i ? prev : now, &got), 0);
        if (i == n) {
            if (got != APS_TIME_NONE) {
                format(got, buf, sizeof buf);
                fail_msg("fire %d: expected none, got %s", i + 1, buf);
            }
            break;
        }
        if (got != tu_time(want[i])) {
            format(got, buf, sizeof buf);
            fail_msg("fire %d: expected %s, got %s", i + 1, want[i], buf);
        }
        prev = got;
    }
}
