/**
 * @file cron.h
 * @brief APScheduler 3.9.1's CronTrigger fields and search (internal).
 *
 * A cron expression is compiled once into per-field bitsets (plus the
 * expression list, kept for the year field, for `day` positions such as
 * `last fri`, and for describing the trigger). The search replays
 * APScheduler's field-increment algorithm step by step, on wall-clock fields
 * paired with a UTC offset exactly as pytz datetimes carry them, so that
 * every carry, rollover and DST quirk comes out the same; only steps whose
 * outcome is certain (a field that accepts every value) are skipped.
 *
 * Used by trigger.c; exposed for the unit tests and the fuzzer.
 */
#ifndef APSD_CRON_H
#define APSD_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"
#include "tz.h"

/** Field indexes, in APScheduler's FIELD_NAMES order (most significant first). */
enum {
    APS_CRON_YEAR = 0,
    APS_CRON_MONTH,
    APS_CRON_DAY,
    APS_CRON_WEEK,
    APS_CRON_DAY_OF_WEEK,
    APS_CRON_HOUR,
    APS_CRON_MINUTE,
    APS_CRON_SECOND,
    APS_CRON_FIELDS /**< the number of fields (8) */
};

/** Longest field (or crontab) string accepted, in bytes. */
#define APS_CRON_EXPR_MAX 4096

/**
 * Search steps after which a search that has not finished checks whether
 * any date can still match at all (a 400-year calendar scan, done once).
 */
#define APS_CRON_FEASIBILITY_STEPS 20000

/**
 * Hard bound on the steps of one search. A search that can succeed needs at
 * most about 1,200 steps per year searched (day-by-day stepping for `week`
 * and `day_of_week`), so this is only reached by a zone whose transitions
 * make APScheduler's algorithm cycle.
 */
#define APS_CRON_MAX_STEPS 20000000L

/** A compiled cron expression. */
typedef struct aps_cron aps_cron;

/**
 * The name of field `f` (`"day_of_week"`), or NULL for an index out of range.
 */
const char *aps__cron_field_name(int f);

/**
 * Validates and compiles a cron expression with APScheduler 3.9.1's rules.
 *
 * Either `fields` or `crontab` gives the expression:
 * - `fields[APS_CRON_YEAR..APS_CRON_SECOND]`: the keyword arguments of
 *   CronTrigger (NULL = not given). Fields less significant than the least
 *   significant given field default to their minimum, the others (and
 *   `week`, `day_of_week`) to `*`; with no field given all are `*`.
 * - `crontab`: five whitespace-separated fields `minute hour day month
 *   day_of_week`, as APScheduler's from_crontab(), except that day-of-week
 *   numbers are standard crontab ones (0 and 7 = Sunday, 1-5 = Mon-Fri).
 *   `fields` must then be NULL or all NULL.
 *
 * @param[in]  fields   may be NULL; the strings are borrowed.
 * @param[in]  crontab  may be NULL; borrowed.
 * @param[out] out      the compiled expression; free with aps__cron_free().
 * @param[out] err      optional; the message names the field:
 *                      `hour: 25 is out of range 0-23`.
 * @return 0; APS_EINVAL for an invalid expression; APS_ENOMEM.
 */
int aps__cron_compile(const char *const fields[APS_CRON_FIELDS], const char *crontab,
                      aps_cron **out, aps_error *err);

/** Frees a compiled expression. NULL is allowed. */
void aps__cron_free(aps_cron *c);

/**
 * The first time at or after `start` matched by the expression in zone
 * `tz`, as APScheduler's CronTrigger.get_next_fire_time() computes it from
 * its `start_date` local variable (so `start` is already
 * `max(now, start_date)` or `previous + 1 µs`); `end` (APS_TIME_NONE =
 * none) stops the search as APScheduler's end_date check does. Does not
 * allocate.
 *
 * @param[in,out] c     the expression; a lazily computed cache inside may be
 *                      filled, so one thread at a time.
 * @param[in]     tz    the zone of the wall-clock fields.
 * @param[in]     start the earliest instant.
 * @param[in]     end   the latest instant, or APS_TIME_NONE.
 * @param[out]    out   the fire time, or APS_TIME_NONE if there is none
 *                      (nothing matches up to year 9999, or past `end`).
 * @return 0, or APS_ELIMIT if the search exceeded APS_CRON_MAX_STEPS.
 */
int aps__cron_next(aps_cron *c, const aps_tz *tz, aps_time start, aps_time end, aps_time *out);

/**
 * Writes the non-default fields as APScheduler's str() lists them inside
 * `cron[...]`: `month='6-8', day='last fri', hour='5'`.
 * @return 0, or APS_ERANGE if `len` is too small (output truncated,
 *         NUL-terminated when len > 0).
 */
int aps__cron_describe(const aps_cron *c, char *buf, size_t len);

/** A bounded output buffer for the str()-style descriptions. */
typedef struct aps__sbuf {
    char *buf;
    size_t len, pos;
    int overflow; /**< set when the output did not fit */
} aps__sbuf;

/** Appends formatted text to `b`, truncating (and flagging) when full. */
void aps__sb_printf(aps__sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* APSD_CRON_H */
