/**
 * @file tz.h
 * @brief Time zones (internal): IANA zones read from TZif files.
 *
 * A zone is loaded once from `$TZDIR/<name>` (default /usr/share/zoneinfo),
 * parsed into a table of transitions and kept for the lifetime of the
 * process. Loaded zones are immutable, so every function taking a
 * `const aps_tz *` is thread-safe without locks.
 *
 * Supported: TZif versions 1, 2, 3 and 4 (the 64-bit block is used when
 * present), and the POSIX TZ string in the footer with the version 3
 * extensions (rule times from -167 to 167 hours, DST all year). The footer
 * governs instants after the last transition of the file; its transitions
 * up to year 2200 are precomputed at load time, later ones are computed on
 * demand. Leap-second records ("right/" zones) are read and ignored: apsd
 * counts POSIX seconds.
 *
 * Resolution is one microsecond everywhere; instants before 1970 work.
 */
#ifndef APSD_TZ_H
#define APSD_TZ_H

#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"

/** A loaded time zone. Opaque and immutable once loaded. */
typedef struct aps_tz aps_tz;

/**
 * A civil (wall-clock) date and time. Fields are plain ints so that callers
 * may step them freely; aps__tz_from_local() normalizes values out of range.
 */
typedef struct aps_civil {
    int year;   /**< e.g. 2024 (astronomical: 0 = 1 BC) */
    int month;  /**< 1-12 */
    int day;    /**< 1-31 */
    int hour;   /**< 0-23 */
    int minute; /**< 0-59 */
    int second; /**< 0-59 */
    int usec;   /**< 0-999999 */
} aps_civil;

/** What a local civil time is in a zone (aps__tz_from_local()'s `kind`). */
enum {
    APS_LOCAL_UNIQUE = 0, /**< shown by exactly one instant */
    APS_LOCAL_GAP = 1,    /**< skipped by a forward shift: shown by none */
    APS_LOCAL_FOLD = 2,   /**< repeated by a backward shift: shown by two */
};

/** Longest zone name accepted by aps__tz_get(). */
#define APS_TZ_NAME_MAX 255

/**
 * Loads a zone by IANA name, or returns it from the process-wide cache.
 *
 * The first call for a name reads `$TZDIR/<name>` (TZDIR unset or empty:
 * /usr/share/zoneinfo); later calls return the cached zone, even if TZDIR
 * changed meanwhile. Failures are not cached. "UTC" is built in and works
 * without any tzdata installed.
 *
 * Names are checked before any file is opened: they must be non-empty, at
 * most APS_TZ_NAME_MAX bytes of `A-Z a-z 0-9 / _ - + .`, must not start
 * with '/', and no path component may be empty or start with '.' (so no
 * "..").
 *
 * @param[in]  name  the zone name, e.g. "America/New_York"; borrowed.
 * @param[out] out   the zone; shared, valid for the process lifetime, never
 *                   to be freed.
 * @param[out] err   optional; receives the message on failure.
 * @return 0;
 *         APS_ENOENT for a rejected name, a missing file or a file that is
 *         not TZif (`timezone: unknown time zone "Foo/Bar"`);
 *         APS_EINVAL for a TZif file that is corrupt (the message says why);
 *         APS_EIO if the file cannot be read; APS_ENOMEM.
 * @note Thread-safe: the cache is guarded by a mutex (held while loading).
 */
int aps__tz_get(const char *name, const aps_tz **out, aps_error *err);

/**
 * The built-in UTC zone (the one aps__tz_get("UTC") returns).
 * @return a static zone, never NULL.
 */
const aps_tz *aps__tz_utc(void);

/**
 * The zone's name, as given to aps__tz_get() or aps__tz_parse().
 * @param[in] tz  the zone.
 * @return a string owned by the zone, valid as long as it is.
 */
const char *aps__tz_name(const aps_tz *tz);

/**
 * Converts a UTC instant to local civil time.
 *
 * O(log n) in the number of transitions (a binary search); instants past
 * year 2200 evaluate the footer rule directly.
 *
 * @param[in]  tz      the zone.
 * @param[in]  t       the instant, any int64 value.
 * @param[out] out     the local civil time (usec always 0-999999).
 * @param[out] utcoff  optional; the UTC offset in force at `t`, in seconds
 *                     east of Greenwich.
 */
void aps__tz_to_local(const aps_tz *tz, aps_time t, aps_civil *out, int32_t *utcoff);

/**
 * The local time type in force at an instant: offset, DST flag and
 * abbreviation.
 * @param[in]  tz      the zone.
 * @param[in]  t       the instant.
 * @param[out] utcoff  optional; UTC offset in seconds east of Greenwich.
 * @param[out] isdst   optional; the TZif isdst flag (0 or 1).
 * @param[out] abbr    optional; the abbreviation, e.g. "EST", owned by the
 *                     zone.
 */
void aps__tz_lookup(const aps_tz *tz, aps_time t, int32_t *utcoff, int *isdst,
                    const char **abbr);

/**
 * The first transition of the zone strictly after an instant: the next
 * instant at which the local time type may change (a transition of a TZif
 * file may change only the abbreviation or the isdst flag). Lets a caller
 * step over periods of constant offset, or walk the transitions.
 * @param[in]  tz    the zone.
 * @param[in]  t     the instant.
 * @param[out] next  the transition, or APS_TIME_NONE if the offset never
 *                   changes again (or only beyond aps_time's range).
 */
void aps__tz_next_transition(const aps_tz *tz, aps_time t, aps_time *next);

/**
 * Converts a local civil time to a UTC instant, resolving gaps and folds as
 * pytz's `localize(dt, is_dst=False)` does (APScheduler 3's behaviour):
 * - fold (two instants show `c`): the one whose local time type has
 *   isdst == 0; if neither or both do, the later instant;
 * - gap (no instant shows `c`): `c` is read with the UTC offset in force
 *   just before the gap, so 02:30 on a spring-forward night in New York is
 *   02:30-05:00 = 07:30Z (which shows as 03:30 EDT).
 *
 * Fields out of range are normalized first, as mktime() does (month 13 is
 * January of the next year, day 0 the last day of the previous month, hour
 * 24 midnight of the next day, and so on).
 *
 * @param[in]  tz    the zone.
 * @param[in]  c     the local time.
 * @param[out] out   the instant.
 * @param[out] kind  optional; APS_LOCAL_UNIQUE, APS_LOCAL_GAP or
 *                   APS_LOCAL_FOLD.
 * @return 0, or APS_ERANGE if the (normalized) time lies outside the range
 *         of aps_time (about years -290000 to 290000); then `*out` is
 *         unchanged.
 */
int aps__tz_from_local(const aps_tz *tz, const aps_civil *c, aps_time *out, int *kind);

/**
 * All instants that show local civil time `c` in the zone: none (a gap),
 * one, or two (a fold), in ascending order, with the isdst flag of the
 * local time type of each. `c` is normalized as in aps__tz_from_local().
 * @param[in]  tz     the zone.
 * @param[in]  c      the local time.
 * @param[out] cand   the instants; only the first `*n` are set.
 * @param[out] isdst  their isdst flags; only the first `*n` are set.
 * @param[out] n      0, 1 or 2.
 * @return 0, or APS_ERANGE as aps__tz_from_local() (`*n` is then 0).
 */
int aps__tz_local_candidates(const aps_tz *tz, const aps_civil *c, aps_time cand[2],
                             int isdst[2], int *n);

/**
 * Parses TZif data from memory into a new zone (used by aps__tz_get(), the
 * fuzzer and tests). Every count and index is checked against `len` and
 * against limits (at most 2000 transitions, 256 types, 512 abbreviation
 * bytes, 128 leap records; offsets within -25h..+26h), so any input is safe.
 *
 * @param[in]  name  the zone name to record; borrowed (copied).
 * @param[in]  data  the file's bytes; borrowed.
 * @param[in]  len   their length.
 * @param[out] out   the zone, owned by the caller: free it with
 *                   aps__tz_free().
 * @param[out] err   optional; receives the message on failure
 *                   (`timezone: "X": invalid TZif data: ...`).
 * @return 0; APS_EINVAL for data that is not valid TZif (including a bad
 *         footer TZ string); APS_ENOMEM.
 */
int aps__tz_parse(const char *name, const unsigned char *data, size_t len, aps_tz **out,
                  aps_error *err);

/**
 * Frees a zone returned by aps__tz_parse(). Never call it on a zone from
 * aps__tz_get() or aps__tz_utc() (those are shared). NULL is allowed.
 * @param[in] tz  the zone.
 */
void aps__tz_free(aps_tz *tz);

/**
 * Converts a civil time to seconds and microseconds of "local epoch time"
 * (the civil time read as if it were UTC), normalizing fields out of range.
 * @param[in]  c     the civil time.
 * @param[out] secs  seconds since 1970-01-01T00:00:00 of the same wall clock.
 * @param[out] usec  the microseconds, 0-999999.
 * @return 0, or APS_ERANGE beyond aps_time's range.
 */
int aps__civil_to_secs(const aps_civil *c, int64_t *secs, int32_t *usec);

/**
 * The inverse of aps__civil_to_secs().
 * @param[in]  secs  local epoch seconds, within aps_time's range.
 * @param[in]  usec  microseconds, 0-999999.
 * @param[out] out   the civil time.
 */
void aps__civil_from_secs(int64_t secs, int32_t usec, aps_civil *out);

#endif /* APSD_TZ_H */
