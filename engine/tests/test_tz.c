/*
 * Unit tests of the time-zone layer (tz.h) and the calendar math (civil.h).
 *
 * Expected values come from Python's zoneinfo and pytz (APScheduler's
 * oracle) on the system tzdata (2025b), baked in here so that the tests
 * need neither. System zones are read from /usr/share/zoneinfo.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "civil.h"
#include "tz.h"

#define ZONEINFO "/usr/share/zoneinfo"
#define US INT64_C(1000000)

#define assert_i64(a, b)                                                                  \
    do {                                                                                  \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                    \
        if (a_ != b_)                                                                     \
            fail_msg("%s = %lld, expected %lld (%s)", #a, (long long)a_, (long long)b_, #b); \
    } while (0)

/* ---- helpers ---------------------------------------------------------------- */

static const aps_tz *zone(const char *name)
{
    const aps_tz *tz = NULL;
    aps_error e = {0};

    if (aps__tz_get(name, &tz, &e) != 0)
        fail_msg("aps__tz_get(%s): %s", name, e.msg);
    return tz;
}

static aps_civil civ(int y, int mo, int d, int h, int mi, int s, int us)
{
    aps_civil c = {y, mo, d, h, mi, s, us};
    return c;
}

static void fmt_civil(const aps_civil *c, char *buf, size_t len)
{
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06d", c->year, c->month, c->day,
             c->hour, c->minute, c->second, c->usec);
}

/* to_local(t) shows `want` with offset `off`. */
static void check_local(const aps_tz *tz, aps_time t, const char *want, int32_t off)
{
    aps_civil c;
    int32_t got_off = 12345;
    char buf[64];

    aps__tz_to_local(tz, t, &c, &got_off);
    fmt_civil(&c, buf, sizeof(buf));
    if (strcmp(buf, want) != 0 || got_off != off)
        fail_msg("%s @%lld: got %s %d, want %s %d", aps__tz_name(tz), (long long)t, buf,
                 got_off, want, off);
}

/* from_local(c) is `want` (UTC seconds) of `kind`. */
static void check_from(const aps_tz *tz, aps_civil c, int64_t want, int kind)
{
    aps_time t = 0;
    int k = -1;

    assert_int_equal(aps__tz_from_local(tz, &c, &t, &k), 0);
    if (t != want * US + c.usec || k != kind)
        fail_msg("%s %04d-%02d-%02d %02d:%02d:%02d: got %lld kind %d, want %lld kind %d",
                 aps__tz_name(tz), c.year, c.month, c.day, c.hour, c.minute, c.second,
                 (long long)t, k, (long long)(want * US + c.usec), kind);
}

/* local_candidates(c) is n instants t0, t1 (UTC seconds) with flags. */
static void check_cands(const aps_tz *tz, aps_civil c, int n, int64_t t0, int d0, int64_t t1,
                        int d1)
{
    aps_time cand[2] = {0, 0};
    int isdst[2] = {-1, -1}, got = -1;

    assert_int_equal(aps__tz_local_candidates(tz, &c, cand, isdst, &got), 0);
    assert_int_equal(got, n);
    if (n >= 1) {
        assert_i64(cand[0], t0 * US + c.usec);
        assert_int_equal(isdst[0], d0);
    }
    if (n >= 2) {
        assert_i64(cand[1], t1 * US + c.usec);
        assert_int_equal(isdst[1], d1);
    }
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/*
 * A TZif file with no transitions, one type (off, isdst 0, abbr) and the
 * footer (NULL = none): both data blocks and the footer, like zic -b slim
 * writes for a rule-only zone. Returns the length.
 */
static size_t make_tzif(unsigned char *buf, char version, int32_t off, const char *abbr,
                        const char *footer)
{
    size_t n = 0, alen = strlen(abbr) + 1;
    int block;

    for (block = 0; block < (version ? 2 : 1); block++) {
        memcpy(buf + n, "TZif", 4);
        buf[n + 4] = (unsigned char)version;
        memset(buf + n + 5, 0, 15);
        put32(buf + n + 20, 0); /* isut */
        put32(buf + n + 24, 0); /* isstd */
        put32(buf + n + 28, 0); /* leap */
        put32(buf + n + 32, 0); /* time */
        put32(buf + n + 36, 1); /* type */
        put32(buf + n + 40, (uint32_t)alen);
        n += 44;
        put32(buf + n, (uint32_t)off);
        buf[n + 4] = 0;
        buf[n + 5] = 0;
        n += 6;
        memcpy(buf + n, abbr, alen);
        n += alen;
    }
    if (version && footer) {
        buf[n++] = '\n';
        memcpy(buf + n, footer, strlen(footer));
        n += strlen(footer);
        buf[n++] = '\n';
    }
    return n;
}

/* A small deterministic generator (xorshift64). */
static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A random instant in [lo, hi) seconds, with random microseconds. */
static aps_time rnd_time(int64_t lo, int64_t hi)
{
    return (lo + (int64_t)(rnd() % (uint64_t)(hi - lo))) * US + (int64_t)(rnd() % 1000000);
}

/*
 * Checks that to_local and from_local agree at instant t: the local time of
 * t must list t among its candidates, and resolving it must not report a
 * gap (t shows it, after all).
 */
static void check_roundtrip(const aps_tz *tz, aps_time t, const char *what)
{
    aps_civil c;
    aps_time cand[2], back;
    int isdst[2], n, i, found = 0, kind;
    int32_t off;

    aps__tz_to_local(tz, t, &c, &off);
    assert_int_equal(aps__tz_local_candidates(tz, &c, cand, isdst, &n), 0);
    for (i = 0; i < n; i++)
        found |= cand[i] == t;
    assert_int_equal(aps__tz_from_local(tz, &c, &back, &kind), 0);
    if (!found || kind == APS_LOCAL_GAP || (n == 1 && back != t))
        fail_msg("%s (%s): t=%lld shows %04d-%02d-%02d %02d:%02d:%02d%+d, candidates n=%d, "
                 "from_local %lld kind %d",
                 aps__tz_name(tz), what, (long long)t, c.year, c.month, c.day, c.hour,
                 c.minute, c.second, off, n, (long long)back, kind);
}

/* ---- civil.h ------------------------------------------------------------------ */

static void test_civil(void **state)
{
    int64_t z, y, iy;
    int m, d, w;
    int64_t r;
    (void)state;

    assert_i64(aps__days_from_civil(1970, 1, 1), 0);
    assert_i64(aps__days_from_civil(1969, 12, 31), -1);
    assert_i64(aps__days_from_civil(2000, 3, 1), 11017);
    assert_i64(aps__days_from_civil(2024, 2, 29), 19782);
    assert_i64(aps__days_from_civil(1900, 3, 1), -25508);
    assert_i64(aps__days_from_civil(1, 1, 1), -719162);
    assert_i64(aps__days_from_civil(0, 3, 1), -719468);
    assert_i64(aps__days_from_civil(9999, 12, 31), 2932896);
    /* Round trips, densely around the epoch and sparsely far away. */
    for (z = -800000; z <= 3000000; z += 1) {
        aps__civil_from_days(z, &y, &m, &d);
        assert_true(m >= 1 && m <= 12 && d >= 1 && d <= aps__days_in_month(y, m));
        if (aps__days_from_civil(y, m, d) != z)
            fail_msg("day %lld -> %lld-%d-%d", (long long)z, (long long)y, m, d);
    }
    for (z = -INT64_C(100000000000); z <= INT64_C(100000000000); z += INT64_C(999999937)) {
        aps__civil_from_days(z, &y, &m, &d);
        assert_i64(aps__days_from_civil(y, m, d), z);
    }
    assert_int_equal(aps__weekday(0), 3); /* Thursday */
    assert_int_equal(aps__weekday(-1), 2);
    assert_int_equal(aps__weekday(-4), 6); /* Sunday */
    assert_int_equal(aps__weekday(aps__days_from_civil(2024, 1, 1)), 0);
    assert_int_equal(aps__weekday(aps__days_from_civil(1900, 1, 1)), 0);
    assert_int_equal(aps__is_leap(1900), 0);
    assert_int_equal(aps__is_leap(2000), 1);
    assert_int_equal(aps__is_leap(2024), 1);
    assert_int_equal(aps__is_leap(2100), 0);
    assert_int_equal(aps__is_leap(0), 1);
    assert_int_equal(aps__is_leap(-4), 1);
    assert_int_equal(aps__is_leap(-100), 0);
    assert_int_equal(aps__days_in_month(1900, 2), 28);
    assert_int_equal(aps__days_in_month(2000, 2), 29);
    assert_int_equal(aps__days_in_month(2023, 4), 30);
    assert_int_equal(aps__days_in_month(2023, 12), 31);
    assert_int_equal(aps__days_in_month(2023, 0), 0);
    assert_int_equal(aps__days_in_month(2023, 13), 0);
    assert_int_equal(aps__day_of_year(2024, 1, 1), 1);
    assert_int_equal(aps__day_of_year(2024, 3, 1), 61);
    assert_int_equal(aps__day_of_year(2024, 12, 31), 366);
    assert_int_equal(aps__day_of_year(2023, 12, 31), 365);
    {
        static const struct { int y, m, d, iy, w; } iso[] = {
            {2021, 1, 3, 2020, 53}, {2024, 12, 30, 2025, 1}, {2026, 1, 1, 2026, 1},
            {2027, 1, 1, 2026, 53}, {2024, 6, 15, 2024, 24}, {2008, 12, 29, 2009, 1},
            {2010, 1, 3, 2009, 53},
        };
        size_t i;
        for (i = 0; i < sizeof(iso) / sizeof(iso[0]); i++) {
            aps__iso_week(iso[i].y, iso[i].m, iso[i].d, &iy, &w);
            assert_i64(iy, iso[i].iy);
            assert_int_equal(w, iso[i].w);
        }
    }
    assert_i64(aps__floor_div(-1, 1000000, &r), -1);
    assert_i64(r, 999999);
    assert_i64(aps__floor_div(1000000, 1000000, &r), 1);
    assert_i64(r, 0);
    assert_i64(aps__floor_div(INT64_MIN, 1000000, &r), -INT64_C(9223372036855));
    assert_i64(r, 224192);
    assert_i64(aps__floor_div(INT64_MAX, 86400, NULL), INT64_C(106751991167300));
}

/* ---- every zone of the system ----------------------------------------------------- */

typedef struct walk_stats {
    int tzif, other, roundtrips;
} walk_stats;

static void check_zone_file(const char *path, const char *rel, walk_stats *st)
{
    size_t len;
    unsigned char *data = slurp(path, &len);
    aps_tz *tz = NULL;
    aps_error e = {0};
    int rc, i;

    assert_non_null(data);
    rc = aps__tz_parse(rel, data, len, &tz, &e);
    if (len < 4 || memcmp(data, "TZif", 4) != 0) {
        /* zone.tab, tzdata.zi, leapseconds, ...: rejected cleanly */
        assert_int_equal(rc, APS_EINVAL);
        assert_non_null(strstr(e.msg, "invalid TZif data"));
        st->other++;
        free(data);
        return;
    }
    if (rc != 0)
        fail_msg("%s: %s", rel, e.msg);
    assert_string_equal(aps__tz_name(tz), rel);
    /* from 1800 to 2400: LMT, the table, its footer extension, the rule */
    for (i = 0; i < 40; i++, st->roundtrips++)
        check_roundtrip(tz, rnd_time(-5364662400, 13569465600), rel);
    aps__tz_free(tz);
    free(data);
    st->tzif++;
}

static void walk(const char *dir, const char *rel, walk_stats *st)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[4096], sub[1024];
    struct stat sb;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        if (stat(path, &sb) != 0)
            continue; /* a dangling link */
        if (S_ISDIR(sb.st_mode))
            walk(path, sub, st);
        else if (S_ISREG(sb.st_mode))
            check_zone_file(path, sub, st);
    }
    closedir(d);
}

static void test_all_system_zones(void **state)
{
    walk_stats st = {0, 0, 0};
    (void)state;

    walk(ZONEINFO, "", &st);
    print_message("parsed %d TZif files (%d round trips), rejected %d other files\n", st.tzif,
                  st.roundtrips, st.other);
    assert_true(st.tzif > 500);
    assert_true(st.other >= 3); /* zone.tab, iso3166.tab, tzdata.zi, ... */
}

/*
 * At every transition of a zone between 1900 and 2300 that stands alone
 * (no other within three days), the wall clock around it must resolve as
 * the transition dictates: a gap [T+before, T+after) or a fold
 * [T+after, T+before). Covers every zone, the table, the precomputed footer
 * transitions and the rule evaluated on demand (after 2200).
 */
static void check_transitions(const aps_tz *tz, int *count)
{
    aps_time t = -INT64_C(2208988800) * US, next, prev_tr = APS_TIME_NONE, after_tr;
    int guard = 0;

    for (aps__tz_next_transition(tz, t, &next); next != APS_TIME_NONE && next < INT64_C(10413792000) * US;
         prev_tr = next, aps__tz_next_transition(tz, next, &next)) {
        int64_t T = next / US, ob_l, oa_l;
        int32_t ob, oa;
        aps_civil c;

        assert_true(next % US == 0);
        assert_true(++guard < 100000);
        assert_true(next > t);
        aps__tz_next_transition(tz, next, &after_tr);
        if ((prev_tr != APS_TIME_NONE && next - prev_tr < 3 * 86400 * US) ||
            (after_tr != APS_TIME_NONE && after_tr - next < 3 * 86400 * US))
            continue;
        aps__tz_lookup(tz, next - 1, &ob, NULL, NULL);
        aps__tz_lookup(tz, next, &oa, NULL, NULL);
        ob_l = T + ob;
        oa_l = T + oa;
        if (oa > ob) { /* gap: read with the offset before */
            aps__civil_from_secs(ob_l, 0, &c);
            check_from(tz, c, T, APS_LOCAL_GAP);
            check_cands(tz, c, 0, 0, 0, 0, 0);
            aps__civil_from_secs(oa_l - 1, 999999, &c);
            check_from(tz, c, oa_l - 1 - ob, APS_LOCAL_GAP);
            aps__civil_from_secs(oa_l, 0, &c);
            check_from(tz, c, T, APS_LOCAL_UNIQUE);
            aps__civil_from_secs(ob_l - 1, 0, &c);
            check_from(tz, c, T - 1, APS_LOCAL_UNIQUE);
        } else if (oa < ob) { /* fold: both instants */
            int db, da;
            aps_time cand[2];
            int isdst[2], n;
            aps__tz_lookup(tz, next - 1, NULL, &db, NULL);
            aps__tz_lookup(tz, next, NULL, &da, NULL);
            aps__civil_from_secs(oa_l, 0, &c);
            check_cands(tz, c, 2, T - (ob - oa), db, T, da);
            check_from(tz, c, (db == 0 && da != 0) ? T - (ob - oa) : T, APS_LOCAL_FOLD);
            aps__civil_from_secs(ob_l - 1, 0, &c);
            assert_int_equal(aps__tz_local_candidates(tz, &c, cand, isdst, &n), 0);
            assert_int_equal(n, 2);
            aps__civil_from_secs(ob_l, 0, &c);
            check_from(tz, c, T + (ob - oa), APS_LOCAL_UNIQUE);
            aps__civil_from_secs(oa_l - 1, 0, &c);
            check_from(tz, c, T - (ob - oa) - 1, APS_LOCAL_UNIQUE);
        }
        (*count)++;
    }
}

static void test_all_zone_transitions(void **state)
{
    static const char *const zones[] = {
        "America/New_York", "Europe/London", "Europe/Dublin", "Australia/Lord_Howe",
        "Pacific/Chatham", "America/Sao_Paulo", "Africa/Casablanca", "America/St_Johns",
        "Asia/Kathmandu", "Europe/Berlin", "America/Los_Angeles", "Australia/Sydney",
        "America/Nuuk", "America/Santiago", "Asia/Gaza", "Pacific/Apia", "Antarctica/Troll",
        "America/Scoresbysund", "Pacific/Easter", "Asia/Tehran", "Europe/Moscow",
        "America/Havana", "Pacific/Kiritimati", "America/Caracas", "Asia/Jerusalem",
    };
    size_t i;
    int count = 0;
    (void)state;

    for (i = 0; i < sizeof(zones) / sizeof(zones[0]); i++)
        check_transitions(zone(zones[i]), &count);
    print_message("checked %d transitions\n", count);
    assert_true(count > 5000);
}

/* ---- named cases ------------------------------------------------------------------- */

static void test_new_york(void **state)
{
    const aps_tz *ny = zone("America/New_York");
    aps_civil c;
    int isdst;
    const char *abbr;
    (void)state;

    assert_string_equal(aps__tz_name(ny), "America/New_York");
    assert_ptr_equal(zone("America/New_York"), ny); /* cached */
    /* Spring forward: 02:30 does not exist; read as EST, it is 07:30Z. */
    check_from(ny, civ(2024, 3, 10, 2, 30, 0, 0), 1710055800, APS_LOCAL_GAP);
    check_from(ny, civ(2024, 3, 10, 2, 30, 0, 123456), 1710055800, APS_LOCAL_GAP);
    check_cands(ny, civ(2024, 3, 10, 2, 30, 0, 0), 0, 0, 0, 0, 0);
    check_from(ny, civ(2024, 3, 10, 1, 59, 59, 0), 1710053999, APS_LOCAL_UNIQUE);
    check_from(ny, civ(2024, 3, 10, 3, 0, 0, 0), 1710054000, APS_LOCAL_UNIQUE);
    check_local(ny, 1710055800 * US, "2024-03-10T03:30:00.000000", -14400);
    check_local(ny, 1710053999 * US + 999999, "2024-03-10T01:59:59.999999", -18000);
    /* Fall back: 01:30 is shown twice; EST (isdst 0) wins: 06:30Z. */
    check_from(ny, civ(2024, 11, 3, 1, 30, 0, 0), 1730615400, APS_LOCAL_FOLD);
    check_cands(ny, civ(2024, 11, 3, 1, 30, 0, 0), 2, 1730611800, 1, 1730615400, 0);
    check_from(ny, civ(2024, 11, 3, 0, 59, 59, 0), 1730609999, APS_LOCAL_UNIQUE);
    check_from(ny, civ(2024, 11, 3, 2, 0, 0, 0), 1730617200, APS_LOCAL_UNIQUE);
    check_from(ny, civ(2024, 7, 1, 12, 0, 0, 0), 1719849600, APS_LOCAL_UNIQUE);
    check_local(ny, 1730611800 * US, "2024-11-03T01:30:00.000000", -14400);
    check_local(ny, 1730615400 * US, "2024-11-03T01:30:00.000000", -18000);
    aps__tz_lookup(ny, 1730615400 * US, NULL, &isdst, &abbr);
    assert_int_equal(isdst, 0);
    assert_string_equal(abbr, "EST");
    aps__tz_lookup(ny, 1730611800 * US, NULL, &isdst, &abbr);
    assert_int_equal(isdst, 1);
    assert_string_equal(abbr, "EDT");
    /* Transition walking. */
    {
        aps_time next;
        aps__tz_next_transition(ny, 1710054000 * US - 1, &next);
        assert_i64(next, 1710054000 * US);
        aps__tz_next_transition(ny, 1710054000 * US, &next);
        assert_i64(next, 1730613600 * US);
    }
    aps__tz_to_local(ny, 1710054000 * US, &c, NULL);
    assert_int_equal(c.hour, 3);
}

static void test_london(void **state)
{
    const aps_tz *lon = zone("Europe/London");
    (void)state;

    check_from(lon, civ(2024, 3, 31, 1, 30, 0, 0), 1711848600, APS_LOCAL_GAP);
    check_local(lon, 1711848600 * US, "2024-03-31T02:30:00.000000", 3600);
    check_from(lon, civ(2024, 10, 27, 1, 30, 0, 0), 1729992600, APS_LOCAL_FOLD);
    check_cands(lon, civ(2024, 10, 27, 1, 30, 0, 0), 2, 1729989000, 1, 1729992600, 0);
    check_local(lon, 1705276800 * US, "2024-01-15T00:00:00.000000", 0);
    check_local(lon, 1721001600 * US, "2024-07-15T01:00:00.000000", 3600);
}

static void test_lord_howe(void **state)
{
    const aps_tz *lh = zone("Australia/Lord_Howe");
    (void)state;

    /* +10:30 standard, +11 in summer: the clock moves by 30 minutes. */
    check_local(lh, 1705276800 * US, "2024-01-15T11:00:00.000000", 39600);
    check_local(lh, 1721001600 * US, "2024-07-15T10:30:00.000000", 37800);
    /* 2024-10-06 02:00 -> 02:30: 02:15 is read at +10:30. */
    check_from(lh, civ(2024, 10, 6, 2, 15, 0, 0), 1728143100, APS_LOCAL_GAP);
    check_local(lh, 1728143100 * US, "2024-10-06T02:45:00.000000", 39600);
    /* 2024-04-07 02:00 -> 01:30: 01:45 is shown twice, +10:30 wins. */
    check_from(lh, civ(2024, 4, 7, 1, 45, 0, 0), 1712416500, APS_LOCAL_FOLD);
    check_cands(lh, civ(2024, 4, 7, 1, 45, 0, 0), 2, 1712414700, 1, 1712416500, 0);
    check_from(lh, civ(2024, 4, 7, 2, 0, 0, 0), 1712417400, APS_LOCAL_UNIQUE);
    check_from(lh, civ(2024, 4, 7, 1, 29, 59, 0), 1712413799, APS_LOCAL_UNIQUE);
}

static void test_dublin(void **state)
{
    const aps_tz *dub = zone("Europe/Dublin");
    int isdst;
    const char *abbr;
    (void)state;

    /* Since 1971 Irish law makes summer time (IST, +1) the standard time
     * and the TZif file marks winter (GMT) as DST: isdst = 1 in winter. */
    aps__tz_lookup(dub, 1705276800 * US, NULL, &isdst, &abbr);
    assert_int_equal(isdst, 1);
    assert_string_equal(abbr, "GMT");
    aps__tz_lookup(dub, 1721001600 * US, NULL, &isdst, &abbr);
    assert_int_equal(isdst, 0);
    assert_string_equal(abbr, "IST");
    check_local(dub, 1705276800 * US, "2024-01-15T00:00:00.000000", 0);
    check_local(dub, 1721001600 * US, "2024-07-15T01:00:00.000000", 3600);
    /* So the fold picks the isdst == 0 candidate, IST: the EARLIER one,
     * 00:30Z, unlike London at the same wall-clock time (pytz agrees). */
    check_from(dub, civ(2024, 10, 27, 1, 30, 0, 0), 1729989000, APS_LOCAL_FOLD);
    check_cands(dub, civ(2024, 10, 27, 1, 30, 0, 0), 2, 1729989000, 0, 1729992600, 1);
    check_from(dub, civ(1990, 10, 28, 1, 30, 0, 0), 657073800, APS_LOCAL_FOLD);
    /* The gap is read with the offset before it, GMT. */
    check_from(dub, civ(2024, 3, 31, 1, 30, 0, 0), 1711848600, APS_LOCAL_GAP);
    /* And in the far future through the footer IST-1GMT0,M10.5.0,M3.5.0/1. */
    aps__tz_lookup(dub, INT64_C(7263000000) * US, NULL, &isdst, &abbr); /* 2200-02 */
    assert_int_equal(isdst, 1);
    assert_string_equal(abbr, "GMT");
}

static void test_far_future(void **state)
{
    const aps_tz *ny = zone("America/New_York");
    (void)state;

    /* Past the file's last transition (2037): the footer rule, from the
     * precomputed table up to 2200 and evaluated directly afterwards. */
    check_from(ny, civ(2100, 3, 14, 2, 30, 0, 0), 4108692600, APS_LOCAL_GAP);
    check_local(ny, 4108694400 * US, "2100-03-14T04:00:00.000000", -14400);
    check_from(ny, civ(2100, 11, 7, 1, 30, 0, 0), 4129252200, APS_LOCAL_FOLD);
    check_cands(ny, civ(2100, 11, 7, 1, 30, 0, 0), 2, 4129248600, 1, 4129252200, 0);
    check_local(ny, 4118342400 * US, "2100-07-03T20:00:00.000000", -14400);
    /* Around the end of the precomputed table. */
    check_from(ny, civ(2200, 3, 9, 2, 30, 0, 0), 7263934200, APS_LOCAL_GAP);
    check_from(ny, civ(2200, 11, 2, 1, 30, 0, 0), 7284493800, APS_LOCAL_FOLD);
    check_from(ny, civ(2200, 12, 31, 23, 30, 0, 0), 7289670600, APS_LOCAL_UNIQUE);
    check_from(ny, civ(2201, 1, 1, 0, 30, 0, 0), 7289674200, APS_LOCAL_UNIQUE);
    check_local(ny, 7289654400 * US, "2200-12-31T19:00:00.000000", -18000);
    check_local(ny, 7289654399 * US, "2200-12-31T18:59:59.000000", -18000);
    check_from(ny, civ(2201, 3, 8, 2, 30, 0, 0), 7295383800, APS_LOCAL_GAP);
    check_from(ny, civ(2201, 11, 1, 1, 30, 0, 0), 7315943400, APS_LOCAL_FOLD);
    check_from(ny, civ(2202, 3, 14, 2, 30, 0, 0), 7327438200, APS_LOCAL_GAP);
    check_from(ny, civ(2202, 11, 7, 1, 30, 0, 0), 7347997800, APS_LOCAL_FOLD);
    check_from(ny, civ(2500, 3, 14, 2, 30, 0, 0), 16731473400, APS_LOCAL_GAP);
    check_from(ny, civ(2500, 11, 7, 1, 30, 0, 0), 16752033000, APS_LOCAL_FOLD);
    check_cands(ny, civ(2500, 11, 7, 1, 30, 0, 0), 2, 16752029400, 1, 16752033000, 0);
    check_local(ny, 16741123200 * US, "2500-07-03T20:00:00.000000", -14400);
    check_local(ny, 16754342400 * US, "2500-12-03T19:00:00.000000", -18000);
    check_from(ny, civ(9999, 3, 14, 2, 30, 0, 0), 253377012600, APS_LOCAL_GAP);
    check_from(ny, civ(9999, 11, 7, 1, 30, 0, 0), 253397572200, APS_LOCAL_FOLD);
}

static void test_pre_1970(void **state)
{
    const aps_tz *ny = zone("America/New_York"), *utc = zone("UTC");
    (void)state;

    check_local(ny, -302443200 * US, "1960-06-01T08:00:00.000000", -14400);
    check_local(ny, -1, "1969-12-31T18:59:59.999999", -18000);
    check_local(utc, -1, "1969-12-31T23:59:59.999999", 0);
    check_local(utc, -US, "1969-12-31T23:59:59.000000", 0);
    check_local(utc, -US - 1, "1969-12-31T23:59:58.999999", 0);
    /* Local mean time, before 1883-11-18: -4:56:02. */
    check_local(ny, -3786825600 * US, "1849-12-31T19:03:58.000000", -17762);
    check_from(ny, civ(1960, 4, 24, 2, 30, 0, 0), -305742600, APS_LOCAL_GAP);
    check_from(ny, civ(1960, 10, 30, 1, 30, 0, 0), -289416600, APS_LOCAL_FOLD);
    check_cands(ny, civ(1960, 10, 30, 1, 30, 0, 0), 2, -289420200, 1, -289416600, 0);
    /* Noon on 1883-11-18: LMT 12:03:58 became EST 12:00, a 3:58 fold. */
    check_cands(ny, civ(1883, 11, 18, 12, 0, 0, 0), 2, -2717651038, 0, -2717650800, 0);
    check_from(ny, civ(1883, 11, 18, 12, 0, 0, 0), -2717650800, APS_LOCAL_FOLD);
    check_from(ny, civ(1883, 11, 18, 11, 59, 0, 0), -2717651098, APS_LOCAL_UNIQUE);
    check_from(utc, civ(1969, 12, 31, 23, 59, 59, 999999), -1, APS_LOCAL_UNIQUE);
    check_from(utc, civ(1, 1, 1, 0, 0, 0, 0), -62135596800, APS_LOCAL_UNIQUE);
}

static void test_normalize_and_range(void **state)
{
    const aps_tz *utc = zone("UTC"), *ny = zone("America/New_York");
    aps_time t = 42, cand[2];
    int isdst[2], n = 9, kind;
    aps_civil c;
    (void)state;

    /* Fields out of range are carried like mktime does. */
    check_from(utc, civ(2023, 13, 1, 0, 0, 0, 0), 1704067200, APS_LOCAL_UNIQUE);
    check_from(utc, civ(2024, 3, 0, 0, 0, 0, 0), 1709164800, APS_LOCAL_UNIQUE); /* Feb 29 */
    check_from(utc, civ(2024, 1, 1, 24, 0, 0, 0), 1704153600, APS_LOCAL_UNIQUE);
    check_from(utc, civ(2024, 1, 1, 0, 0, -1, 0), 1704067199, APS_LOCAL_UNIQUE);
    check_from(utc, civ(2024, 0, 1, 0, 0, 0, 0), 1701388800, APS_LOCAL_UNIQUE); /* 2023-12 */
    c = civ(2024, 1, 1, 0, 0, 0, -1);
    assert_int_equal(aps__tz_from_local(utc, &c, &t, &kind), 0);
    assert_i64(t, 1704067200 * US - 1);
    c = civ(2024, 1, 1, 0, 0, 0, 2500000);
    assert_int_equal(aps__tz_from_local(utc, &c, &t, &kind), 0);
    assert_i64(t, 1704067202 * US + 500000);
    /* Day 31 of November in New York is December 1st. */
    check_from(ny, civ(2024, 11, 31, 12, 0, 0, 0), 1733072400, APS_LOCAL_UNIQUE);
    /* Beyond aps_time: ERANGE, nothing written. */
    t = 42;
    c = civ(300000, 1, 1, 0, 0, 0, 0);
    assert_int_equal(aps__tz_from_local(ny, &c, &t, &kind), APS_ERANGE);
    assert_i64(t, 42);
    c = civ(-300000, 1, 1, 0, 0, 0, 0);
    assert_int_equal(aps__tz_from_local(utc, &c, &t, NULL), APS_ERANGE);
    assert_int_equal(aps__tz_local_candidates(ny, &c, cand, isdst, &n), APS_ERANGE);
    assert_int_equal(n, 0);
    c = civ(INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX);
    assert_int_equal(aps__tz_from_local(ny, &c, &t, NULL), APS_ERANGE);
    c = civ(INT_MIN, INT_MIN, INT_MIN, INT_MIN, INT_MIN, INT_MIN, INT_MIN);
    assert_int_equal(aps__tz_from_local(ny, &c, &t, NULL), APS_ERANGE);
    /* Year 200000 still fits. */
    c = civ(200000, 6, 1, 0, 0, 0, 0);
    assert_int_equal(aps__tz_from_local(ny, &c, &t, &kind), 0);
    assert_int_equal(kind, APS_LOCAL_UNIQUE);
    check_roundtrip(ny, t, "year 200000");
    /* The extremes of aps_time convert without overflow. */
    aps__tz_to_local(ny, INT64_MAX, &c, NULL);
    assert_int_equal(c.year, 294247);
    aps__tz_to_local(ny, APS_TIME_NONE, &c, NULL);
    assert_int_equal(c.year, -290308);
    aps__tz_to_local(utc, INT64_MAX, &c, NULL);
    assert_int_equal(c.usec, 775807);
}

static void test_unknown_and_bad_names(void **state)
{
    static const char *const bad[] = {
        "Foo/Bar", "../etc/passwd", "/etc/passwd", "America/../UTC", "", "America/",
        "America//New_York", "America/New York", "America", "zone.tab", ".hidden",
        "America/.New_York", "Mars/Olympus_Mons", "UTC+25", "utc\n", "Europe/Paris;rm",
    };
    const aps_tz *tz = (const aps_tz *)1;
    aps_error e;
    char name[400], want[300];
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        assert_int_equal(aps__tz_get(bad[i], &tz, &e), APS_ENOENT);
        assert_int_equal(e.code, APS_ENOENT);
        snprintf(want, sizeof(want), "timezone: unknown time zone \"%s\"", bad[i]);
        assert_string_equal(e.msg, want);
        assert_ptr_equal(tz, (const aps_tz *)1); /* untouched */
    }
    assert_int_equal(aps__tz_get("Foo/Bar", &tz, NULL), APS_ENOENT); /* err optional */
    assert_int_equal(aps__tz_get(NULL, &tz, &e), APS_ENOENT);
    memset(name, 'A', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_int_equal(aps__tz_get(name, &tz, &e), APS_ENOENT);
    /* Names are case-sensitive like the files. */
    assert_int_equal(aps__tz_get("america/new_york", &tz, &e), APS_ENOENT);
    /* UTC is built in; other UTC names load from files. */
    assert_int_equal(aps__tz_get("UTC", &tz, &e), 0);
    assert_ptr_equal(tz, aps__tz_utc());
    assert_string_equal(aps__tz_name(tz), "UTC");
    assert_non_null(zone("Etc/UTC"));
    assert_non_null(zone("Etc/GMT+5"));
    check_local(zone("Etc/GMT+5"), 0, "1969-12-31T19:00:00.000000", -18000);
}

static char tmpdir[1024];

static void write_file(const char *rel, const void *data, size_t len)
{
    char path[2048];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void test_tzdir(void **state)
{
    const char *base = getenv("TEST_TMPDIR");
    unsigned char buf[512];
    char sub[1100];
    const aps_tz *tz;
    aps_error e;
    size_t n;
    (void)state;

    snprintf(tmpdir, sizeof(tmpdir), "%s/tzdirXXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(tmpdir));
    snprintf(sub, sizeof(sub), "%s/Test", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    n = make_tzif(buf, '2', -18000, "EST", "EST5EDT,M3.2.0,M11.1.0");
    write_file("Test/Eastern", buf, n);
    write_file("Test/Bad", "TZif2 and then garbage, not enough for a header", 48);
    write_file("Test/Text", "# not a zone\n", 13);

    assert_int_equal(setenv("TZDIR", tmpdir, 1), 0);
    tz = zone("Test/Eastern");
    check_from(tz, civ(2024, 3, 10, 2, 30, 0, 0), 1710055800, APS_LOCAL_GAP);
    check_from(tz, civ(2024, 11, 3, 1, 30, 0, 0), 1730615400, APS_LOCAL_FOLD);
    assert_int_equal(aps__tz_get("Test/Bad", &tz, &e), APS_EINVAL);
    assert_non_null(strstr(e.msg, "timezone: \"Test/Bad\": invalid TZif data: "));
    assert_int_equal(aps__tz_get("Test/Text", &tz, &e), APS_ENOENT);
    assert_string_equal(e.msg, "timezone: unknown time zone \"Test/Text\"");
    assert_int_equal(aps__tz_get("Test", &tz, &e), APS_ENOENT); /* a directory */
    /* A system zone not loaded yet is not found there; UTC always is. */
    assert_int_equal(aps__tz_get("Asia/Ulaanbaatar", &tz, &e), APS_ENOENT);
    assert_int_equal(aps__tz_get("UTC", &tz, &e), 0);
    /* An empty TZDIR means the default. */
    assert_int_equal(setenv("TZDIR", "", 1), 0);
    assert_int_equal(aps__tz_get("Asia/Ulaanbaatar", &tz, &e), 0);
    assert_int_equal(unsetenv("TZDIR"), 0);
    /* Cached zones stay, wherever they came from. */
    assert_int_equal(aps__tz_get("Test/Eastern", &tz, &e), 0);
    assert_int_equal(aps__tz_get("Test/Bad", &tz, &e), APS_ENOENT);
    snprintf(sub, sizeof(sub), "rm -rf '%s'", tmpdir);
    assert_int_equal(system(sub), 0);
}

/* ---- footer rules --------------------------------------------------------------- */

/* Transitions of rule-only zones, from Python's zoneinfo (the zero-based
 * 'n' form from glibc: CPython reads it one day late). */
static const struct rule_case {
    const char *footer;
    int32_t type0_off;
    const char *type0_abbr;
    int64_t at;
    int32_t before, after;
} rule_cases[] = {
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(-2171552400), -18000, -14400},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(-2150992800), -14400, -18000},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(-25722000), -18000, -14400},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(-5162400), -14400, -18000},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(1710054000), -18000, -14400},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(1730613600), -14400, -18000},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(5686009200), -18000, -14400},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(5706568800), -14400, -18000},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(13575625200), -18000, -14400},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(13596184800), -14400, -18000},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(221851206000), -18000, -14400},
    {"EST5EDT,M3.2.0,M11.1.0", -18000, "EST", INT64_C(221871765600), -14400, -18000},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(-2169190800), 39600, 37800},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(-2153464200), 37800, 39600},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(-23360400), 39600, 37800},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(-7633800), 37800, 39600},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(1712415600), 39600, 37800},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(1728142200), 37800, 39600},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(5688370800), 39600, 37800},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(5704097400), 37800, 39600},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(13577382000), 39600, 37800},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(13593108600), 37800, 39600},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(221853567600), 39600, 37800},
    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, "+1030", INT64_C(221869294200), 37800, 39600},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(-2172337200), -10800, -7200},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(-2151604800), -7200, -10800},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(-26420400), -10800, -7200},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(-5688000), -7200, -10800},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(1709269200), -10800, -7200},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(1730001600), -7200, -10800},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(5685397200), -10800, -7200},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(5706129600), -7200, -10800},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(13574667600), -10800, -7200},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(13595400000), -7200, -10800},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(221850507600), -10800, -7200},
    {"XXX3YYY,J60/2,J300/2", -10800, "XXX", INT64_C(221871240000), -7200, -10800},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(-2172337200), -10800, -7200},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(-2151604800), -7200, -10800},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(-26420400), -10800, -7200},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(-5688000), -7200, -10800},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(1709182800), -10800, -7200},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(1729915200), -7200, -10800},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(5685397200), -10800, -7200},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(5706129600), -7200, -10800},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(13574581200), -10800, -7200},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(13595313600), -7200, -10800},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(221850507600), -10800, -7200},
    {"XXX3YYY,59,299", -10800, "XXX", INT64_C(221871240000), -7200, -10800},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(-2169759600), -7200, -3600},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(-2151615600), -3600, -7200},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(-23929200), -7200, -3600},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(-5785200), -3600, -7200},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(1711846800), -7200, -3600},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(1729990800), -3600, -7200},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(5687802000), -7200, -3600},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(5705946000), -3600, -7200},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(13576813200), -7200, -3600},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(13595562000), -3600, -7200},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(221852998800), -7200, -3600},
    {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, "-02", INT64_C(221871142800), -3600, -7200},
    {"EST5EDT,0/0,J365/25", -18000, "EST", INT64_C(-2177409600), -14400, -14400},
    {"EST5EDT,0/0,J365/25", -18000, "EST", INT64_C(1704110400), -14400, -14400},
    {"EST5EDT,0/0,J365/25", -18000, "EST", INT64_C(13569508800), -14400, -14400},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(-2169165600), 3600, 7200},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(-2152227600), 7200, 3600},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(-23335200), 3600, 7200},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(-6397200), 7200, 3600},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(1712440800), 3600, 7200},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(1729378800), 7200, 3600},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(5688396000), 3600, 7200},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(5705334000), 7200, 3600},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(13577407200), 3600, 7200},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(13594950000), 7200, 3600},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(221853592800), 3600, 7200},
    {"XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, "XXX", INT64_C(221870530800), 7200, 3600},
    {"IST-5:30", 19800, "IST", INT64_C(-2177409600), 19800, 19800},
    {"IST-5:30", 19800, "IST", INT64_C(1704110400), 19800, 19800},
    {"IST-5:30", 19800, "IST", INT64_C(13569508800), 19800, 19800},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(-2170639800), 12600, 16200},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(-2154745800), 16200, 12600},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(-24723000), 12600, 16200},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(-8829000), 16200, 12600},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(1710966600), 12600, 16200},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(1726860600), 16200, 12600},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(5687094600), 12600, 16200},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(5702988600), 16200, 12600},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(13576365000), 12600, 16200},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(13592259000), 16200, 12600},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(221852205000), 12600, 16200},
    {"<+0330>-3:30<+0430>,J79/24,J263/24", 12600, "+0330", INT64_C(221868099000), 16200, 12600},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(-2169194430), 49530, 45900},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(-2154074400), 45900, 49530},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(-23364030), 49530, 45900},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(-8244000), 45900, 49530},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(1712411970), 49530, 45900},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(1727532000), 45900, 49530},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(5688367170), 49530, 45900},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(5703487200), 45900, 49530},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(13577378370), 49530, 45900},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(13592498400), 45900, 49530},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(221853563970), 49530, 45900},
    {"AAA-12:45BBB-13:45:30,M9.5.0/2:45,M4.1.0/3:45", 45900, "AAA", INT64_C(221868684000), 45900, 49530},
    {"AAA3BBB", -10800, "AAA", INT64_C(-2171559600), -10800, -7200},
    {"AAA3BBB", -10800, "AAA", INT64_C(-2151000000), -7200, -10800},
    {"AAA3BBB", -10800, "AAA", INT64_C(-25729200), -10800, -7200},
    {"AAA3BBB", -10800, "AAA", INT64_C(-5169600), -7200, -10800},
    {"AAA3BBB", -10800, "AAA", INT64_C(1710046800), -10800, -7200},
    {"AAA3BBB", -10800, "AAA", INT64_C(1730606400), -7200, -10800},
    {"AAA3BBB", -10800, "AAA", INT64_C(5686002000), -10800, -7200},
    {"AAA3BBB", -10800, "AAA", INT64_C(5706561600), -7200, -10800},
    {"AAA3BBB", -10800, "AAA", INT64_C(13575618000), -10800, -7200},
    {"AAA3BBB", -10800, "AAA", INT64_C(13596177600), -7200, -10800},
    {"AAA3BBB", -10800, "AAA", INT64_C(221851198800), -10800, -7200},
    {"AAA3BBB", -10800, "AAA", INT64_C(221871758400), -7200, -10800},
};

static void test_footer_rules(void **state)
{
    unsigned char buf[512];
    size_t i, n;
    int checked = 0;
    (void)state;

    for (i = 0; i < sizeof(rule_cases) / sizeof(rule_cases[0]); i++) {
        const struct rule_case *rc = &rule_cases[i];
        aps_tz *tz = NULL;
        aps_error e;
        int32_t off;
        aps_civil c;
        int64_t T = rc->at;

        n = make_tzif(buf, '3', rc->type0_off, rc->type0_abbr, rc->footer);
        if (aps__tz_parse(rc->footer, buf, n, &tz, &e) != 0)
            fail_msg("%s: %s", rc->footer, e.msg);
        aps__tz_to_local(tz, (T - 1) * US, &c, &off);
        if (off != rc->before)
            fail_msg("%s at %lld-1: offset %d, want %d", rc->footer, (long long)T, off, rc->before);
        aps__tz_to_local(tz, T * US, &c, &off);
        if (off != rc->after)
            fail_msg("%s at %lld: offset %d, want %d", rc->footer, (long long)T, off, rc->after);
        if (rc->after > rc->before) {
            aps__civil_from_secs(T + rc->before, 0, &c);
            check_from(tz, c, T, APS_LOCAL_GAP);
        } else if (rc->after < rc->before) {
            aps__civil_from_secs(T + rc->after, 0, &c);
            check_cands(tz, c, 2, T - (rc->before - rc->after), 1, T, 0);
            check_from(tz, c, T, APS_LOCAL_FOLD);
        } else {
            /* DST all year: never a transition */
            aps_time next;
            aps__tz_next_transition(tz, T * US, &next);
            assert_i64(next, APS_TIME_NONE);
        }
        check_roundtrip(tz, T * US, rc->footer);
        check_roundtrip(tz, T * US - 1, rc->footer);
        aps__tz_free(tz);
        checked++;
    }
    assert_true(checked > 100);
}

/* Zones of a file with transitions and a footer that does not match its
 * last one, a bad footer, and other footer forms. */
static void test_footer_forms(void **state)
{
    unsigned char buf[512];
    size_t n, i;
    aps_tz *tz;
    aps_error e;
    int32_t off;
    aps_civil c;
    static const char *const bad[] = {
        "EST",           "EST5EDT,M3.2.0",  "EST5EDT,M13.2.0,M11.1.0", "EST5EDT,M3.6.0,M11.1.0",
        "EST5EDT,M3.2.7,M11.1.0", "EST5EDT,J0,J365", "EST5EDT,366,1", "EST5EDT,M3.2.0/168,M11.1.0",
        "EST25",         "<EST5",           "EST5EDT,M3.2.0,M11.1.0x", "5EDT",
        "EST5EDT4:60",   "<+0330>-3:30<>",  "EST5EDT,M3.2.0/,M11.1.0",
    };
    (void)state;

    /* No rule after the DST name: POSIX leaves it to the implementation;
     * like tzcode, the US rules. */
    n = make_tzif(buf, '2', -10800, "AAA", "AAA3BBB");
    assert_int_equal(aps__tz_parse("t", buf, n, &tz, &e), 0);
    aps__tz_to_local(tz, 1720000000 * US, &c, &off);
    assert_int_equal(off, -7200);
    aps__tz_free(tz);
    /* Standard time only. */
    n = make_tzif(buf, '2', 0, "XXX", "<+0545>-5:45");
    assert_int_equal(aps__tz_parse("t", buf, n, &tz, &e), 0);
    check_local(tz, 0, "1970-01-01T05:45:00.000000", 20700);
    aps__tz_free(tz);
    /* DST that lasts a year or more (it ends after the next one starts)
     * is perpetual DST, as tzcode and Python read it. */
    n = make_tzif(buf, '3', -18000, "EST", "EST5EDT,0/2,J365/34");
    assert_int_equal(aps__tz_parse("t", buf, n, &tz, &e), 0);
    {
        static const int64_t at[] = {-2208963601, -2208963600, -2208938400, 1704092399,
                                     1704117600, 13569465600};
        aps_time next;
        int isdst;
        const char *abbr;
        for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
            aps__tz_lookup(tz, at[i] * US, &off, &isdst, &abbr);
            assert_int_equal(off, -14400);
            assert_int_equal(isdst, 1);
            assert_string_equal(abbr, "EDT");
            aps__tz_next_transition(tz, at[i] * US, &next);
            assert_i64(next, APS_TIME_NONE);
            check_roundtrip(tz, at[i] * US, "perpetual DST");
        }
    }
    aps__tz_free(tz);
    /* No footer at all (tolerated), an empty footer. */
    n = make_tzif(buf, '2', 3600, "CET", NULL);
    assert_int_equal(aps__tz_parse("t", buf, n, &tz, &e), 0);
    check_local(tz, 0, "1970-01-01T01:00:00.000000", 3600);
    aps__tz_free(tz);
    n = make_tzif(buf, '2', 3600, "CET", "");
    assert_int_equal(aps__tz_parse("t", buf, n, &tz, &e), 0);
    check_local(tz, 0, "1970-01-01T01:00:00.000000", 3600);
    aps__tz_free(tz);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = make_tzif(buf, '3', 0, "XXX", bad[i]);
        memset(&e, 0, sizeof(e));
        if (aps__tz_parse("t", buf, n, &tz, &e) != APS_EINVAL)
            fail_msg("footer \"%s\" accepted", bad[i]);
        assert_string_equal(e.msg, "timezone: \"t\": invalid TZif data: bad TZ string in footer");
    }
}

/* ---- TZif versions and robustness -------------------------------------------------- */

static size_t v1_len(const unsigned char *d)
{
    uint32_t c[6];
    int i;

    for (i = 0; i < 6; i++)
        c[i] = (uint32_t)d[20 + 4 * i] << 24 | (uint32_t)d[21 + 4 * i] << 16 |
               (uint32_t)d[22 + 4 * i] << 8 | d[23 + 4 * i];
    /* isut, isstd, leap, time, type, char */
    return 44 + (size_t)c[3] * 5 + (size_t)c[4] * 6 + c[5] + (size_t)c[2] * 8 + c[1] + c[0];
}

static void test_version1(void **state)
{
    size_t len, l1, i;
    unsigned char *d = slurp(ZONEINFO "/America/New_York", &len), *v1;
    aps_tz *z1, *z2;
    aps_error e;
    (void)state;

    assert_non_null(d);
    assert_int_equal(aps__tz_parse("ny2", d, len, &z2, &e), 0);
    /* The first header and block alone, marked version 1: a v1 file. */
    l1 = v1_len(d);
    assert_true(l1 < len);
    v1 = malloc(l1);
    assert_non_null(v1);
    memcpy(v1, d, l1);
    v1[4] = 0;
    if (aps__tz_parse("ny1", v1, l1, &z1, &e) != 0)
        fail_msg("v1: %s", e.msg);
    /* Same answers over the 32-bit range. */
    for (i = 0; i < 20000; i++) {
        aps_time t = rnd_time(-2147483648LL + 1, 2147483647LL);
        aps_civil c1, c2;
        int32_t o1, o2;
        aps__tz_to_local(z1, t, &c1, &o1);
        aps__tz_to_local(z2, t, &c2, &o2);
        assert_int_equal(o1, o2);
        check_roundtrip(z1, t, "v1");
    }
    check_from(z1, civ(2024, 3, 10, 2, 30, 0, 0), 1710055800, APS_LOCAL_GAP);
    check_from(z1, civ(2024, 11, 3, 1, 30, 0, 0), 1730615400, APS_LOCAL_FOLD);
    aps__tz_free(z1);
    /* A version 4 header reads the same. */
    d[4] = '4';
    d[v1_len(d) + 4] = '4';
    assert_int_equal(aps__tz_parse("ny4", d, len, &z1, &e), 0);
    check_from(z1, civ(2100, 11, 7, 1, 30, 0, 0), 4129252200, APS_LOCAL_FOLD);
    aps__tz_free(z1);
    d[4] = '5';
    assert_int_equal(aps__tz_parse("ny5", d, len, &z1, &e), APS_EINVAL);
    assert_string_equal(e.msg, "timezone: \"ny5\": invalid TZif data: unsupported TZif version");
    aps__tz_free(z2);
    free(v1);
    free(d);
}

/* Every prefix of a real file is rejected cleanly, except the one that
 * stops right before the (optional) footer. */
static void test_truncated(void **state)
{
    size_t len, cut, footer_at;
    unsigned char *d = slurp(ZONEINFO "/Australia/Lord_Howe", &len), *copy;
    aps_tz *tz;
    aps_error e;
    (void)state;

    assert_non_null(d);
    footer_at = len - 1;
    while (footer_at > 0 && d[footer_at - 1] != '\n')
        footer_at--;
    footer_at--; /* the footer's first newline */
    for (cut = 0; cut < len; cut++) {
        int rc;
        /* An exact-size heap copy so ASan sees any read past the end. */
        copy = malloc(cut ? cut : 1);
        assert_non_null(copy);
        memcpy(copy, d, cut);
        memset(&e, 0, sizeof(e));
        rc = aps__tz_parse("lh", copy, cut, &tz, &e);
        if (cut == footer_at) {
            assert_int_equal(rc, 0);
            aps__tz_free(tz);
        } else {
            if (rc != APS_EINVAL)
                fail_msg("prefix of %zu bytes: rc %d", cut, rc);
            assert_int_equal(e.code, APS_EINVAL);
            assert_non_null(strstr(e.msg, "invalid TZif data: "));
        }
        free(copy);
    }
    free(d);
}

/* Specific corruptions, each with its message. */
static void test_corrupt(void **state)
{
    size_t len, b2, data2, tc, typ;
    unsigned char *d = slurp(ZONEINFO "/America/New_York", &len), *x;
    aps_tz *tz;
    aps_error e;
    (void)state;

    assert_non_null(d);
    x = malloc(len);
    assert_non_null(x);
    b2 = v1_len(d);  /* second header */
    data2 = b2 + 44; /* 64-bit block */
    tc = (size_t)d[b2 + 32] << 24 | (size_t)d[b2 + 33] << 16 | (size_t)d[b2 + 34] << 8 | d[b2 + 35];
    typ = data2 + tc * 9; /* the types */
#define CORRUPT(stmt, why)                                                        \
    do {                                                                          \
        memcpy(x, d, len);                                                        \
        stmt;                                                                     \
        memset(&e, 0, sizeof(e));                                                 \
        assert_int_equal(aps__tz_parse("ny", x, len, &tz, &e), APS_EINVAL);       \
        assert_string_equal(e.msg, "timezone: \"ny\": invalid TZif data: " why); \
    } while (0)
    CORRUPT(x[0] = 'X', "not a TZif file (bad magic)");
    CORRUPT(x[b2] = 'X', "bad second header");
    CORRUPT(put32(x + b2 + 36, 0), "counts in header out of range");    /* typecnt 0 */
    CORRUPT(put32(x + b2 + 36, 300), "counts in header out of range");  /* typecnt > 256 */
    CORRUPT(put32(x + b2 + 32, 5000), "counts in header out of range"); /* timecnt */
    CORRUPT(put32(x + b2 + 32, tc + 100), "truncated data block");
    CORRUPT(put32(x + b2 + 24, 1), "counts in header out of range"); /* isstdcnt */
    CORRUPT(put32(x + 32, 0x10000000), "truncated version 1 data block");
    CORRUPT(memcpy(x + data2 + 8, x + data2, 8), "transition times not ascending");
    CORRUPT(x[data2 + tc * 8 + 3] = 200, "transition to an undefined type");
    CORRUPT(put32(x + typ, 100000), "UTC offset out of range");
    CORRUPT(x[typ + 4] = 2, "bad local time type");
    CORRUPT(x[typ + 5] = 250, "bad local time type");
    CORRUPT(x[len - 1] = 'X', "unterminated or overlong footer");
    CORRUPT(x[len - 2] = '!', "bad TZ string in footer");
    CORRUPT(x[len - 1] = 0, "unterminated or overlong footer");
    /* A transition far beyond any date. */
    CORRUPT((x[data2 + (tc - 1) * 8] = 0x7f), "transition time out of range");
#undef CORRUPT
    free(x);
    free(d);
}

/* Random mutations of small real files: no crash (ASan/UBSan watch), and
 * whatever parses converts sanely. */
static void test_mutations(void **state)
{
    static const char *const files[] = {"Asia/Kolkata", "Europe/Dublin", "America/Nuuk"};
    size_t f, len, i, j;
    int accepted = 0, rejected = 0;
    (void)state;

    for (f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char path[256];
        unsigned char *d, *x;
        snprintf(path, sizeof(path), ZONEINFO "/%s", files[f]);
        d = slurp(path, &len);
        assert_non_null(d);
        x = malloc(len);
        assert_non_null(x);
        for (i = 0; i < 3000; i++) {
            aps_tz *tz;
            aps_error e;
            size_t nflip = 1 + rnd() % 4;
            memcpy(x, d, len);
            for (j = 0; j < nflip; j++)
                x[rnd() % len] = (unsigned char)rnd();
            if (aps__tz_parse("m", x, len, &tz, &e) == 0) {
                int k;
                for (k = 0; k < 20; k++) {
                    aps_time t = rnd_time(-5364662400, 13569465600), cand[2];
                    aps_civil c;
                    int isdst[2], n;
                    aps__tz_to_local(tz, t, &c, NULL);
                    assert_int_equal(aps__tz_local_candidates(tz, &c, cand, isdst, &n), 0);
                    assert_true(n >= 0 && n <= 2);
                    assert_int_equal(aps__tz_from_local(tz, &c, &t, NULL), 0);
                }
                aps__tz_free(tz);
                accepted++;
            } else {
                assert_int_equal(e.code, APS_EINVAL);
                rejected++;
            }
        }
        free(x);
        free(d);
    }
    print_message("mutations: %d accepted, %d rejected\n", accepted, rejected);
    assert_true(accepted > 0 && rejected > 0);
}

/* ---- concurrency and speed --------------------------------------------------------- */

static const char *const race_zones[] = {"Europe/Paris", "Asia/Tokyo", "America/Chicago",
                                         "Africa/Cairo", "Pacific/Auckland", "Asia/Kolkata"};

static int race_main(void *arg)
{
    const aps_tz *got[6];
    size_t i;
    int round;
    (void)arg;

    for (round = 0; round < 50; round++) {
        for (i = 0; i < 6; i++) {
            if (aps__tz_get(race_zones[i], &got[i], NULL) != 0)
                return 1;
        }
    }
    for (i = 0; i < 6; i++) {
        aps_civil c;
        aps__tz_to_local(got[i], 0, &c, NULL);
    }
    return 0;
}

static void test_concurrent_get(void **state)
{
    thrd_t th[8];
    int i, res;
    const aps_tz *a, *b;
    (void)state;

    for (i = 0; i < 8; i++)
        assert_int_equal(thrd_create(&th[i], race_main, NULL), thrd_success);
    for (i = 0; i < 8; i++) {
        assert_int_equal(thrd_join(th[i], &res), thrd_success);
        assert_int_equal(res, 0);
    }
    /* One zone object per name. */
    a = zone("Asia/Tokyo");
    b = zone("Asia/Tokyo");
    assert_ptr_equal(a, b);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Informational (machines differ): conversions per second. */
static void test_speed(void **state)
{
    const aps_tz *ny = zone("America/New_York");
    aps_time ts[4096];
    int64_t acc = 0;
    double t0, t1, t2;
    int i, r;
    const int rounds = 500;
    (void)state;

    for (i = 0; i < 4096; i++)
        ts[i] = rnd_time(0, 2145916800); /* 1970-2038 */
    t0 = mono();
    for (r = 0; r < rounds; r++) {
        for (i = 0; i < 4096; i++) {
            aps_civil c;
            aps__tz_to_local(ny, ts[i], &c, NULL);
            acc += c.day;
        }
    }
    t1 = mono();
    for (r = 0; r < rounds / 4; r++) {
        for (i = 0; i < 4096; i++) {
            aps_civil c = civ(1970 + i % 68, 1 + i % 12, 1 + i % 28, i % 24, i % 60, 0, 0);
            aps_time t;
            aps__tz_from_local(ny, &c, &t, NULL);
            acc ^= t;
        }
    }
    t2 = mono();
    print_message("America/New_York: to_local %.1f M/s, from_local %.1f M/s (%lld)\n",
                  rounds * 4096.0 / (t1 - t0) / 1e6, rounds / 4 * 4096.0 / (t2 - t1) / 1e6,
                  (long long)(acc & 1));
    assert_true(acc != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_civil),
        cmocka_unit_test(test_all_system_zones),
        cmocka_unit_test(test_all_zone_transitions),
        cmocka_unit_test(test_new_york),
        cmocka_unit_test(test_london),
        cmocka_unit_test(test_lord_howe),
        cmocka_unit_test(test_dublin),
        cmocka_unit_test(test_far_future),
        cmocka_unit_test(test_pre_1970),
        cmocka_unit_test(test_normalize_and_range),
        cmocka_unit_test(test_unknown_and_bad_names),
        cmocka_unit_test(test_tzdir),
        cmocka_unit_test(test_footer_rules),
        cmocka_unit_test(test_footer_forms),
        cmocka_unit_test(test_version1),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_concurrent_get),
        cmocka_unit_test(test_speed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
