/*
 * Time zones: TZif parsing (RFC 8536), the POSIX TZ footer rule, UTC <->
 * local conversion with pytz's gap/fold resolution, and the zone cache.
 *
 * Representation. A zone is a table of transitions `at[i]` (UTC seconds,
 * strictly ascending) with the offset `off[i]` and type `ti[i]` in force
 * from `at[i]` on; `before` is the type in force before `at[0]`. When the
 * footer has a DST rule, its transitions from the last one of the file up
 * to year 2200 are appended to the table at load time, so the common case
 * is one table lookup: a bucket index for 1900 to 2200 (O(1)), a binary
 * search elsewhere. Instants past `rule_tab_end` evaluate the rule directly
 * (a handful of day computations, ~5x slower).
 *
 * Local -> UTC. Transition i maps to the wall-clock span [lo[i], hi[i])
 * between the last local time shown by the old offset and the first shown
 * by the new one; it is a gap if the offset grows and a fold if it
 * shrinks. For real data these spans are ordered and disjoint ("simple"),
 * so one lookup in lo[] finds the answer. Data where transitions lie
 * closer together than their offset changes (only seen in fuzzed files)
 * falls back to scanning the periods that can contain the answer, which is
 * exact for any table.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_CLOEXEC, strnlen with -std=c11 */
#endif

#include "tz.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civil.h"

/* Limits. tzcode's own are TZ_MAX_TIMES 2000, TZ_MAX_TYPES 256 (indices
 * are one byte), TZ_MAX_LEAPS 50; the largest real file has about 300
 * transitions and 4 KiB. */
#define TZ_MAX_TIMES 2000
#define TZ_MAX_TYPES 256
#define TZ_MAX_CHARS 512
#define TZ_MAX_LEAPS 128
#define TZ_MAX_FILE (256 * 1024)
#define TZ_MAX_FOOTER 256
#define TZ_MAX_ABBR 32
/* RFC 8536: utoff SHOULD be in -89999..93599 (-24:59:59..25:59:59). The
 * bound matters: it limits the window of instants a local time can map to. */
#define TZ_MIN_UTOFF (-89999)
#define TZ_MAX_UTOFF 93599
/* Transition times beyond +-2^60 s (36 billion years) are rejected so that
 * adding offsets and day arithmetic can never overflow. Fat files use
 * -2^59 for "the big bang". */
#define TZ_MAX_ABS_TIME (INT64_C(1) << 60)
/* The footer's transitions are precomputed up to the end of this year. */
#define TZ_EXT_LAST_YEAR 2200
/* Local epoch seconds accepted by from_local: candidates L - off then fit
 * in aps_time after multiplying by 10^6. */
#define TZ_LOCAL_MAX (INT64_C(9223372036853) - TZ_MAX_UTOFF - 1)

#define USEC_PER_SEC INT64_C(1000000)

enum { RULE_NONE = 0, RULE_AFTER = 1, RULE_ALL = 2 };

/** A local time type. */
typedef struct tz_type {
    int32_t utoff;  /* seconds east of UTC */
    uint8_t isdst;  /* TZif flag, 0 or 1 */
    uint16_t abbr;  /* index into abbrs */
} tz_type;

/** A date of a POSIX TZ rule: Jn, n or Mm.w.d, and the local time of day. */
typedef struct rule_date {
    char kind;    /* 'J' (1-365, no Feb 29), 'D' (0-365), 'M' */
    int n;        /* J and D: the day */
    int m, w, d;  /* M: month 1-12, week 1-5 (5 = last), weekday 0 = Sunday */
    int32_t secs; /* time of day, -167h..167h (version 3) */
} rule_date;

/** The footer's rule. */
typedef struct tz_rule {
    int has_dst;
    int32_t std_off, dst_off;    /* utoff of standard and daylight time */
    uint16_t std_type, dst_type; /* their types in tz->types */
    rule_date start, end;        /* DST starts (in std time), ends (in DST) */
} tz_rule;

/*
 * A bucket index over an ascending array: idx[j] is the number of elements
 * below base + j * 2^TZ_BUCKET_SHIFT. A lookup takes the bucket's count and
 * steps over the few elements inside the bucket: O(1), against ~10
 * dependent loads for a binary search over a fat file. 2^24 s is 194 days,
 * so a real zone has at most two transitions per bucket. Covers 1900 to
 * the end of the table; other instants use the binary search.
 */
#define TZ_BUCKET_SHIFT 24
#define TZ_BUCKET_MAX 1024     /* 2^24 s * 1024 = 544 years */
#define TZ_BUCKET_MAX_FILL 8   /* else (only fuzzed data) no index */
#define TZ_BUCKET_BASE INT64_C(-2208988800) /* 1900-01-01T00:00:00Z */
typedef struct tz_index {
    int64_t base;
    size_t n;     /* buckets; 0 = no index */
    uint16_t *idx;
} tz_index;

/** One transition produced by the rule. */
typedef struct rule_ev {
    int64_t at;
    uint16_t type;
} rule_ev;

struct aps_tz {
    char *name;
    size_t n;         /* transitions in the table */
    int64_t *at;      /* [n] UTC seconds, strictly ascending */
    int32_t *off;     /* [n] utoff from at[i] on (copy of types[ti[i]].utoff) */
    uint16_t *ti;     /* [n] type from at[i] on */
    int64_t *lo, *hi; /* [n] wall-clock span of transition i (see top) */
    tz_type *types;
    size_t ntypes;
    char *abbrs; /* NUL-terminated strings */
    size_t nabbrs;
    uint16_t before; /* type before at[0] (all time if n == 0) */
    int simple;      /* lo/hi spans ordered and disjoint */
    tz_index at_ix, lo_ix; /* bucket indexes over at[] and lo[] */
    int rule_mode;   /* RULE_* */
    int64_t rule_from;    /* RULE_AFTER: last transition of the file */
    int64_t rule_tab_end; /* RULE_AFTER: the table is exact below this */
    tz_rule rule;
    aps_tz *next; /* cache list */
};

/* ---- errors -------------------------------------------------------- */

static int set_err(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(aps_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err) {
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- the built-in UTC zone ---------------------------------------------- */

static char utc_name[] = "UTC";
static char utc_abbrs[] = "UTC";
static tz_type utc_types[1] = {{0, 0, 0}};
static aps_tz utc_zone = {
    .name = utc_name,
    .types = utc_types,
    .ntypes = 1,
    .abbrs = utc_abbrs,
    .nabbrs = sizeof(utc_abbrs),
    .simple = 1,
};

const aps_tz *aps__tz_utc(void)
{
    return &utc_zone;
}

const char *aps__tz_name(const aps_tz *tz)
{
    return tz->name;
}

/* ---- the POSIX TZ rule -------------------------------------------------- */

/* The day number (days since 1970-01-01) of a rule date in year y. */
static int64_t rule_day(const rule_date *rd, int64_t y)
{
    int64_t first, day;
    int wd;

    switch (rd->kind) {
    case 'J': /* 1-365, February 29 never counted */
        return aps__days_from_civil(y, 1, 1) + rd->n - 1 + (aps__is_leap(y) && rd->n >= 60);
    case 'D': /* 0-365, February 29 counted */
        return aps__days_from_civil(y, 1, 1) + rd->n;
    default: /* Mm.w.d: the w-th weekday d of month m; w == 5 is the last */
        first = aps__days_from_civil(y, rd->m, 1);
        wd = (aps__weekday(first) + 1) % 7; /* 0 = Sunday, as POSIX */
        day = first + (rd->d - wd + 7) % 7 + 7 * (rd->w - 1);
        if (day >= first + aps__days_in_month(y, rd->m))
            day -= 7; /* one step suffices: 6 + 28 - 7 < 28 */
        return day;
    }
}

/*
 * Rule transitions. Year y contributes two raw events, DST start and DST
 * end, unless (as tzcode decides) its DST would last zero time or a whole
 * year or more; a rule with no events at all is perpetual DST, which is
 * how version 3 writes "DST all year" (DST starts January 1 00:00 and ends
 * December 31 24:00 plus the DST shift). Event instants lie within
 * [Jan 1 y - 193 h, Dec 31 y + 193 h]: rule times reach 167 h either way
 * and offsets 26 h. Because of that spill, the state at an instant is
 * defined on the raw events of all years: the type of the latest event at
 * or before it, ties going to the later year and, within a year, to the
 * end of DST.
 */
#define RULE_SPILL (193 * 3600)

/* The raw event instants of year y: [0] DST starts, [1] DST ends. The
 * start time is given in standard time, the end in DST. Returns 0 when the
 * year has no transitions. */
static int rule_raw_year(const tz_rule *r, int64_t y, int64_t at[2])
{
    at[0] = rule_day(&r->start, y) * APS_SECS_PER_DAY + r->start.secs - r->std_off;
    at[1] = rule_day(&r->end, y) * APS_SECS_PER_DAY + r->end.secs - r->dst_off;
    return !(at[0] <= at[1] &&
             (at[0] == at[1] || at[1] - at[0] >= (365 + aps__is_leap(y)) * APS_SECS_PER_DAY));
}

/* Whether the rule never changes: DST all year, every year. */
static int rule_perpetual(const tz_rule *r)
{
    int64_t y, at[2];

    for (y = 2000; y <= 2003; y++) { /* leap and common years */
        if (rule_raw_year(r, y, at))
            return 0;
    }
    return 1;
}

/* The raw events of years y0..y1, sorted by (instant, year, start before
 * end). `ev` needs room for 2 * (y1 - y0 + 1) entries. */
static size_t rule_raw(const tz_rule *r, int64_t y0, int64_t y1, rule_ev *ev)
{
    size_t n = 0, i, j;
    int64_t y, at[2];

    for (y = y0; y <= y1; y++) {
        if (!rule_raw_year(r, y, at))
            continue;
        ev[n].at = at[0];
        ev[n++].type = r->dst_type;
        ev[n].at = at[1];
        ev[n++].type = r->std_type;
    }
    /* Insertion sort: stable, so ties keep the generation order, and
     * linear on this nearly sorted input. */
    for (i = 1; i < n; i++) {
        rule_ev e = ev[i];
        for (j = i; j > 0 && ev[j - 1].at > e.at; j--)
            ev[j] = ev[j - 1];
        ev[j] = e;
    }
    return n;
}

/* Keeps, in place, the events of ev[0..n) in (lo, hi] that change the
 * state, starting from state `cur`; of events at the same instant only the
 * last counts. Returns how many are kept. */
static size_t rule_collapse(rule_ev *ev, size_t n, int64_t lo, int64_t hi, uint16_t cur)
{
    size_t i, out = 0;

    for (i = 0; i < n; i++) {
        if (ev[i].at <= lo || ev[i].at > hi)
            continue;
        if (i + 1 < n && ev[i + 1].at == ev[i].at)
            continue;
        if (ev[i].type == cur)
            continue;
        cur = ev[i].type;
        ev[out++] = ev[i];
    }
    return out;
}

/* The year whose rule transitions surround instant s. */
static int64_t rule_year(const tz_rule *r, int64_t s)
{
    int64_t y;
    int m, d;

    aps__civil_from_days(aps__floor_div(s + r->std_off, APS_SECS_PER_DAY, NULL), &y, &m, &d);
    return y;
}

/* The type the rule puts in force at instant s (see above). */
static uint16_t rule_lookup(const tz_rule *r, int64_t s)
{
    int64_t Y = rule_year(r, s), y, at[2], best = 0;
    uint16_t type = r->std_type;
    int found = 0, i;

    /* From the latest year down, until no earlier year can hold a later
     * event: two or three years for any rule; the bound is a safety net. */
    for (y = Y + 1; y >= Y - 8; y--) {
        if (found && aps__days_from_civil(y + 1, 1, 2) * APS_SECS_PER_DAY + RULE_SPILL < best)
            break;
        if (!rule_raw_year(r, y, at))
            continue;
        for (i = 1; i >= 0; i--) { /* in descending tie order: strict > keeps the first */
            if (at[i] <= s && (!found || at[i] > best)) {
                best = at[i];
                type = i ? r->std_type : r->dst_type;
                found = 1;
            }
        }
    }
    return type;
}

/* The transitions in (first, last], a window of at most a few days, with
 * the type in force at `first`. */
#define RULE_WIN_EV 6
static size_t rule_window(const tz_rule *r, int64_t first, int64_t last,
                          rule_ev ev[RULE_WIN_EV], uint16_t *before)
{
    /* Years Y-1..Y+1 hold every event within days of year Y. */
    int64_t Y = rule_year(r, first);
    size_t n = rule_raw(r, Y - 1, Y + 1, ev);

    *before = rule_lookup(r, first);
    return rule_collapse(ev, n, first, last, *before);
}

/* ---- lookups ------------------------------------------------------------- */

/* The number of elements of the ascending array a[0..n) that are <= x.
 * Branchless (the compiler emits a conditional move): with random
 * instants a branchy search mispredicts about half of its ~10 steps,
 * which cost more than the rest of a conversion. */
static inline size_t count_le(const int64_t *a, size_t n, int64_t x)
{
    const int64_t *base = a;
    size_t half;

    if (n == 0)
        return 0;
    while (n > 1) {
        half = n / 2;
        base = base[half] <= x ? base + half : base;
        n -= half;
    }
    return (size_t)(base - a) + (*base <= x);
}

/* count_le(a, n, x) through the bucket index when x is inside it. */
static inline size_t index_le(const tz_index *ix, const int64_t *a, size_t n, int64_t x)
{
    /* Unsigned: an x below base wraps to a huge bucket number. x is at
     * most ~2^43 in magnitude, so the subtraction cannot overflow. */
    uint64_t j = (uint64_t)(x - ix->base) >> TZ_BUCKET_SHIFT;
    size_t k;

    if (j >= ix->n)
        return count_le(a, n, x);
    for (k = ix->idx[j]; k < n && a[k] <= x; k++)
        ;
    return k;
}

/* The type in force at UTC second s. */
static inline uint16_t type_at(const aps_tz *tz, int64_t s)
{
    size_t k;

    if (tz->rule_mode != RULE_NONE &&
        (tz->rule_mode == RULE_ALL || s >= tz->rule_tab_end))
        return rule_lookup(&tz->rule, s);
    k = index_le(&tz->at_ix, tz->at, tz->n, s);
    return k ? tz->ti[k - 1] : tz->before;
}

void aps__tz_lookup(const aps_tz *tz, aps_time t, int32_t *utcoff, int *isdst,
                    const char **abbr)
{
    const tz_type *ty = &tz->types[type_at(tz, aps__floor_div(t, USEC_PER_SEC, NULL))];

    if (utcoff)
        *utcoff = ty->utoff;
    if (isdst)
        *isdst = ty->isdst;
    if (abbr)
        *abbr = tz->abbrs + ty->abbr;
}

/* The rule's first transition after s, or APS_TIME_NONE. */
static aps_time rule_next(const tz_rule *r, int64_t s)
{
    rule_ev ev[10];
    int64_t Y = rule_year(r, s);
    /* Years Y-1..Y+3 hold every event before the earliest one of year
     * Y+4; three years without a change mean the rule never changes (DST
     * all year). */
    int64_t limit = aps__days_from_civil(Y + 4, 1, 1) * APS_SECS_PER_DAY - RULE_SPILL - 1;
    size_t n = rule_raw(r, Y - 1, Y + 3, ev);

    n = rule_collapse(ev, n, s, limit, rule_lookup(r, s));
    if (n == 0 || ev[0].at > INT64_MAX / USEC_PER_SEC)
        return APS_TIME_NONE;
    return ev[0].at * USEC_PER_SEC;
}

void aps__tz_next_transition(const aps_tz *tz, aps_time t, aps_time *next)
{
    int64_t s = aps__floor_div(t, USEC_PER_SEC, NULL);
    size_t k;

    if (tz->rule_mode == RULE_ALL || (tz->rule_mode == RULE_AFTER && s >= tz->rule_tab_end)) {
        *next = rule_next(&tz->rule, s);
        return;
    }
    k = index_le(&tz->at_ix, tz->at, tz->n, s);
    if (k < tz->n)
        *next = tz->at[k] <= INT64_MAX / USEC_PER_SEC ? tz->at[k] * USEC_PER_SEC : APS_TIME_NONE;
    else if (tz->rule_mode == RULE_AFTER)
        *next = rule_next(&tz->rule, tz->rule_tab_end - 1);
    else
        *next = APS_TIME_NONE;
}

void aps__civil_from_secs(int64_t secs, int32_t usec, aps_civil *out)
{
    int64_t rem, y;
    int64_t days = aps__floor_div(secs, APS_SECS_PER_DAY, &rem);

    aps__civil_from_days(days, &y, &out->month, &out->day);
    out->year = (int)y;
    out->hour = (int)(rem / 3600);
    out->minute = (int)(rem / 60 % 60);
    out->second = (int)(rem % 60);
    out->usec = usec;
}

int aps__civil_to_secs(const aps_civil *c, int64_t *secs, int32_t *usec)
{
    int64_t mrem, urem, y, s;

    /* All in int64: with int fields nothing below can overflow (|days| <
     * 10^12), and the range check comes before any multiplication by 10^6. */
    y = (int64_t)c->year + aps__floor_div((int64_t)c->month - 1, 12, &mrem);
    s = (aps__days_from_civil(y, (int)mrem + 1, 1) + c->day - 1) * APS_SECS_PER_DAY;
    s += (int64_t)c->hour * 3600 + (int64_t)c->minute * 60 + c->second;
    s += aps__floor_div(c->usec, USEC_PER_SEC, &urem);
    if (s > TZ_LOCAL_MAX || s < -TZ_LOCAL_MAX)
        return APS_ERANGE;
    *secs = s;
    *usec = (int32_t)urem;
    return 0;
}

void aps__tz_to_local(const aps_tz *tz, aps_time t, aps_civil *out, int32_t *utcoff)
{
    int64_t us;
    int64_t s = aps__floor_div(t, USEC_PER_SEC, &us);
    size_t k;
    int32_t off;

    /* The table case inline: this is the cron trigger's hot path. */
    if (tz->rule_mode == RULE_NONE || (tz->rule_mode == RULE_AFTER && s < tz->rule_tab_end)) {
        k = index_le(&tz->at_ix, tz->at, tz->n, s);
        off = k ? tz->off[k - 1] : tz->types[tz->before].utoff;
    } else {
        off = tz->types[rule_lookup(&tz->rule, s)].utoff;
    }
    aps__civil_from_secs(s + off, (int32_t)us, out);
    if (utcoff)
        *utcoff = off;
}

/* The instants showing local epoch second L. */
typedef struct local_res {
    int n;            /* 0, 1, 2 */
    int64_t t[2];     /* UTC seconds, ascending */
    int isdst[2];
    int32_t gap_off;  /* n == 0: the offset in force just before the gap */
} local_res;

static void res_add(local_res *r, int64_t t, int isdst)
{
    /* More than two candidates only happen with absurd (fuzzed) tables;
     * keep the earliest and the latest. */
    int i = r->n < 2 ? r->n++ : 1;

    r->t[i] = t;
    r->isdst[i] = isdst;
}

/*
 * Exact for any table: visits every period [at[p], at[p+1]) that can hold
 * an instant L - off, off being within the offset bounds, and adds the
 * instants in [tmin, tmax) that show L. Period -1 is the one before at[0].
 * Only periods ending in (tmin, tmax] may set gap_off, so that a scan of
 * the file's table and a scan of the footer rule can be chained.
 */
static void scan_periods(const aps_tz *tz, const int64_t *at, const uint16_t *ti, size_t n,
                         uint16_t before, int64_t L, int64_t tmin, int64_t tmax, local_res *r)
{
    int64_t first = L - TZ_MAX_UTOFF, last = L - TZ_MIN_UTOFF;
    size_t k = count_le(at, n, first);
    ptrdiff_t p;

    for (p = (ptrdiff_t)k - 1; p < (ptrdiff_t)n; p++) {
        const tz_type *ty = &tz->types[p < 0 ? before : ti[p]];
        int has_end = (size_t)(p + 1) < n;
        int64_t t = L - ty->utoff;

        if (p >= 0 && at[p] > last)
            break;
        if ((p < 0 || t >= at[p]) && (!has_end || t < at[p + 1]) && t >= tmin && t < tmax)
            res_add(r, t, ty->isdst);
        /* The latest period whose wall clock ended at or before L is the
         * one "just before the gap", if L is in one. */
        if (has_end && at[p + 1] + ty->utoff <= L && at[p + 1] > tmin && at[p + 1] <= tmax)
            r->gap_off = ty->utoff;
    }
}

/* The type of the period holding instant s in a sorted event array. */
static uint16_t type_in(const int64_t *at, const uint16_t *ti, size_t n, uint16_t before,
                        int64_t s)
{
    size_t k = count_le(at, n, s);
    return k ? ti[k - 1] : before;
}

static void resolve_local(const aps_tz *tz, int64_t L, local_res *r)
{
    int64_t first = L - TZ_MAX_UTOFF, last = L - TZ_MIN_UTOFF;
    size_t k, i;
    int32_t prev_off;
    uint16_t prev;

    r->n = 0;
    /* Instants the table does not hold (the footer rule governs them):
     * evaluate the rule, chained after the table when the window of
     * possible instants begins before the rule takes over. */
    if (tz->rule_mode == RULE_ALL || (tz->rule_mode == RULE_AFTER && last >= tz->rule_tab_end)) {
        rule_ev ev[RULE_WIN_EV];
        int64_t at[RULE_WIN_EV], from = tz->rule_mode == RULE_ALL ? INT64_MIN : tz->rule_from;
        uint16_t ti[RULE_WIN_EV], before;
        size_t n = rule_window(&tz->rule, first, last, ev, &before);

        for (i = 0; i < n; i++) {
            at[i] = ev[i].at;
            ti[i] = ev[i].type;
        }
        if (first >= from) {
            r->gap_off = tz->types[type_in(at, ti, n, before, first)].utoff;
        } else {
            r->gap_off = tz->types[type_in(tz->at, tz->ti, tz->n, tz->before, first)].utoff;
            scan_periods(tz, tz->at, tz->ti, tz->n, tz->before, L, INT64_MIN, from, r);
        }
        scan_periods(tz, at, ti, n, before, L, from, INT64_MAX, r);
        return;
    }
    if (!tz->simple) {
        r->gap_off = tz->types[type_in(tz->at, tz->ti, tz->n, tz->before, first)].utoff;
        scan_periods(tz, tz->at, tz->ti, tz->n, tz->before, L, INT64_MIN, INT64_MAX, r);
        return;
    }
    k = index_le(&tz->lo_ix, tz->lo, tz->n, L);
    if (k == 0) {
        r->n = 1;
        r->t[0] = L - tz->types[tz->before].utoff;
        r->isdst[0] = tz->types[tz->before].isdst;
        return;
    }
    i = k - 1;
    if (L >= tz->hi[i]) {
        r->n = 1;
        r->t[0] = L - tz->off[i];
        r->isdst[0] = tz->types[tz->ti[i]].isdst;
        return;
    }
    prev = i ? tz->ti[i - 1] : tz->before;
    prev_off = tz->types[prev].utoff;
    if (tz->off[i] > prev_off) { /* the clock jumped forward over L */
        r->gap_off = prev_off;
    } else { /* the clock went back: L was shown twice */
        r->n = 2;
        r->t[0] = L - prev_off;
        r->isdst[0] = tz->types[prev].isdst;
        r->t[1] = L - tz->off[i];
        r->isdst[1] = tz->types[tz->ti[i]].isdst;
    }
}

int aps__tz_from_local(const aps_tz *tz, const aps_civil *c, aps_time *out, int *kind)
{
    int64_t L, t;
    int32_t us;
    local_res r;
    int k;

    if (aps__civil_to_secs(c, &L, &us))
        return APS_ERANGE;
    resolve_local(tz, L, &r);
    if (r.n == 1) {
        t = r.t[0];
        k = APS_LOCAL_UNIQUE;
    } else if (r.n == 2) {
        /* pytz is_dst=False: the standard-time candidate, else the later. */
        t = (r.isdst[0] == 0 && r.isdst[1] != 0) ? r.t[0] : r.t[1];
        k = APS_LOCAL_FOLD;
    } else {
        t = L - r.gap_off;
        k = APS_LOCAL_GAP;
    }
    *out = t * USEC_PER_SEC + us;
    if (kind)
        *kind = k;
    return 0;
}

int aps__tz_local_candidates(const aps_tz *tz, const aps_civil *c, aps_time cand[2],
                             int isdst[2], int *n)
{
    int64_t L;
    int32_t us;
    local_res r;
    int i;

    *n = 0;
    if (aps__civil_to_secs(c, &L, &us))
        return APS_ERANGE;
    resolve_local(tz, L, &r);
    for (i = 0; i < r.n; i++) {
        cand[i] = r.t[i] * USEC_PER_SEC + us;
        isdst[i] = r.isdst[i];
    }
    *n = r.n;
    return 0;
}

/* ---- parsing the footer ------------------------------------------------- */

/* Up to `maxdig` digits as a number in [0, max]. */
static const char *parse_num(const char *s, int maxdig, int max, int *out)
{
    int v = 0, i;

    for (i = 0; i < maxdig && *s >= '0' && *s <= '9'; i++, s++)
        v = v * 10 + (*s - '0');
    if (i == 0 || v > max)
        return NULL;
    *out = v;
    return s;
}

/* [+-]hh[:mm[:ss]] with hh <= maxh, as signed seconds. */
static const char *parse_hms(const char *s, int maxh, int32_t *out)
{
    int sign = 1, h, m = 0, sec = 0;

    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (!(s = parse_num(s, 3, maxh, &h)))
        return NULL;
    if (*s == ':') {
        if (!(s = parse_num(s + 1, 2, 59, &m)))
            return NULL;
        if (*s == ':' && !(s = parse_num(s + 1, 2, 59, &sec)))
            return NULL;
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return s;
}

/* A zone abbreviation: letters, or <...> with letters, digits, + and -. */
static const char *parse_abbr(const char *s, char buf[TZ_MAX_ABBR])
{
    size_t n = 0;

    if (*s == '<') {
        for (s++; *s && *s != '>'; s++) {
            if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
                  (*s >= '0' && *s <= '9') || *s == '+' || *s == '-'))
                return NULL;
            if (n + 1 >= TZ_MAX_ABBR)
                return NULL;
            buf[n++] = *s;
        }
        if (*s != '>')
            return NULL;
        s++;
    } else {
        for (; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'); s++) {
            if (n + 1 >= TZ_MAX_ABBR)
                return NULL;
            buf[n++] = *s;
        }
    }
    if (n == 0)
        return NULL;
    buf[n] = '\0';
    return s;
}

/* Jn, n or Mm.w.d, then an optional /time. */
static const char *parse_rule_date(const char *s, rule_date *rd)
{
    rd->secs = 2 * 3600; /* POSIX default 02:00:00 */
    if (*s == 'J') {
        rd->kind = 'J';
        if (!(s = parse_num(s + 1, 3, 365, &rd->n)) || rd->n < 1)
            return NULL;
    } else if (*s == 'M') {
        rd->kind = 'M';
        if (!(s = parse_num(s + 1, 2, 12, &rd->m)) || rd->m < 1 || *s++ != '.')
            return NULL;
        if (!(s = parse_num(s, 1, 5, &rd->w)) || rd->w < 1 || *s++ != '.')
            return NULL;
        if (!(s = parse_num(s, 1, 6, &rd->d)))
            return NULL;
    } else {
        rd->kind = 'D';
        if (!(s = parse_num(s, 3, 365, &rd->n)))
            return NULL;
    }
    if (*s == '/') /* version 3: -167..167 hours */
        return parse_hms(s + 1, 167, &rd->secs);
    return s;
}

/* A POSIX TZ string such as EST5EDT,M3.2.0,M11.1.0. Offsets are stored as
 * utoff (east positive), the opposite of POSIX's sign. */
static int parse_tzstr(const char *s, tz_rule *r, char stdn[TZ_MAX_ABBR], char dstn[TZ_MAX_ABBR])
{
    int32_t v;

    memset(r, 0, sizeof(*r));
    if (!(s = parse_abbr(s, stdn)) || !(s = parse_hms(s, 24, &v)))
        return -1;
    r->std_off = -v;
    if (*s == '\0')
        return 0;
    if (!(s = parse_abbr(s, dstn)))
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s != ',' && *s != '\0') {
        if (!(s = parse_hms(s, 24, &v)))
            return -1;
        r->dst_off = -v;
    }
    if (*s == '\0') /* no rule: tzcode's default, the US rules */
        s = ",M3.2.0,M11.1.0";
    if (*s++ != ',' || !(s = parse_rule_date(s, &r->start)))
        return -1;
    if (*s++ != ',' || !(s = parse_rule_date(s, &r->end)))
        return -1;
    return *s == '\0' ? 0 : -1;
}

/* ---- parsing TZif --------------------------------------------------------- */

typedef struct tzif_hdr {
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} tzif_hdr;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void read_hdr(const unsigned char *p, tzif_hdr *h)
{
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
}

/* The size of a data block; 64-bit arithmetic on 32-bit counts cannot
 * overflow. */
static uint64_t block_size(const tzif_hdr *h, unsigned tsize)
{
    return (uint64_t)h->timecnt * (tsize + 1) + (uint64_t)h->typecnt * 6 + h->charcnt +
           (uint64_t)h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

/* The index of a type equal to (utoff, isdst, abbr), added if needed. */
static int intern_type(aps_tz *tz, int32_t utoff, int isdst, const char *abbr)
{
    size_t i, len = strlen(abbr) + 1;

    for (i = 0; i < tz->ntypes; i++) {
        if (tz->types[i].utoff == utoff && tz->types[i].isdst == isdst &&
            strcmp(tz->abbrs + tz->types[i].abbr, abbr) == 0)
            return (int)i;
    }
    /* Room was reserved for two more types and two abbreviations. */
    memcpy(tz->abbrs + tz->nabbrs, abbr, len);
    tz->types[i].utoff = utoff;
    tz->types[i].isdst = (uint8_t)isdst;
    tz->types[i].abbr = (uint16_t)tz->nabbrs;
    tz->nabbrs += len;
    tz->ntypes++;
    return (int)i;
}

static int same_type(const aps_tz *tz, uint16_t a, uint16_t b)
{
    return tz->types[a].utoff == tz->types[b].utoff &&
           tz->types[a].isdst == tz->types[b].isdst &&
           strcmp(tz->abbrs + tz->types[a].abbr, tz->abbrs + tz->types[b].abbr) == 0;
}

void aps__tz_free(aps_tz *tz)
{
    if (!tz || tz == &utc_zone)
        return;
    free(tz->name);
    free(tz->at);
    free(tz->off);
    free(tz->ti);
    free(tz->lo);
    free(tz->hi);
    free(tz->at_ix.idx);
    free(tz->lo_ix.idx);
    free(tz->types);
    free(tz->abbrs);
    free(tz);
}

/* Builds the bucket index of a[0..n); leaves it empty if the data does not
 * suit one. */
static int build_index(tz_index *ix, const int64_t *a, size_t n)
{
    size_t j, nb, prev;
    int64_t end;

    ix->base = TZ_BUCKET_BASE;
    ix->n = 0;
    if (n == 0 || a[n - 1] < ix->base)
        return 0;
    end = a[n - 1] < ix->base + ((int64_t)TZ_BUCKET_MAX << TZ_BUCKET_SHIFT)
              ? a[n - 1]
              : ix->base + ((int64_t)TZ_BUCKET_MAX << TZ_BUCKET_SHIFT) - 1;
    nb = (size_t)((end - ix->base) >> TZ_BUCKET_SHIFT) + 1;
    if (!(ix->idx = malloc(nb * sizeof(*ix->idx))))
        return APS_ENOMEM;
    for (j = 0, prev = 0; j <= nb; j++) { /* j == nb: check the last bucket's fill */
        size_t c = count_le(a, n, ix->base + ((int64_t)j << TZ_BUCKET_SHIFT) - 1);
        if (c > UINT16_MAX || (j > 0 && c - prev > TZ_BUCKET_MAX_FILL)) {
            free(ix->idx);
            ix->idx = NULL;
            return 0;
        }
        if (j < nb)
            ix->idx[j] = (uint16_t)c;
        prev = c;
    }
    ix->n = nb;
    return 0;
}

/* Fills off/lo/hi from at/ti and decides whether from_local may use the
 * binary search over lo. */
static void finish_table(aps_tz *tz)
{
    size_t i;
    int32_t prev = tz->types[tz->before].utoff, cur;

    tz->simple = 1;
    for (i = 0; i < tz->n; i++) {
        cur = tz->types[tz->ti[i]].utoff;
        tz->off[i] = cur;
        tz->lo[i] = tz->at[i] + (cur < prev ? cur : prev);
        tz->hi[i] = tz->at[i] + (cur < prev ? prev : cur);
        if (i > 0 && tz->lo[i] < tz->hi[i - 1])
            tz->simple = 0;
        prev = cur;
    }
}

int aps__tz_parse(const char *name, const unsigned char *data, size_t len, aps_tz **out,
                  aps_error *err)
{
    const unsigned char *p;
    const char *why = NULL;
    tzif_hdr h;
    aps_tz *tz = NULL;
    rule_ev *ext = NULL;
    size_t pos, i, next = 0, file_n = 0;
    unsigned tsize = 4;
    int version, rc = APS_ENOMEM, have_footer = 0;
    char footer[TZ_MAX_FOOTER + 1];
    char stdn[TZ_MAX_ABBR] = "", dstn[TZ_MAX_ABBR] = "";
    tz_rule rule;

    memset(&rule, 0, sizeof(rule));
    if (len < 44 || memcmp(data, "TZif", 4) != 0) {
        why = "not a TZif file (bad magic)";
        goto invalid;
    }
    version = data[4];
    if (version != 0 && (version < '2' || version > '4')) {
        why = "unsupported TZif version";
        goto invalid;
    }
    read_hdr(data, &h);
    pos = 44;
    if (version >= '2') {
        /* Skip the 32-bit block: the 64-bit one after it has everything. */
        uint64_t skip = block_size(&h, 4);
        if (skip > len - pos || len - pos - skip < 44) {
            why = "truncated version 1 data block";
            goto invalid;
        }
        pos += (size_t)skip;
        if (memcmp(data + pos, "TZif", 4) != 0 || data[pos + 4] < '2') {
            why = "bad second header";
            goto invalid;
        }
        read_hdr(data + pos, &h);
        pos += 44;
        tsize = 8;
    }
    if (h.typecnt == 0 || h.typecnt > TZ_MAX_TYPES || h.charcnt == 0 ||
        h.charcnt > TZ_MAX_CHARS || h.timecnt > TZ_MAX_TIMES || h.leapcnt > TZ_MAX_LEAPS ||
        (h.isstdcnt != 0 && h.isstdcnt != h.typecnt) ||
        (h.isutcnt != 0 && h.isutcnt != h.typecnt)) {
        why = "counts in header out of range";
        goto invalid;
    }
    if (block_size(&h, tsize) > len - pos) {
        why = "truncated data block";
        goto invalid;
    }

    if (!(tz = calloc(1, sizeof(*tz))))
        goto fail;
    /* Two spare types and abbreviations for the footer's. */
    if (!(tz->name = strdup(name ? name : "")) ||
        !(tz->types = calloc(h.typecnt + 2, sizeof(*tz->types))) ||
        !(tz->abbrs = malloc(h.charcnt + 2 * TZ_MAX_ABBR)))
        goto fail;

    p = data + pos;
    file_n = h.timecnt;
    /* Check the types first: transitions index them. */
    {
        const unsigned char *tp = p + (size_t)h.timecnt * (tsize + 1);
        const unsigned char *cp = tp + (size_t)h.typecnt * 6;
        for (i = 0; i < h.typecnt; i++, tp += 6) {
            int32_t utoff = (int32_t)be32(tp);
            if (utoff < TZ_MIN_UTOFF || utoff > TZ_MAX_UTOFF) {
                why = "UTC offset out of range";
                goto invalid;
            }
            if (tp[4] > 1 || tp[5] >= h.charcnt) {
                why = "bad local time type";
                goto invalid;
            }
            tz->types[i].utoff = utoff;
            tz->types[i].isdst = tp[4];
            tz->types[i].abbr = tp[5];
        }
        if (cp[h.charcnt - 1] != '\0') {
            why = "abbreviations not NUL-terminated";
            goto invalid;
        }
        memcpy(tz->abbrs, cp, h.charcnt);
        /* RFC 8536: 3 to 6 characters; past TZ_MAX_ABBR, as in the footer
         * (parse_abbr), it is no zone's. */
        for (i = 0; i < h.typecnt; i++) {
            if (strlen(tz->abbrs + tz->types[i].abbr) >= TZ_MAX_ABBR) {
                why = "time zone abbreviation too long";
                goto invalid;
            }
        }
        tz->ntypes = h.typecnt;
        tz->nabbrs = h.charcnt;
        cp += h.charcnt + (size_t)h.leapcnt * (tsize + 4); /* leap records: ignored */
        for (i = 0; i < (size_t)h.isstdcnt + h.isutcnt; i++) {
            if (cp[i] > 1) {
                why = "bad standard/UT indicator";
                goto invalid;
            }
        }
    }
    pos += (size_t)block_size(&h, tsize);

    /* The footer: "\nTZ-string\n". Tolerate its absence. */
    if (tsize == 8 && pos < len) {
        const unsigned char *nl;
        size_t flen, avail = len - pos - 1;

        if (data[pos] != '\n') {
            why = "bad footer";
            goto invalid;
        }
        nl = memchr(data + pos + 1, '\n', avail < TZ_MAX_FOOTER + 1 ? avail : TZ_MAX_FOOTER + 1);
        if (!nl) {
            why = "unterminated or overlong footer";
            goto invalid;
        }
        flen = (size_t)(nl - (data + pos + 1));
        memcpy(footer, data + pos + 1, flen);
        footer[flen] = '\0';
        if (flen > 0) {
            if (strlen(footer) != flen || parse_tzstr(footer, &rule, stdn, dstn) != 0) {
                why = "bad TZ string in footer";
                goto invalid;
            }
            have_footer = 1;
        }
    }
    if (have_footer) {
        int perpetual = rule.has_dst && rule_perpetual(&rule);
        if (perpetual) { /* a rule of one type: DST */
            rule.has_dst = 0;
            rule.std_off = rule.dst_off;
        }
        rule.std_type = (uint16_t)intern_type(tz, rule.std_off, perpetual, perpetual ? dstn : stdn);
        if (rule.has_dst)
            rule.dst_type = (uint16_t)intern_type(tz, rule.dst_off, 1, dstn);
        tz->rule = rule;
    }

    /* Footer transitions from the last one of the file to TZ_EXT_LAST_YEAR. */
    if (rule.has_dst && file_n > 0) {
        int64_t last = (int64_t)be64(p + (file_n - 1) * 8); /* footers are v2+ */
        int64_t y0, tab_end = aps__days_from_civil(TZ_EXT_LAST_YEAR + 1, 1, 1) * APS_SECS_PER_DAY;

        if (last >= -TZ_MAX_ABS_TIME && last <= TZ_MAX_ABS_TIME) {
            y0 = rule_year(&rule, last) - 1;
            if (y0 >= 1800 && y0 <= TZ_EXT_LAST_YEAR) {
                size_t cap = 2 * (size_t)(TZ_EXT_LAST_YEAR + 1 - y0 + 1), n;
                if (!(ext = malloc(cap * sizeof(*ext))))
                    goto fail;
                /* Years y0..2201 hold every event in (last, tab_end). */
                n = rule_raw(&rule, y0, TZ_EXT_LAST_YEAR + 1, ext);
                next = rule_collapse(ext, n, last, tab_end - 1, rule_lookup(&rule, last));
                tz->rule_tab_end = tab_end;
            } else {
                tz->rule_tab_end = last; /* no table: the rule from `last` on */
            }
            tz->rule_mode = RULE_AFTER;
            tz->rule_from = last;
        }
    } else if (rule.has_dst) {
        tz->rule_mode = RULE_ALL;
    }

    tz->n = file_n + next;
    if (tz->n > 0 &&
        (!(tz->at = malloc(tz->n * sizeof(*tz->at))) ||
         !(tz->off = malloc(tz->n * sizeof(*tz->off))) ||
         !(tz->ti = malloc(tz->n * sizeof(*tz->ti))) ||
         !(tz->lo = malloc(tz->n * sizeof(*tz->lo))) ||
         !(tz->hi = malloc(tz->n * sizeof(*tz->hi)))))
        goto fail;
    for (i = 0; i < file_n; i++) {
        int64_t t = tsize == 8 ? (int64_t)be64(p + i * 8) : (int64_t)(int32_t)be32(p + i * 4);
        unsigned idx = p[(size_t)h.timecnt * tsize + i];

        if (t < -TZ_MAX_ABS_TIME || t > TZ_MAX_ABS_TIME) {
            why = "transition time out of range";
            goto invalid;
        }
        if (i > 0 && t <= tz->at[i - 1]) {
            why = "transition times not ascending";
            goto invalid;
        }
        if (idx >= h.typecnt) {
            why = "transition to an undefined type";
            goto invalid;
        }
        tz->at[i] = t;
        tz->ti[i] = (uint16_t)idx;
    }
    for (i = 0; i < next; i++) {
        tz->at[file_n + i] = ext[i].at;
        tz->ti[file_n + i] = ext[i].type;
    }
    /* RFC 8536: type 0 before the first transition; with no transitions
     * the footer, if any, governs all time. */
    tz->before = 0;
    if (have_footer && file_n == 0 && !rule.has_dst)
        tz->before = rule.std_type;
    /* The footer governs after the last transition of the file: make the
     * type of that transition agree with it (it does in files from zic). */
    if (have_footer && file_n > 0) {
        uint16_t want = rule.has_dst ? rule_lookup(&rule, tz->at[file_n - 1]) : rule.std_type;
        if (!same_type(tz, tz->ti[file_n - 1], want))
            tz->ti[file_n - 1] = want;
    }
    finish_table(tz);
    if (build_index(&tz->at_ix, tz->at, tz->n) || build_index(&tz->lo_ix, tz->lo, tz->n))
        goto fail;
    free(ext);
    *out = tz;
    return 0;

invalid:
    rc = set_err(err, APS_EINVAL, "timezone: \"%.100s\": invalid TZif data: %s",
                 name ? name : "", why);
    free(ext);
    aps__tz_free(tz);
    return rc;
fail:
    free(ext);
    aps__tz_free(tz);
    return set_err(err, APS_ENOMEM, "timezone: out of memory");
}

/* ---- loading and the cache ---------------------------------------------- */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static aps_tz *cache_head; /* loaded zones; never freed */

/* Zone names are relative paths under TZDIR: nothing may escape it. */
static int valid_name(const char *name)
{
    size_t n = strnlen(name, APS_TZ_NAME_MAX + 1), i;

    if (n == 0 || n > APS_TZ_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = name[i];
        int comp_start = i == 0 || name[i - 1] == '/';

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '/' || c == '_' || c == '-' || c == '+' || c == '.'))
            return 0;
        if (comp_start && (c == '/' || c == '.'))
            return 0; /* leading '/', "//", ".", "..", hidden files */
    }
    return name[n - 1] != '/';
}

/* Reads a whole regular file. APS_ENOENT if there is none. */
static int read_file(const char *path, unsigned char **buf, size_t *len)
{
    struct stat st;
    unsigned char *b = NULL;
    size_t got = 0;
    ssize_t r = 0;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return (errno == ENOENT || errno == ENOTDIR || errno == EACCES || errno == ENAMETOOLONG ||
                errno == ELOOP)
                   ? APS_ENOENT
                   : APS_EIO;
    if (fstat(fd, &st) != 0) {
        rc = APS_EIO;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = APS_ENOENT; /* a directory such as "America" */
        goto out;
    }
    if (st.st_size > TZ_MAX_FILE) {
        rc = APS_EINVAL;
        goto out;
    }
    if (!(b = malloc((size_t)st.st_size + 1))) {
        rc = APS_ENOMEM;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        r = read(fd, b + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* shrank meanwhile: parse what we have */
        got += (size_t)r;
    }
    if (r < 0 && got == 0 && st.st_size > 0) {
        rc = APS_EIO;
        goto out;
    }
    *buf = b;
    *len = got;
    b = NULL;
    rc = 0;
out:
    free(b);
    close(fd);
    return rc;
}

int aps__tz_get(const char *name, const aps_tz **out, aps_error *err)
{
    char path[4096 + APS_TZ_NAME_MAX + 2];
    const char *dir;
    unsigned char *data = NULL;
    size_t len = 0;
    aps_tz *tz;
    int rc;

    if (!name)
        return set_err(err, APS_ENOENT, "timezone: no time zone given");
    if (!valid_name(name))
        return set_err(err, APS_ENOENT, "timezone: unknown time zone \"%.200s\"", name);
    if (strcmp(name, "UTC") == 0) {
        *out = &utc_zone;
        return 0;
    }
    pthread_mutex_lock(&cache_lock);
    for (tz = cache_head; tz; tz = tz->next) {
        if (strcmp(tz->name, name) == 0) {
            *out = tz;
            rc = 0;
            goto out;
        }
    }
    dir = getenv("TZDIR");
    if (!dir || !*dir)
        dir = "/usr/share/zoneinfo";
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        rc = set_err(err, APS_ENOENT, "timezone: unknown time zone \"%.200s\"", name);
        goto out;
    }
    rc = read_file(path, &data, &len);
    if (rc == 0 && (len < 4 || memcmp(data, "TZif", 4) != 0))
        rc = APS_ENOENT; /* zone.tab, tzdata.zi, ...: not a zone */
    if (rc == APS_ENOENT) {
        rc = set_err(err, rc, "timezone: unknown time zone \"%.200s\"", name);
        goto out;
    }
    if (rc == APS_EINVAL) {
        rc = set_err(err, rc, "timezone: \"%.200s\": file too large for a TZif file", name);
        goto out;
    }
    if (rc != 0) {
        rc = set_err(err, rc, "timezone: \"%.200s\": cannot read %.200s", name, path);
        goto out;
    }
    if ((rc = aps__tz_parse(name, data, len, &tz, err)) != 0)
        goto out;
    tz->next = cache_head;
    cache_head = tz;
    *out = tz;
out:
    pthread_mutex_unlock(&cache_lock);
    free(data);
    return rc;
}
