/*
 * apsc: times (RFC 3339), durations and base64, without the C library's
 * time zone state (no mktime/timegm: the civil-date arithmetic is done
 * here, so results never depend on TZ).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int
days_in_month(int64_t y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

/* Reads exactly n digits. */
static int
digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int
apsc_parse_time(const char *s, int64_t *seconds, int32_t *nanos)
{
    int y, mo, d, h, mi, se, ns = 0, off = 0;
    const char *p = s;

    if (s == NULL || seconds == NULL || nanos == NULL)
        return APSC_EINVAL;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return APSC_EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return APSC_EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &se))
        return APSC_EINVAL;
    if (*p == '.') {
        int n = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (n < 9)
                ns = ns * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return APSC_EINVAL;
        for (int i = n; i < 9; i++)
            ns *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return APSC_EINVAL;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return APSC_EINVAL; /* no offset: the caller decides the zone */
    }
    if (*p != '\0')
        return APSC_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59)
        return APSC_EINVAL;
    *seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    *nanos = ns;
    return APSC_OK;
}

static void
frac(char *buf, size_t cap, int32_t nanos)
{
    if (nanos == 0)
        buf[0] = '\0';
    else if (nanos % 1000000 == 0)
        snprintf(buf, cap, ".%03d", nanos / 1000000);
    else if (nanos % 1000 == 0)
        snprintf(buf, cap, ".%06d", nanos / 1000);
    else
        snprintf(buf, cap, ".%09d", nanos);
}

void
apsc_format_time(int64_t seconds, int32_t nanos, char *buf)
{
    int64_t days = seconds / 86400, rem = seconds % 86400, y;
    int m, d;
    char f[16];

    if (rem < 0) {
        rem += 86400;
        days--;
    }
    if (nanos < 0 || nanos > 999999999)
        nanos = 0;
    civil_from_days(days, &y, &m, &d);
    frac(f, sizeof f, nanos);
    snprintf(buf, APSC_TIME_BUFSZ, "%04lld-%02d-%02dT%02d:%02d:%02d%sZ", (long long)y, m, d,
             (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), f);
}

/* Durations are summed in nanoseconds; __int128 keeps 10000-year spans
 * exact. */
typedef __int128 i128;

static int
duration_parse(const char *s, int allow_negative, int64_t *seconds, int32_t *nanos)
{
    static const struct {
        const char *name;
        int64_t ns;
    } units[] = {
        /* Longest names first: "ms" before "m" and "s". */
        {"ms", 1000000},          {"us", 1000},
        {"\xc2\xb5s", 1000},      {"ns", 1},
        {"w", 604800000000000LL}, {"d", 86400000000000LL},
        {"h", 3600000000000LL},   {"m", 60000000000LL},
        {"s", 1000000000LL},
    };
    const char *p = s;
    i128 total = 0;
    int sign = 1, parts = 0;

    if (s == NULL || seconds == NULL || nanos == NULL)
        return APSC_EINVAL;
    if (*p == '-' && allow_negative) {
        sign = -1;
        p++;
    }
    while (*p != '\0') {
        i128 ip = 0, fp = 0, fscale = 1;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (ip > (i128)1e15)
                return APSC_EINVAL;
            ip = ip * 10 + (*p++ - '0');
            nd++;
        }
        if (*p == '.') {
            p++;
            while (*p >= '0' && *p <= '9') {
                if (fscale < (i128)1e18) {
                    fp = fp * 10 + (*p - '0');
                    fscale *= 10;
                }
                p++;
                nd++;
            }
        }
        if (nd == 0)
            return APSC_EINVAL;
        size_t u;
        for (u = 0; u < sizeof units / sizeof units[0]; u++) {
            size_t n = strlen(units[u].name);
            if (strncmp(p, units[u].name, n) == 0) {
                p += n;
                break;
            }
        }
        if (u == sizeof units / sizeof units[0])
            return APSC_EINVAL; /* a number without a unit */
        total += ip * units[u].ns + fp * units[u].ns / fscale;
        if (total > (i128)315576000000LL * 1000000000LL) /* proto's 10000 years */
            return APSC_EINVAL;
        parts++;
    }
    if (parts == 0)
        return APSC_EINVAL;
    total *= sign;
    *seconds = (int64_t)(total / 1000000000);
    *nanos = (int32_t)(total % 1000000000);
    return APSC_OK;
}

int
apsc_parse_duration(const char *s, int64_t *seconds, int32_t *nanos)
{
    return duration_parse(s, 0, seconds, nanos);
}

/* For proto JSON input: `-1.5s` is allowed there. */
int apsc__parse_json_duration(const char *s, int64_t *seconds, int32_t *nanos);
int
apsc__parse_json_duration(const char *s, int64_t *seconds, int32_t *nanos)
{
    return duration_parse(s, 1, seconds, nanos);
}

void
apsc_format_duration(int64_t seconds, int32_t nanos, char *buf)
{
    char f[16];
    int neg = seconds < 0 || nanos < 0;
    unsigned long long s = (unsigned long long)(seconds < 0 ? -seconds : seconds);
    int32_t n = nanos < 0 ? -nanos : nanos;

    frac(f, sizeof f, n);
    snprintf(buf, APSC_DURATION_BUFSZ, "%s%llu%ss", neg ? "-" : "", s, f);
}

void
apsc_format_duration_short(int64_t seconds, int32_t nanos, char *buf)
{
    i128 t = (i128)seconds * 1000000000 + nanos;
    size_t n = 0;
    char *p = buf;

    if (t < 0) {
        *p++ = '-';
        t = -t;
    }
    size_t cap = APSC_DURATION_BUFSZ - (size_t)(p - buf);
    if (t == 0) {
        snprintf(p, cap, "0s");
        return;
    }
    if (t < 1000000000) {
        /* Sub-second: in ms with up to 3 decimals (`250ms`, `1.183ms`), or
         * in us / ns when shorter than a millisecond. */
        int v = (int)t;
        if (v >= 1000000) {
            if (v % 1000000 == 0)
                snprintf(p, cap, "%dms", v / 1000000);
            else
                snprintf(p, cap, "%d.%03dms", v / 1000000, v / 1000 % 1000);
        } else if (v >= 1000) {
            snprintf(p, cap, "%dus", v / 1000);
        } else {
            snprintf(p, cap, "%dns", v);
        }
        return;
    }
    long long secs = (long long)(t / 1000000000);
    int ns = (int)(t % 1000000000);
    long long d = secs / 86400, h = secs / 3600 % 24, m = secs / 60 % 60, s = secs % 60;
    if (d)
        n += (size_t)snprintf(p + n, cap - n, "%lldd", d);
    if (h)
        n += (size_t)snprintf(p + n, cap - n, "%lldh", h);
    if (m)
        n += (size_t)snprintf(p + n, cap - n, "%lldm", m);
    if (s || ns) {
        char f[16];
        frac(f, sizeof f, ns);
        snprintf(p + n, cap - n, "%lld%ss", s, f);
    }
}

/* ---- base64 ------------------------------------------------------------------ */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
apsc__b64_encode(const uint8_t *data, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int
b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int
apsc__b64_decode(const char *s, uint8_t **out, size_t *len)
{
    size_t n = strlen(s), o = 0;
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    uint32_t acc = 0;
    int bits = 0;

    if (buf == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            /* Padding: only at the end. */
            for (size_t j = i; j < n; j++)
                if (s[j] != '=')
                    goto bad;
            break;
        }
        int v = b64_val(s[i]);
        if (v < 0)
            goto bad;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = buf;
    *len = o;
    return 0;
bad:
    free(buf);
    return -1;
}
