/*
 * The public time functions of engine.h (RFC 3339 parsing and formatting,
 * the clock, zone checks) and aps_strerror(); the engine's monotonic clock
 * (aps__mono_us, exec.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerrordesc_np, clock_gettime with -std=c11 */
#endif

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "apsd/engine.h"
#include "civil.h"
#include "exec.h"
#include "tz.h"

#define USEC_PER_SEC INT64_C(1000000)

/* ---- aps_strerror ----------------------------------------------------- */

static const struct {
    int code;
    const char *msg;
} error_table[] = {
    {APS_OK, "success"},
    {APS_ENOENT, "not found"},
    {APS_EIO, "input/output error"},
    {APS_ENOMEM, "out of memory"},
    {APS_EBUSY, "resource busy (in use by another process)"},
    {APS_EEXIST, "already exists"},
    {APS_EINVAL, "invalid argument"},
    {APS_ENOSPC, "no space left on device"},
    {APS_ERANGE, "value out of range"},
    {APS_ECORRUPT, "stored record is corrupt"},
    {APS_ESTATE, "operation not allowed in the current state"},
    {APS_ELIMIT, "a configured limit was reached"},
};

const char *aps_strerror(int code)
{
    size_t i;
    int e;
    const char *s;

    for (i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++) {
        if (error_table[i].code == code)
            return error_table[i].msg;
    }
    /* errno values pass through our API negated (libuv style); accept both
     * signs. strerrordesc_np, unlike strerror, never writes a shared buffer. */
    e = code < 0 ? (code == INT_MIN ? 0 : -code) : code;
    if (e > 0 && e < 4096 && (s = strerrordesc_np(e)) != NULL)
        return s;
    return "unknown error";
}

/* ---- the clock and zones -------------------------------------------------- */

aps_time aps_time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (aps_time)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

int64_t
aps__mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

int aps_timezone_check(const char *name, aps_error *err)
{
    const aps_tz *tz;

    return aps__tz_get(name, &tz, err);
}

/* ---- RFC 3339 ----------------------------------------------------------- */

static int parse_fail(aps_error *err, const char *text, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int parse_fail(aps_error *err, const char *text, const char *fmt, ...)
{
    char why[160];
    va_list ap;

    if (err) {
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        err->code = APS_EINVAL;
        snprintf(err->msg, sizeof(err->msg), "invalid RFC 3339 time \"%.64s%s\": %s", text,
                 strlen(text) > 64 ? "..." : "", why);
    }
    return APS_EINVAL;
}

/* Exactly n digits. */
static int digits(const char **pp, int n, int *out)
{
    const char *p = *pp;
    int v = 0, i;

    for (i = 0; i < n; i++, p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    *pp = p;
    *out = v;
    return 0;
}

/* "'x'" for a character, or "the end" for NUL, for messages. */
static const char *show_char(char c, char buf[8])
{
    if (c == '\0')
        return "the end";
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "0x%02x", (unsigned char)c);
    return buf;
}

int aps_time_parse(const char *text, aps_time *out, aps_error *err)
{
    const char *p = text;
    int year, mon, day, hour, min, sec, usec = 0, ndig = 0, oh, om, off = 0;
    char cb[8];
    int64_t secs;

    if (!text)
        return parse_fail(err, "", "no time given");
    /* Date: YYYY-MM-DD */
    if (digits(&p, 4, &year))
        return parse_fail(err, text, "expected a 4-digit year (YYYY-MM-DDTHH:MM:SSZ)");
    if (*p++ != '-')
        return parse_fail(err, text, "expected '-' after the year");
    if (digits(&p, 2, &mon))
        return parse_fail(err, text, "expected a 2-digit month");
    if (mon < 1 || mon > 12)
        return parse_fail(err, text, "month %02d is out of range 01-12", mon);
    if (*p++ != '-')
        return parse_fail(err, text, "expected '-' after the month");
    if (digits(&p, 2, &day))
        return parse_fail(err, text, "expected a 2-digit day");
    if (day < 1 || day > aps__days_in_month(year, mon))
        return parse_fail(err, text, "day %02d is out of range 01-%02d for %04d-%02d", day,
                          aps__days_in_month(year, mon), year, mon);
    /* 'T' (RFC 3339 allows lowercase, and a space "for readability"). */
    if (*p != 'T' && *p != 't' && *p != ' ')
        return parse_fail(err, text, "expected 'T' and a time after the date, found %s",
                          show_char(*p, cb));
    p++;
    /* Time: HH:MM:SS[.fraction] */
    if (digits(&p, 2, &hour))
        return parse_fail(err, text, "expected a 2-digit hour");
    if (hour > 23)
        return parse_fail(err, text, "hour %02d is out of range 00-23", hour);
    if (*p++ != ':')
        return parse_fail(err, text, "expected ':' after the hour");
    if (digits(&p, 2, &min))
        return parse_fail(err, text, "expected 2-digit minutes");
    if (min > 59)
        return parse_fail(err, text, "minute %02d is out of range 00-59", min);
    if (*p++ != ':')
        return parse_fail(err, text, "expected ':' and seconds after the minutes");
    if (digits(&p, 2, &sec))
        return parse_fail(err, text, "expected 2-digit seconds");
    if (sec > 59)
        return parse_fail(err, text,
                          "second %02d is out of range 00-59 (leap seconds are not supported)",
                          sec);
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, ndig++) {
            if (ndig < 6) /* truncate to microseconds */
                usec = usec * 10 + (*p - '0');
        }
        if (ndig == 0)
            return parse_fail(err, text, "expected digits after '.'");
        if (ndig > 9)
            return parse_fail(err, text, "%d fractional digits, at most 9 are allowed", ndig);
        for (; ndig < 6; ndig++)
            usec *= 10;
    }
    /* Offset: Z or +HH:MM / -HH:MM */
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om))
            return parse_fail(err, text, "expected the UTC offset as +HH:MM or -HH:MM");
        if (oh > 23 || om > 59)
            return parse_fail(err, text, "UTC offset %c%02d:%02d is out of range",
                              sign < 0 ? '-' : '+', oh, om);
        off = sign * (oh * 3600 + om * 60);
    } else if (*p == '\0') {
        return parse_fail(err, text, "missing UTC offset (add 'Z' or +HH:MM)");
    } else {
        return parse_fail(err, text, "expected 'Z' or a UTC offset, found %s",
                          show_char(*p, cb));
    }
    if (*p != '\0')
        return parse_fail(err, text, "unexpected %s after the UTC offset", show_char(*p, cb));

    secs = aps__days_from_civil(year, mon, day) * APS_SECS_PER_DAY + hour * 3600 + min * 60 +
           sec - off;
    *out = secs * USEC_PER_SEC + usec;
    return 0;
}

int aps_time_format(aps_time t, const char *tz, char *buf, size_t len)
{
    const aps_tz *zone = aps__tz_utc();
    int utc = !tz || strcmp(tz, "UTC") == 0, rc, n;
    int32_t off = 0, mins;
    int64_t us, s;
    aps_civil c;
    char zbuf[16], ybuf[16];

    if (!utc && (rc = aps__tz_get(tz, &zone, NULL)) != 0)
        return rc;
    aps__tz_lookup(zone, t, &off, NULL, NULL);
    /* RFC 3339 offsets have no seconds (local mean time has them, e.g.
     * -04:56:02 in New York before 1883): show the offset truncated to the
     * minute and the wall clock that goes with it, so the instant is exact. */
    mins = off / 60;
    s = aps__floor_div(t, USEC_PER_SEC, &us);
    aps__civil_from_secs(s + mins * 60, (int32_t)us, &c);
    if (utc)
        snprintf(zbuf, sizeof(zbuf), "Z");
    else
        snprintf(zbuf, sizeof(zbuf), "%c%02d:%02d", mins < 0 ? '-' : '+',
                 (mins < 0 ? -mins : mins) / 60, (mins < 0 ? -mins : mins) % 60);
    /* Years outside 0000-9999 (which RFC 3339 cannot write) get ISO 8601's
     * expanded form with a sign, rather than a failure. */
    if (c.year >= 0 && c.year <= 9999)
        snprintf(ybuf, sizeof(ybuf), "%04d", c.year);
    else
        snprintf(ybuf, sizeof(ybuf), "%+05d", c.year);
    if (c.usec)
        n = snprintf(buf, len, "%s-%02d-%02dT%02d:%02d:%02d.%06d%s", ybuf, c.month, c.day,
                     c.hour, c.minute, c.second, c.usec, zbuf);
    else
        n = snprintf(buf, len, "%s-%02d-%02dT%02d:%02d:%02d%s", ybuf, c.month, c.day, c.hour,
                     c.minute, c.second, zbuf);
    return n < 0 || (size_t)n >= len ? APS_ERANGE : 0;
}
