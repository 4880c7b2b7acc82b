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
            aps_time start_date, end_date; /**< start NONE = creation time */
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

#ifdef __cplusplus
}
#endif

#endif /* APSD_ENGINE_H */
