/**
 * @file civil.h
 * @brief Proleptic Gregorian calendar arithmetic (internal, header-only).
 *
 * Days are counted from 1970-01-01 (day 0), negative before it. The
 * conversions are Howard Hinnant's branch-light algorithms
 * (http://howardhinnant.github.io/date_algorithms.html); they are exact for
 * every year representable in an int64 day count, so callers need no
 * special case for pre-1970 or far-future dates.
 *
 * Everything here is a pure function: thread-safe, no allocation.
 */
#ifndef APSD_CIVIL_H
#define APSD_CIVIL_H

#include <stdint.h>

/** Seconds in a civil day (no leap seconds, as POSIX time). */
#define APS_SECS_PER_DAY 86400

/**
 * Tells whether `y` is a leap year in the proleptic Gregorian calendar.
 * @param[in] y  the year (astronomical numbering: 0 = 1 BC).
 * @return 1 for a leap year, else 0.
 */
static inline int aps__is_leap(int64_t y)
{
    return (y % 4 == 0) && (y % 100 != 0 || y % 400 == 0);
}

/**
 * The number of days of month `m` in year `y`.
 * @param[in] y  the year.
 * @param[in] m  the month, 1-12 (other values give 0).
 * @return 28-31, or 0 for an invalid month.
 */
static inline int aps__days_in_month(int64_t y, int m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30,
                                          31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12)
        return 0;
    return dim[m - 1] + (m == 2 && aps__is_leap(y));
}

/**
 * Days since 1970-01-01 of the civil date y-m-d.
 * @param[in] y  the year.
 * @param[in] m  the month, 1-12.
 * @param[in] d  the day of the month, 1-31 (not checked; day 0 or 32 give
 *               the adjacent days, which callers may use to normalize).
 * @return the day number (negative before 1970).
 */
static inline int64_t aps__days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    /* Floor division by 400 so that the era of negative years is right. */
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;                                   /* [0, 399] */
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/**
 * The civil date of day number `z` (days since 1970-01-01).
 * @param[in]  z  the day number.
 * @param[out] y  the year.
 * @param[out] m  the month, 1-12.
 * @param[out] d  the day of the month, 1-31.
 */
static inline void aps__civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;                                       /* [0, 146096] */
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                /* [0, 365] */
    mp = (5 * doy + 2) / 153;                                     /* [0, 11] */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/**
 * The weekday of day number `z`, with 0 = Monday ... 6 = Sunday
 * (APScheduler's and ISO 8601's order).
 * @param[in] z  days since 1970-01-01 (a Thursday).
 * @return 0-6.
 */
static inline int aps__weekday(int64_t z)
{
    int64_t w = (z + 3) % 7; /* 1970-01-01 is a Thursday = 3 */
    return (int)(w < 0 ? w + 7 : w);
}

/**
 * The day of the year of y-m-d, 1 = January 1st.
 * @param[in] y  the year.
 * @param[in] m  the month, 1-12.
 * @param[in] d  the day, 1-31.
 * @return 1-366.
 */
static inline int aps__day_of_year(int64_t y, int m, int d)
{
    return (int)(aps__days_from_civil(y, m, d) - aps__days_from_civil(y, 1, 1)) + 1;
}

/**
 * The ISO 8601 week date (week-numbering year and week) of y-m-d: weeks
 * start on Monday and week 1 is the one holding the year's first Thursday,
 * so 2021-01-03 is in week 53 of 2020 and 2024-12-30 in week 1 of 2025.
 * @param[in]  y, m, d   the civil date.
 * @param[out] iso_year  the week-numbering year (may be y - 1 or y + 1).
 * @param[out] week      the week, 1-53.
 */
static inline void aps__iso_week(int64_t y, int m, int d, int64_t *iso_year, int *week)
{
    int64_t z = aps__days_from_civil(y, m, d);
    /* The Thursday of the same week decides the year. */
    int64_t thu = z - aps__weekday(z) + 3;
    int64_t ty;
    int tm, td;

    aps__civil_from_days(thu, &ty, &tm, &td);
    *iso_year = ty;
    *week = (int)((thu - aps__days_from_civil(ty, 1, 1)) / 7) + 1;
}

/**
 * Floor division of `a` by a positive `b`, with the remainder in [0, b).
 * Safe for every int64 `a` (no intermediate multiplication).
 * @param[in]  a    the dividend.
 * @param[in]  b    the divisor, > 0.
 * @param[out] rem  the remainder, may be NULL.
 * @return floor(a / b).
 */
static inline int64_t aps__floor_div(int64_t a, int64_t b, int64_t *rem)
{
    int64_t q = a / b, r = a % b;

    if (r < 0) {
        q -= 1;
        r += b;
    }
    if (rem)
        *rem = r;
    return q;
}

#endif /* APSD_CIVIL_H */
