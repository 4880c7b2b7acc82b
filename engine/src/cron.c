/*
 * cron.c: APScheduler 3.9.1's CronTrigger, compiled and searched in C.
 *
 * Parsing follows apscheduler/triggers/cron/{fields,expressions}.py: the
 * same regular expressions (hand-written matchers here, including their
 * quirks: month and weekday names are matched as a prefix, so "mon-fri/2"
 * is "mon-fri"), the same constructor and validate_range() checks, and the
 * same default values. Messages are ours and name the field.
 *
 * The search is CronTrigger.get_next_fire_time() replayed step by step. The
 * state is a wall-clock date and time plus the UTC offset it is read with,
 * which is what a pytz datetime is: _set_field_value() makes the state from
 * localize() (a non-existent wall time stays as it is, read with the offset
 * before the gap), _increment_field_value() adds the wall-clock difference
 * to the instant and normalizes. Keeping that representation is what makes
 * the results match APScheduler at DST transitions to the microsecond.
 * Speed comes from precompiled bitsets (the next allowed value of a field
 * is one count-trailing-zeros) and from skipping checks of fields that
 * accept every value, which cannot change the outcome.
 */
#include "cron.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civil.h"

enum {
    F_YEAR = APS_CRON_YEAR,
    F_MONTH = APS_CRON_MONTH,
    F_DAY = APS_CRON_DAY,
    F_WEEK = APS_CRON_WEEK,
    F_DOW = APS_CRON_DAY_OF_WEEK,
    F_HOUR = APS_CRON_HOUR,
    F_MINUTE = APS_CRON_MINUTE,
    F_SECOND = APS_CRON_SECOND,
    F_COUNT = APS_CRON_FIELDS
};

/* Expression kinds: one per APScheduler expression class. */
enum {
    EX_ALL,         /* AllExpression: "*", "*\/n" */
    EX_RANGE,       /* RangeExpression: "a", "a-b", "a-b/n", "a/n" */
    EX_MONTHS,      /* MonthRangeExpression: "jan", "jan-mar" */
    EX_WEEKDAYS,    /* WeekdayRangeExpression: "mon", "mon-fri" */
    EX_NTH,         /* WeekdayPositionExpression: "2nd fri", "last fri" */
    EX_LAST,        /* LastDayOfMonthExpression: "last" */
    EX_CRONTAB_DOW  /* a crontab day-of-week field (standard numbering) */
};

/* Values that stand for "none" / "very large" while parsing numbers. */
#define NO_VALUE (-1)
#define BIG_VALUE 1000000000

typedef struct cron_expr {
    uint8_t kind;
    uint8_t nth;     /* EX_NTH: 0-4 = 1st-5th, 5 = last */
    uint8_t weekday; /* EX_NTH: 0 = Monday */
    int32_t first;
    int32_t last; /* NO_VALUE: open-ended ("a/n"), APScheduler's None */
    int32_t step; /* 0: none */
} cron_expr;

struct aps_cron {
    /* Values allowed by the static expressions of each field (not year):
     * bit v set = value v allowed. */
    uint64_t bits[F_COUNT];
    /* day: "xth y" / "last y" positions, bit nth * 7 + weekday. */
    uint64_t nth;
    /* day: "last" given. */
    int last_day;
    /* The field accepts every value in its range, so APScheduler's check
     * of it never changes anything (not used for the year). */
    int all[F_COUNT];
    int is_default[F_COUNT];
    /* The day_of_week field came from a crontab string. */
    int crontab_dow;
    /* exprs[first[f] .. first[f] + count[f]) are field f's expressions. */
    uint32_t first[F_COUNT];
    uint32_t count[F_COUNT];
    /* Lazily computed (see feasible_from()): bit (y % 400) is set when a
     * date of a year y matches month, day, week and day_of_week. */
    int feasible_known;
    uint64_t feasible[7];
    size_t nexprs;
    cron_expr exprs[];
};

static const char *const field_names[F_COUNT] = {
    "year", "month", "day", "week", "day_of_week", "hour", "minute", "second",
};
static const int fmin[F_COUNT] = {1970, 1, 1, 1, 0, 0, 0, 0};
static const int fmax[F_COUNT] = {9999, 12, 31, 53, 6, 23, 59, 59};
/* fields.py DEFAULT_VALUES. */
static const char *const default_values[F_COUNT] = {"*", "1", "1", "*", "*", "0", "0", "0"};

static const char *const weekday_names[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
static const char *const month_names[12] = {"jan", "feb", "mar", "apr", "may", "jun",
                                            "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const nth_names[6] = {"1st", "2nd", "3rd", "4th", "5th", "last"};
/* Standard crontab day-of-week names, 0 = Sunday. */
static const char *const crontab_dow_names[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

#define IS_REAL(f) ((f) != F_WEEK && (f) != F_DOW)

const char *aps__cron_field_name(int f)
{
    return f >= 0 && f < F_COUNT ? field_names[f] : NULL;
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

typedef struct slice {
    const char *p;
    size_t n;
} slice;

/* Where an expression came from, for messages: "hour" or "crontab: hour". */
typedef struct parse_ctx {
    const char *prefix; /* "" or "crontab: " */
    int field;
    aps_error *err;
} parse_ctx;

static int fail(const parse_ctx *cx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(const parse_ctx *cx, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!cx->err)
        return APS_EINVAL;
    cx->err->code = APS_EINVAL;
    n = snprintf(cx->err->msg, sizeof cx->err->msg, "%s%s: ", cx->prefix,
                 cx->field >= 0 ? field_names[cx->field] : "crontab");
    if (n < 0 || (size_t)n >= sizeof cx->err->msg)
        return APS_EINVAL;
    va_start(ap, fmt);
    vsnprintf(cx->err->msg + n, sizeof cx->err->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return APS_EINVAL;
}

/* Quoted expressions in messages are cut to keep the message readable. */
#define QMAX 64
#define QLEN(s) ((int)((s).n > QMAX ? QMAX : (s).n))

/* ------------------------------------------------------------------ */
/* Lexing helpers mirroring Python's str and re behaviour               */
/* ------------------------------------------------------------------ */

/* str.isspace() for ASCII: includes the \x1c-\x1f separators. */
static int py_space(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1c && ch <= 0x1f);
}

static slice py_strip(slice s)
{
    while (s.n && py_space((unsigned char)s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n && py_space((unsigned char)s.p[s.n - 1]))
        s.n--;
    return s;
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static int is_alpha(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* re's \w; bytes of a multi-byte UTF-8 character count as word characters
 * (Python matches Unicode letters there). */
static int is_word(char ch)
{
    return is_alpha(ch) || is_digit(ch) || ch == '_' || (unsigned char)ch >= 0x80;
}

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* re's `$` without MULTILINE: the end, or a final newline before it. */
static int at_end(const char *p, const char *end)
{
    return p == end || (p + 1 == end && *p == '\n');
}

/* Reads \d+ at *pp (at least one digit), saturating at BIG_VALUE: Python's
 * int() has no limit, and any value that large is out of every range. */
static int read_digits(const char **pp, const char *end, int32_t *out)
{
    const char *p = *pp;
    int64_t v = 0;

    if (p >= end || !is_digit(*p))
        return 0;
    while (p < end && is_digit(*p)) {
        v = v * 10 + (*p - '0');
        if (v > BIG_VALUE)
            v = BIG_VALUE;
        p++;
    }
    *pp = p;
    *out = (int32_t)v;
    return 1;
}

/* Case-insensitive equality of a slice with a lowercase name. */
static int name_eq(slice s, const char *name)
{
    size_t i;

    for (i = 0; i < s.n; i++)
        if (!name[i] || lower(s.p[i]) != name[i])
            return 0;
    return name[i] == '\0';
}

static int name_index(slice s, const char *const *names, int count)
{
    int i;

    for (i = 0; i < count; i++)
        if (name_eq(s, names[i]))
            return i;
    return -1;
}

/* Case-insensitive prefix test against a lowercase literal. */
static int has_prefix_ci(const char *p, const char *end, const char *lit)
{
    for (; *lit; lit++, p++)
        if (p >= end || lower(*p) != *lit)
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Expressions                                                         */
/* ------------------------------------------------------------------ */

/* RangeExpression.validate_range() (with AllExpression's step check), on
 * an expression whose constructor already ran. */
static int validate_range(const parse_ctx *cx, slice text, const cron_expr *e)
{
    int f = cx->field;
    int64_t value_range;

    if (e->step && e->step > fmax[f] - fmin[f])
        return fail(cx, "step %d in \"%.*s\" is higher than the range %d-%d", e->step,
                    QLEN(text), text.p, fmin[f], fmax[f]);
    if (e->kind == EX_ALL)
        return 0;
    if (e->first < fmin[f])
        return fail(cx, "%d is out of range %d-%d", e->first, fmin[f], fmax[f]);
    if (e->last != NO_VALUE && e->last > fmax[f])
        return fail(cx, "%d is out of range %d-%d", e->last, fmin[f], fmax[f]);
    /* An open range starting past the maximum ("70/2") has a negative
     * range, so APScheduler rejects it below as a step too large; name
     * the real problem instead. */
    if (e->first > fmax[f] && e->last == NO_VALUE)
        return fail(cx, "%d is out of range %d-%d", e->first, fmin[f], fmax[f]);
    /* APScheduler writes `(self.last or MAX) - self.first`, so a last
     * value of 0 counts as the field's maximum ("0-0/5" is valid while
     * "1-1/5" is not); kept for fidelity. */
    value_range = (int64_t)(e->last > 0 ? e->last : fmax[f]) - e->first;
    if (e->step && e->step > value_range)
        return fail(cx, "step %d in \"%.*s\" is higher than the range of the expression (%lld)",
                    e->step, QLEN(text), text.p, (long long)value_range);
    return 0;
}

/* `\*(?:/(?P<step>\d+))?$` */
static int match_all(slice s, cron_expr *e, int *has_step)
{
    const char *p = s.p, *end = s.p + s.n;

    if (p >= end || *p != '*')
        return 0;
    p++;
    *has_step = 0;
    e->step = 0;
    if (p + 1 < end && *p == '/' && is_digit(p[1])) {
        p++;
        read_digits(&p, end, &e->step);
        *has_step = 1;
    }
    if (!at_end(p, end))
        return 0;
    e->kind = EX_ALL;
    e->first = NO_VALUE;
    e->last = NO_VALUE;
    return 1;
}

/* `(?P<first>\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?$` */
static int match_range(slice s, cron_expr *e, int *has_last, int *has_step)
{
    const char *p = s.p, *end = s.p + s.n;

    if (!read_digits(&p, end, &e->first))
        return 0;
    *has_last = 0;
    *has_step = 0;
    e->last = NO_VALUE;
    e->step = 0;
    if (p + 1 < end && *p == '-' && is_digit(p[1])) {
        p++;
        read_digits(&p, end, &e->last);
        *has_last = 1;
    }
    if (p + 1 < end && *p == '/' && is_digit(p[1])) {
        p++;
        read_digits(&p, end, &e->step);
        *has_step = 1;
    }
    if (!at_end(p, end))
        return 0;
    e->kind = EX_RANGE;
    return 1;
}

/* `(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?` with IGNORECASE and no `$`:
 * a prefix match, the rest of the expression is ignored (as in Python). */
static int match_names(slice s, slice *first, slice *last)
{
    const char *p = s.p, *end = s.p + s.n;

    if (p >= end || !is_alpha(*p))
        return 0;
    first->p = p;
    while (p < end && is_alpha(*p))
        p++;
    first->n = (size_t)(p - first->p);
    last->p = NULL;
    last->n = 0;
    if (p + 1 < end && *p == '-' && is_alpha(p[1])) {
        last->p = ++p;
        while (p < end && is_alpha(*p))
            p++;
        last->n = (size_t)(p - last->p);
    }
    return 1;
}

/* `(?P<option_name>1st|2nd|3rd|4th|5th|last) +(?P<weekday_name>(?:\d+|\w+))`
 * with IGNORECASE, a prefix match. */
static int match_nth(slice s, int *option, slice *weekday)
{
    const char *p = s.p, *end = s.p + s.n, *q;
    int i;

    for (i = 0; i < 6; i++)
        if (has_prefix_ci(p, end, nth_names[i]))
            break;
    if (i == 6)
        return 0;
    p += strlen(nth_names[i]);
    if (p >= end || *p != ' ')
        return 0;
    while (p < end && *p == ' ')
        p++;
    q = p;
    if (q < end && is_digit(*q)) {
        while (q < end && is_digit(*q))
            q++;
    } else {
        while (q < end && is_word(*q))
            q++;
    }
    if (q == p)
        return 0;
    *option = i;
    weekday->p = p;
    weekday->n = (size_t)(q - p);
    return 1;
}

/* RangeExpression.__init__() checks, shared by the numeric and the name
 * forms. */
static int range_init(const parse_ctx *cx, slice text, cron_expr *e, int has_last, int has_step)
{
    if (has_step && e->step == 0)
        return fail(cx, "step must be higher than 0 in \"%.*s\"", QLEN(text), text.p);
    if (!has_last && !has_step)
        e->last = e->first;
    if (e->last != NO_VALUE && e->first > e->last)
        return fail(cx, "range \"%.*s\": the first value is higher than the last", QLEN(text),
                    text.p);
    return 0;
}

/* BaseField.compile_expression(): tries the field's expression classes in
 * APScheduler's order. */
static int compile_expression(const parse_ctx *cx, slice text, cron_expr *e)
{
    int f = cx->field, has_last, has_step, rc, option;
    slice a, b;

    memset(e, 0, sizeof *e);
    if (match_all(text, e, &has_step)) {
        if (has_step && e->step == 0)
            return fail(cx, "step must be higher than 0 in \"%.*s\"", QLEN(text), text.p);
        return validate_range(cx, text, e);
    }
    if (match_range(text, e, &has_last, &has_step)) {
        rc = range_init(cx, text, e, has_last, has_step);
        return rc ? rc : validate_range(cx, text, e);
    }
    if ((f == F_MONTH || f == F_DOW) && match_names(text, &a, &b)) {
        const char *const *names = f == F_MONTH ? month_names : weekday_names;
        int count = f == F_MONTH ? 12 : 7, base = f == F_MONTH ? 1 : 0, i;
        const char *what = f == F_MONTH ? "month" : "weekday";

        e->kind = f == F_MONTH ? EX_MONTHS : EX_WEEKDAYS;
        i = name_index(a, names, count);
        if (i < 0)
            return fail(cx, "unknown %s \"%.*s\"", what, QLEN(a), a.p);
        e->first = i + base;
        e->last = NO_VALUE;
        if (b.p) {
            i = name_index(b, names, count);
            if (i < 0)
                return fail(cx, "unknown %s \"%.*s\"", what, QLEN(b), b.p);
            e->last = i + base;
        }
        rc = range_init(cx, text, e, b.p != NULL, 0);
        return rc ? rc : validate_range(cx, text, e);
    }
    if (f == F_DAY && match_nth(text, &option, &a)) {
        int wd = name_index(a, weekday_names, 7);

        if (wd < 0)
            return fail(cx, "unknown weekday \"%.*s\"", QLEN(a), a.p);
        e->kind = EX_NTH;
        e->nth = (uint8_t)option;
        e->weekday = (uint8_t)wd;
        return 0;
    }
    if (f == F_DAY && has_prefix_ci(text.p, text.p + text.n, "last")) {
        e->kind = EX_LAST;
        return 0;
    }
    if (text.n == 0)
        return fail(cx, "empty expression");
    return fail(cx, "unrecognized expression \"%.*s\"", QLEN(text), text.p);
}

/* Sets bits lo..hi (every step-th) of a field bitset; hi <= 63. */
static uint64_t bit_range(int lo, int hi, int step)
{
    uint64_t bits = 0;
    int v;

    if (step < 1)
        step = 1;
    for (v = lo; v <= hi && v < 64; v += step)
        bits |= UINT64_C(1) << v;
    return bits;
}

/* Adds an expression's static values to the field's bitset. */
static void add_bits(aps_cron *c, int f, const cron_expr *e)
{
    int hi;

    switch (e->kind) {
    case EX_ALL:
        c->bits[f] |= bit_range(fmin[f], fmax[f], e->step);
        break;
    case EX_RANGE:
    case EX_MONTHS:
    case EX_WEEKDAYS:
        hi = e->last == NO_VALUE ? fmax[f] : e->last;
        c->bits[f] |= bit_range(e->first, hi, e->step);
        break;
    case EX_NTH:
        c->nth |= UINT64_C(1) << (e->nth * 7 + e->weekday);
        break;
    case EX_LAST:
        c->last_day = 1;
        break;
    default:
        break;
    }
}

/* Counts the comma-separated pieces of a (stripped) field, an upper bound
 * of its expressions. */
static size_t count_pieces(slice s)
{
    size_t n = 1, i;

    for (i = 0; i < s.n; i++)
        n += s.p[i] == ',';
    return n;
}

/* BaseField.compile_expressions(): strip, split on ' *, *', compile. */
static int compile_field(aps_cron *c, const parse_ctx *cx, slice s)
{
    const char *p, *end, *comma, *q;
    int f = cx->field, rc;

    s = py_strip(s);
    p = s.p;
    end = s.p + s.n;
    c->first[f] = (uint32_t)c->nexprs;
    for (;;) {
        cron_expr *e = &c->exprs[c->nexprs];
        slice piece;

        comma = memchr(p, ',', (size_t)(end - p));
        q = comma ? comma : end;
        while (comma && q > p && q[-1] == ' ')
            q--;
        piece.p = p;
        piece.n = (size_t)(q - p);
        rc = compile_expression(cx, piece, e);
        if (rc)
            return rc;
        add_bits(c, f, e);
        c->nexprs++;
        c->count[f]++;
        if (!comma)
            break;
        p = comma + 1;
        while (p < end && *p == ' ')
            p++;
    }
    return 0;
}

/* One item of a crontab day-of-week: a number 0-7 or a name. */
static int crontab_dow_atom(const parse_ctx *cx, const char **pp, const char *end, int is_last,
                            int32_t *out)
{
    const char *p = *pp;
    slice name;
    int i;

    if (p < end && is_digit(*p)) {
        read_digits(&p, end, out);
        if (*out > 7)
            return fail(cx, "%d is out of range 0-7", *out);
        *pp = p;
        return 0;
    }
    name.p = p;
    while (p < end && is_alpha(*p))
        p++;
    name.n = (size_t)(p - name.p);
    if (name.n == 0)
        return fail(cx, "unrecognized expression \"%.*s\"", (int)(end - *pp > QMAX ? QMAX : end - *pp),
                    *pp);
    i = name_index(name, crontab_dow_names, 7);
    if (i < 0)
        return fail(cx, "unknown weekday \"%.*s\"", QLEN(name), name.p);
    /* "fri-sun": Sunday closing a range is day 7. */
    *out = (is_last && i == 0) ? 7 : i;
    *pp = p;
    return 0;
}

/* A crontab day-of-week field: `*`, `*\/n`, `a`, `a-b`, `a-b/n`, `a/n`
 * with 0-7 (0 and 7 = Sunday) or sun..sat, comma-separated. Returns the
 * Monday-based bitset. */
static int compile_crontab_dow(aps_cron *c, const parse_ctx *cx, slice s)
{
    const char *p = s.p, *end = s.p + s.n, *pe;
    uint64_t bits = 0;
    cron_expr *e;
    int rc;

    for (;;) {
        int32_t lo, hi, step = 1, v;
        slice piece;

        pe = memchr(p, ',', (size_t)(end - p));
        if (!pe)
            pe = end;
        piece.p = p;
        piece.n = (size_t)(pe - p);
        if (piece.n == 0)
            return fail(cx, "empty expression");
        if (*p == '*') {
            lo = 0;
            hi = 7;
            p++;
        } else {
            rc = crontab_dow_atom(cx, &p, pe, 0, &lo);
            if (rc)
                return rc;
            hi = lo;
            if (p < pe && *p == '-') {
                p++;
                rc = crontab_dow_atom(cx, &p, pe, 1, &hi);
                if (rc)
                    return rc;
                if (lo > hi)
                    return fail(cx, "range \"%.*s\": the first value is higher than the last",
                                QLEN(piece), piece.p);
            } else if (p < pe && *p == '/') {
                hi = 7;
            }
        }
        if (p < pe && *p == '/') {
            p++;
            if (!read_digits(&p, pe, &step))
                return fail(cx, "unrecognized expression \"%.*s\"", QLEN(piece), piece.p);
            if (step == 0)
                return fail(cx, "step must be higher than 0 in \"%.*s\"", QLEN(piece), piece.p);
            if (step > 7)
                return fail(cx, "step %d in \"%.*s\" is higher than the range 0-7", step,
                            QLEN(piece), piece.p);
        }
        if (p != pe)
            return fail(cx, "unrecognized expression \"%.*s\"", QLEN(piece), piece.p);
        for (v = lo; v <= hi; v += step)
            bits |= UINT64_C(1) << ((v + 6) % 7); /* Sunday 0/7 -> 6 */
        if (pe == end)
            break;
        p = pe + 1;
    }
    c->first[F_DOW] = (uint32_t)c->nexprs;
    e = &c->exprs[c->nexprs++];
    memset(e, 0, sizeof *e);
    if (s.n == 1 && s.p[0] == '*') {
        e->kind = EX_ALL; /* described as '*', as APScheduler would */
    } else {
        e->kind = EX_CRONTAB_DOW;
    }
    c->count[F_DOW] = 1;
    c->bits[F_DOW] = bits;
    c->crontab_dow = 1;
    return 0;
}

/* Splits a crontab string on whitespace as Python's str.split() does. */
static size_t split_words(slice s, slice *words, size_t max)
{
    const char *p = s.p, *end = s.p + s.n;
    size_t n = 0;

    for (;;) {
        while (p < end && py_space((unsigned char)*p))
            p++;
        if (p >= end)
            break;
        if (n < max)
            words[n].p = p;
        while (p < end && !py_space((unsigned char)*p))
            p++;
        if (n < max)
            words[n].n = (size_t)(p - words[n].p);
        n++;
    }
    return n;
}

static int set_error(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_error(aps_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err) {
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int aps__cron_compile(const char *const fields[APS_CRON_FIELDS], const char *crontab,
                      aps_cron **out, aps_error *err)
{
    /* Where crontab's five words go (from_crontab()). */
    static const int crontab_fields[5] = {F_MINUTE, F_HOUR, F_DAY, F_MONTH, F_DOW};
    slice src[F_COUNT];
    int given[F_COUNT] = {0};
    aps_cron *c = NULL;
    size_t total = 0;
    int f, rc, ngiven = 0, assign_defaults = 0;
    parse_ctx cx;

    *out = NULL;
    for (f = 0; f < F_COUNT; f++) {
        if (fields && fields[f]) {
            size_t n = strlen(fields[f]);

            if (n > APS_CRON_EXPR_MAX)
                return set_error(err, APS_EINVAL, "%s: expression too long (%zu bytes, max %d)",
                                 field_names[f], n, APS_CRON_EXPR_MAX);
            src[f].p = fields[f];
            src[f].n = n;
            given[f] = 1;
            ngiven++;
        }
    }
    if (crontab) {
        slice words[5], whole;
        size_t nwords, i;

        if (ngiven)
            return set_error(err, APS_EINVAL,
                             "crontab: cannot be combined with the year..second fields");
        whole.p = crontab;
        whole.n = strlen(crontab);
        if (whole.n > APS_CRON_EXPR_MAX)
            return set_error(err, APS_EINVAL, "crontab: expression too long (%zu bytes, max %d)",
                             whole.n, APS_CRON_EXPR_MAX);
        nwords = split_words(whole, words, 5);
        if (nwords != 5)
            return set_error(err, APS_EINVAL,
                             "crontab: wrong number of fields; got %zu, expected 5 "
                             "(minute hour day month day_of_week)",
                             nwords);
        for (i = 0; i < 5; i++) {
            src[crontab_fields[i]] = words[i];
            given[crontab_fields[i]] = 1;
        }
        ngiven = 5;
    }

    /* CronTrigger.__init__(): defaults for the fields not given. */
    for (f = 0; f < F_COUNT; f++) {
        if (given[f]) {
            ngiven--;
            assign_defaults = ngiven == 0;
        } else {
            src[f].p = assign_defaults ? default_values[f] : "*";
            src[f].n = strlen(src[f].p);
        }
        total += count_pieces(py_strip(src[f]));
    }

    c = calloc(1, sizeof *c + total * sizeof(cron_expr));
    if (!c)
        return set_error(err, APS_ENOMEM, "out of memory");
    cx.prefix = crontab ? "crontab: " : "";
    cx.err = err;
    for (f = 0; f < F_COUNT; f++) {
        cx.field = f;
        c->is_default[f] = !given[f];
        if (crontab && f == F_DOW)
            rc = compile_crontab_dow(c, &cx, src[f]);
        else
            rc = compile_field(c, &cx, src[f]);
        if (rc)
            goto fail;
        if (f != F_YEAR) {
            uint64_t full = bit_range(fmin[f], fmax[f], 1);

            c->all[f] = (c->bits[f] & full) == full;
        }
    }
    *out = c;
    return 0;

fail:
    free(c);
    return rc;
}

void aps__cron_free(aps_cron *c)
{
    free(c);
}

/* ------------------------------------------------------------------ */
/* The search                                                          */
/* ------------------------------------------------------------------ */

/* A pytz datetime: wall-clock fields and the offset they are read with
 * (instant = wall - off). The wall time may be one that does not exist
 * (after localize() of a time in a DST gap), as in APScheduler. */
typedef struct cstate {
    int64_t days; /* the wall date, days since 1970-01-01 */
    int year, month, day, hour, minute, second;
    int64_t off; /* seconds */
} cstate;

static int64_t wall_secs(const cstate *s)
{
    return s->days * APS_SECS_PER_DAY + s->hour * 3600 + s->minute * 60 + s->second;
}

static aps_time st_instant(const cstate *s)
{
    return (wall_secs(s) - s->off) * 1000000;
}

/* datetime.fromtimestamp(t, tz): the normalized local time of an instant. */
static void st_from_instant(cstate *s, const aps_tz *tz, aps_time t)
{
    aps_civil lc;
    int32_t off;

    aps__tz_to_local(tz, t, &lc, &off);
    s->year = lc.year;
    s->month = lc.month;
    s->day = lc.day;
    s->hour = lc.hour;
    s->minute = lc.minute;
    s->second = lc.second;
    s->days = aps__days_from_civil(lc.year, lc.month, lc.day);
    s->off = off;
}

static int st_value(const cstate *s, int f)
{
    int64_t iso_year;
    int week;

    switch (f) {
    case F_YEAR:
        return s->year;
    case F_MONTH:
        return s->month;
    case F_DAY:
        return s->day;
    case F_WEEK:
        aps__iso_week(s->year, s->month, s->day, &iso_year, &week);
        return week;
    case F_DOW:
        return aps__weekday(s->days);
    case F_HOUR:
        return s->hour;
    case F_MINUTE:
        return s->minute;
    default:
        return s->second;
    }
}

static int st_max(const cstate *s, int f)
{
    return f == F_DAY ? aps__days_in_month(s->year, s->month) : fmax[f];
}

/* The smallest set bit >= from and <= max, or -1. */
static int next_bit(uint64_t bits, int from, int max)
{
    uint64_t m;
    int v;

    if (from > 63)
        return -1;
    m = bits & (~UINT64_C(0) << from);
    if (!m)
        return -1;
    v = __builtin_ctzll(m);
    return v <= max ? v : -1;
}

/* AllExpression / RangeExpression.get_next_value() on the year field. */
static int year_next(const aps_cron *c, int cur)
{
    int best = -1;
    uint32_t i;

    for (i = 0; i < c->count[F_YEAR]; i++) {
        const cron_expr *e = &c->exprs[c->first[F_YEAR] + i];
        int64_t lo, hi, v;

        lo = e->kind == EX_ALL ? fmin[F_YEAR] : e->first;
        hi = e->kind == EX_ALL || e->last == NO_VALUE ? fmax[F_YEAR] : e->last;
        v = cur > lo ? cur : lo;
        if (e->step > 1)
            v += (e->step - (v - lo) % e->step) % e->step;
        if (v <= hi && (best < 0 || v < best))
            best = (int)v;
    }
    return best;
}

/* WeekdayPositionExpression.get_next_value(): the day of the nth (0-4,
 * 5 = last) `weekday` of a month, if it exists and is >= cur. */
static int nth_day(int year, int month, int nth, int weekday, int cur)
{
    int first_wday = aps__weekday(aps__days_from_civil(year, month, 1));
    int last = aps__days_in_month(year, month);
    int hit = weekday - first_wday + 1, target;

    if (hit <= 0)
        hit += 7;
    target = nth < 5 ? hit + nth * 7 : hit + ((last - hit) / 7) * 7;
    return target <= last && target >= cur ? target : -1;
}

/* BaseField.get_next_value(): the smallest value >= the current one that
 * some expression allows, or -1. */
static int field_next(const aps_cron *c, const cstate *s, int f, int cur)
{
    int from = cur > fmin[f] ? cur : fmin[f], best, v, i;

    if (f == F_YEAR)
        return year_next(c, cur);
    if (f != F_DAY)
        return next_bit(c->bits[f], from, fmax[f]);
    best = next_bit(c->bits[F_DAY], from, st_max(s, F_DAY));
    if (c->last_day) {
        v = aps__days_in_month(s->year, s->month);
        if (best < 0 || v < best)
            best = v;
    }
    if (c->nth) {
        for (i = 0; i < 42; i++) {
            if (!(c->nth >> i & 1))
                continue;
            v = nth_day(s->year, s->month, i / 7, i % 7, cur);
            if (v >= 0 && (best < 0 || v < best))
                best = v;
        }
    }
    return best;
}

static void st_get(const cstate *s, int vals[F_COUNT])
{
    vals[F_YEAR] = s->year;
    vals[F_MONTH] = s->month;
    vals[F_DAY] = s->day;
    vals[F_HOUR] = s->hour;
    vals[F_MINUTE] = s->minute;
    vals[F_SECOND] = s->second;
}

static int64_t vals_wall_secs(const int vals[F_COUNT])
{
    return aps__days_from_civil(vals[F_YEAR], vals[F_MONTH], vals[F_DAY]) * APS_SECS_PER_DAY +
           vals[F_HOUR] * 3600 + vals[F_MINUTE] * 60 + vals[F_SECOND];
}

/* CronTrigger._increment_field_value(): increments field f (carrying into
 * more significant fields at their maximum, skipping week and day_of_week),
 * resets the less significant ones to their minimum, adds the wall-clock
 * difference to the instant and normalizes. Returns the field actually
 * incremented, or -1 when the carry ran out of fields (then APScheduler
 * returns None). */
static int st_increment(cstate *s, const aps_tz *tz, int f)
{
    int vals[F_COUNT] = {0}, i;
    int64_t delta;

    for (;;) {
        if (f == F_WEEK || f == F_DOW) {
            f = F_DAY;
            continue;
        }
        if (f < 0)
            return -1;
        if (st_value(s, f) == st_max(s, f)) {
            f--;
            continue;
        }
        break;
    }
    st_get(s, vals);
    vals[f]++;
    for (i = f + 1; i < F_COUNT; i++)
        if (IS_REAL(i))
            vals[i] = fmin[i];
    delta = vals_wall_secs(vals) - wall_secs(s);
    st_from_instant(s, tz, st_instant(s) + delta * 1000000);
    return f;
}

/* CronTrigger._set_field_value(): field f takes `value`, less significant
 * fields their minimum, and the wall time is localized (pytz, is_dst=False).
 * The state keeps that wall time even if it falls in a gap. */
static void st_set(cstate *s, const aps_tz *tz, int f, int value)
{
    int vals[F_COUNT] = {0}, i;
    aps_civil lc;
    aps_time t;

    st_get(s, vals);
    vals[f] = value;
    for (i = f + 1; i < F_COUNT; i++)
        if (IS_REAL(i))
            vals[i] = fmin[i];
    memset(&lc, 0, sizeof lc);
    lc.year = vals[F_YEAR];
    lc.month = vals[F_MONTH];
    lc.day = vals[F_DAY];
    lc.hour = vals[F_HOUR];
    lc.minute = vals[F_MINUTE];
    lc.second = vals[F_SECOND];
    s->year = lc.year;
    s->month = lc.month;
    s->day = lc.day;
    s->hour = lc.hour;
    s->minute = lc.minute;
    s->second = lc.second;
    s->days = aps__days_from_civil(lc.year, lc.month, lc.day);
    /* Years are at most 9999 here, far inside aps_time's range, so the
     * conversion cannot fail; keep the old offset if it somehow did. */
    if (aps__tz_from_local(tz, &lc, &t, NULL) == 0)
        s->off = wall_secs(s) - aps__floor_div(t, 1000000, NULL);
}

/* Computes c->feasible: which years of the 400-year Gregorian cycle (after
 * which weekdays and ISO weeks repeat) have a date matching the month,
 * day, week and day_of_week fields. */
static void compute_feasible(aps_cron *c)
{
    int64_t z = aps__days_from_civil(2000, 1, 1);
    int y, m, d, dim, wd = aps__weekday(z);
    uint32_t daymask;

    memset(c->feasible, 0, sizeof c->feasible);
    for (y = 2000; y < 2400; y++) {
        for (m = 1; m <= 12; m++) {
            dim = aps__days_in_month(y, m);
            daymask = 0;
            if (c->bits[F_MONTH] >> m & 1) {
                daymask = (uint32_t)(c->bits[F_DAY] >> 1) & ((UINT32_C(1) << dim) - 1);
                if (c->last_day)
                    daymask |= UINT32_C(1) << (dim - 1);
                for (d = 0; d < 42; d++) {
                    int t;

                    if (!(c->nth >> d & 1))
                        continue;
                    t = nth_day(y, m, d / 7, d % 7, 1);
                    if (t > 0)
                        daymask |= UINT32_C(1) << (t - 1);
                }
            }
            for (d = 1; d <= dim; d++, z++, wd = wd == 6 ? 0 : wd + 1) {
                int64_t iy;
                int week;

                if (!(daymask >> (d - 1) & 1) || !(c->bits[F_DOW] >> wd & 1))
                    continue;
                if (!c->all[F_WEEK]) {
                    aps__iso_week(y, m, d, &iy, &week);
                    if (!(c->bits[F_WEEK] >> week & 1))
                        continue;
                }
                c->feasible[(y % 400) / 64] |= UINT64_C(1) << ((y % 400) % 64);
            }
        }
    }
    c->feasible_known = 1;
}

/* Whether some year >= `year` allowed by the year field has a matching
 * date. When not, APScheduler's search can only end in None, since it only
 * gets past the day_of_week field on a matching date. */
static int feasible_from(aps_cron *c, int year)
{
    int y = year < fmin[F_YEAR] ? fmin[F_YEAR] : year;

    if (!c->feasible_known)
        compute_feasible(c);
    while (y <= fmax[F_YEAR]) {
        y = year_next(c, y);
        if (y < 0)
            return 0;
        if (c->feasible[(y % 400) / 64] >> ((y % 400) % 64) & 1)
            return 1;
        y++;
    }
    return 0;
}

/* 1969-12-01T00:00:00Z: every fire time is in 1970 or later (the year
 * field's minimum), and any start before a wall year 1970 leads to the same
 * first step (the year jumps to 1970 or later), so earlier starts are
 * clamped to a wall year 1969 in every zone. */
#define CRON_MIN_START (INT64_C(-2678400) * 1000000)
/* 10000-01-02T00:00:00Z: past year 9999 nothing can match. */
#define CRON_MAX_START (INT64_C(253402387200) * 1000000)

int aps__cron_next(aps_cron *c, const aps_tz *tz, aps_time start, aps_time end, aps_time *out)
{
    cstate s;
    int f = 0, cur, nv;
    long steps = 0;
    int64_t rem;

    *out = APS_TIME_NONE;
    if (start > CRON_MAX_START)
        return 0;
    if (start < CRON_MIN_START)
        start = CRON_MIN_START;
    /* datetime_ceil(): up to the next whole second. */
    aps__floor_div(start, 1000000, &rem);
    if (rem)
        start += 1000000 - rem;
    st_from_instant(&s, tz, start);

    while (f < F_COUNT) {
        if (++steps > APS_CRON_MAX_STEPS)
            return APS_ELIMIT;
        if (steps == APS_CRON_FEASIBILITY_STEPS && !feasible_from(c, s.year))
            return 0;
        if (f != F_YEAR && c->all[f]) {
            /* next value == current value: APScheduler moves on. */
            f++;
            continue;
        }
        cur = st_value(&s, f);
        nv = field_next(c, &s, f, cur);
        if (nv < 0) {
            f = st_increment(&s, tz, f - 1);
            if (f < 0)
                return 0;
        } else if (nv > cur) {
            if (IS_REAL(f)) {
                st_set(&s, tz, f, nv);
                f++;
            } else {
                f = st_increment(&s, tz, f);
                if (f < 0)
                    return 0;
            }
        } else {
            f++;
        }
        if (end != APS_TIME_NONE && st_instant(&s) > end)
            return 0;
    }
    *out = st_instant(&s);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Description                                                         */
/* ------------------------------------------------------------------ */

void aps__sb_printf(aps__sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    size_t room = b->pos < b->len ? b->len - b->pos : 0;

    va_start(ap, fmt);
    n = vsnprintf(room ? b->buf + b->pos : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->overflow = 1;
        return;
    }
    if ((size_t)n >= room)
        b->overflow = 1;
    b->pos += (size_t)n;
}

/* str() of one expression. */
static void describe_expr(aps__sbuf *b, const aps_cron *c, int f, const cron_expr *e)
{
    int v, run;

    switch (e->kind) {
    case EX_ALL:
        if (e->step)
            aps__sb_printf(b, "*/%d", e->step);
        else
            aps__sb_printf(b, "*");
        return;
    case EX_RANGE:
        if (e->last != NO_VALUE && e->last != e->first)
            aps__sb_printf(b, "%d-%d", e->first, e->last);
        else
            aps__sb_printf(b, "%d", e->first);
        if (e->step)
            aps__sb_printf(b, "/%d", e->step);
        return;
    case EX_MONTHS:
    case EX_WEEKDAYS: {
        const char *const *names = e->kind == EX_MONTHS ? month_names : weekday_names;
        int base = e->kind == EX_MONTHS ? 1 : 0;

        if (e->last != NO_VALUE && e->last != e->first)
            aps__sb_printf(b, "%s-%s", names[e->first - base], names[e->last - base]);
        else
            aps__sb_printf(b, "%s", names[e->first - base]);
        return;
    }
    case EX_NTH:
        aps__sb_printf(b, "%s %s", nth_names[e->nth], weekday_names[e->weekday]);
        return;
    case EX_LAST:
        aps__sb_printf(b, "last");
        return;
    case EX_CRONTAB_DOW:
        /* Runs of Monday-based days as APScheduler weekday names, so the
         * description reads right and parses back as a cron field. */
        run = 0;
        for (v = 0; v < 7; v++) {
            int w;

            if (!(c->bits[f] >> v & 1))
                continue;
            for (w = v; w + 1 < 7 && (c->bits[f] >> (w + 1) & 1); w++)
                ;
            if (w > v)
                aps__sb_printf(b, "%s%s-%s", run ? "," : "", weekday_names[v], weekday_names[w]);
            else
                aps__sb_printf(b, "%s%s", run ? "," : "", weekday_names[v]);
            run = 1;
            v = w;
        }
        return;
    default:
        return;
    }
}

int aps__cron_describe(const aps_cron *c, char *buf, size_t len)
{
    aps__sbuf b = {buf, len, 0, 0};
    int f, any = 0;
    uint32_t i;

    if (len)
        buf[0] = '\0';
    for (f = 0; f < F_COUNT; f++) {
        if (c->is_default[f])
            continue;
        aps__sb_printf(&b, "%s%s='", any ? ", " : "", field_names[f]);
        for (i = 0; i < c->count[f]; i++) {
            if (i)
                aps__sb_printf(&b, ",");
            describe_expr(&b, c, f, &c->exprs[c->first[f] + i]);
        }
        aps__sb_printf(&b, "'");
        any = 1;
    }
    if (len && b.pos >= len)
        buf[len - 1] = '\0';
    return b.overflow ? APS_ERANGE : 0;
}
