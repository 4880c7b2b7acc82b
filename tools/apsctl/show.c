/*
 * apsctl: human-readable output. Tables are aligned by display width (CJK
 * characters take two columns), control characters from the daemon are
 * escaped, and times are RFC 3339 in UTC.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apsctl.h"

/* ---- Text helpers ------------------------------------------------------------------ */

/* Decodes one UTF-8 sequence; returns its length (1 for a bad byte). */
static int
utf8_next(const unsigned char *s, unsigned *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 1;
    if (n == 1) {
        *cp = 0xfffd;
        return 1;
    }
    unsigned v = s[0] & (0xff >> (n + 1));
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *cp = 0xfffd;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3f);
    }
    *cp = v;
    return n;
}

static int
cp_width(unsigned c)
{
    if (c >= 0x300 && c <= 0x36f)
        return 0; /* combining marks */
    if ((c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0xa4cf) ||
        (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) ||
        (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) ||
        (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1faff) ||
        (c >= 0x20000 && c <= 0x3fffd))
        return 2;
    return 1;
}

static size_t
dwidth(const char *s)
{
    size_t w = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned cp;
        p += utf8_next(p, &cp);
        w += (size_t)cp_width(cp);
    }
    return w;
}

/*
 * Copies `s` (len bytes) for a terminal: control characters become \n, \t,
 * \xNN; at most `max_w` columns (then `…`). The result is malloc'd.
 */
static char *
esc(const char *s, size_t len, size_t max_w)
{
    size_t cap = len * 4 + 8, o = 0, w = 0;
    char *out = xmalloc(cap);
    const unsigned char *p = (const unsigned char *)s, *end = p + len;

    while (p < end && *p) {
        unsigned cp;
        int n = utf8_next(p, &cp);
        char tmp[8];
        size_t tl, tw;
        if (cp < 0x20 || cp == 0x7f) {
            if (cp == '\n')
                tl = (size_t)snprintf(tmp, sizeof tmp, "\\n");
            else if (cp == '\t')
                tl = (size_t)snprintf(tmp, sizeof tmp, "\\t");
            else
                tl = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", cp);
            tw = tl;
        } else {
            memcpy(tmp, p, (size_t)n);
            tl = (size_t)n;
            tw = (size_t)cp_width(cp);
        }
        if (max_w && w + tw > max_w) {
            memcpy(out + o, "\xe2\x80\xa6", 3);
            o += 3;
            break;
        }
        memcpy(out + o, tmp, tl);
        o += tl;
        w += tw;
        p += n;
    }
    out[o] = '\0';
    return out;
}

static void
pad(FILE *f, const char *s, size_t width)
{
    size_t w = dwidth(s);
    fputs(s, f);
    for (; w < width; w++)
        fputc(' ', f);
}

const char *
ts_str(const Google__Protobuf__Timestamp *t, char *buf)
{
    if (t == NULL) {
        strcpy(buf, "-");
        return buf;
    }
    /* Milliseconds are plenty for people, always shown so columns align. */
    apsc_format_time(t->seconds, 0, buf);
    size_t n = strlen(buf);
    snprintf(buf + n - 1, APSC_TIME_BUFSZ - n + 1, ".%03dZ", (int)(t->nanos / 1000000));
    return buf;
}

static const char *
dur_str(const Google__Protobuf__Duration *d, char *buf)
{
    if (d == NULL) {
        strcpy(buf, "-");
        return buf;
    }
    apsc_format_duration_short(d->seconds, d->nanos, buf);
    return buf;
}

/* A simple table: rows of cells, printed with two spaces between columns. */
#define MAX_COLS 8
typedef struct table {
    size_t ncols, nrows, cap;
    char **cells; /* nrows * ncols, owned */
} table;

static void
table_row(table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, t->cap * t->ncols * sizeof(char *));
        if (t->cells == NULL)
            exit(EXIT_LOCAL);
    }
    for (size_t c = 0; c < t->ncols; c++)
        t->cells[t->nrows * t->ncols + c] = esc(cells[c], strlen(cells[c]), 60);
    t->nrows++;
}

static void
table_print(table *t)
{
    size_t w[MAX_COLS] = {0};
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t cw = dwidth(t->cells[r * t->ncols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            if (c + 1 == t->ncols) {
                fputs(s, stdout);
            } else {
                pad(stdout, s, w[c]);
                fputs("  ", stdout);
            }
            free(t->cells[r * t->ncols + c]);
        }
        fputc('\n', stdout);
    }
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* ---- Triggers ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t cap, len;
} sbuf;

static void
sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->len >= b->cap)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

/* Python's str(timedelta): `0:00:03`, `1 day, 2:00:00`, `0:00:00.500000`. */
static void
timedelta(sbuf *b, int64_t us)
{
    int64_t days = us / 86400000000LL, rem = us % 86400000000LL;
    if (days)
        sb_printf(b, "%lld day%s, ", (long long)days, days == 1 ? "" : "s");
    sb_printf(b, "%d:%02d:%02d", (int)(rem / 3600000000LL), (int)(rem / 60000000 % 60),
              (int)(rem / 1000000 % 60));
    if (rem % 1000000)
        sb_printf(b, ".%06d", (int)(rem % 1000000));
}

static void
describe(sbuf *b, const Apsd__V1__Trigger *t, int depth)
{
    char tb[APSC_TIME_BUFSZ];

    if (t == NULL || depth > 8) {
        sb_printf(b, "-");
        return;
    }
    switch (t->kind_case) {
    case APSD__V1__TRIGGER__KIND_CRON: {
        const Apsd__V1__CronTrigger *c = t->cron;
        const char *names[] = {"year", "month",       "day",  "week",
                               "day_of_week", "hour", "minute", "second"};
        const char *vals[] = {c->year,        c->month, c->day,    c->week,
                              c->day_of_week, c->hour,  c->minute, c->second};
        int first = 1;
        sb_printf(b, "cron[");
        if (c->crontab[0]) {
            sb_printf(b, "crontab='%s'", c->crontab);
            first = 0;
        }
        for (int i = 0; i < 8; i++)
            if (vals[i][0]) {
                sb_printf(b, "%s%s='%s'", first ? "" : ", ", names[i], vals[i]);
                first = 0;
            }
        sb_printf(b, "]");
        break;
    }
    case APSD__V1__TRIGGER__KIND_INTERVAL: {
        const Apsd__V1__IntervalTrigger *i = t->interval;
        int64_t us = ((((int64_t)i->weeks * 7 + i->days) * 24 + i->hours) * 60 + i->minutes) * 60 +
                     i->seconds;
        us = us * 1000000 + i->microseconds;
        sb_printf(b, "interval[");
        timedelta(b, us);
        sb_printf(b, "]");
        break;
    }
    case APSD__V1__TRIGGER__KIND_DATE:
        sb_printf(b, "date[%s]", ts_str(t->date->run_date, tb));
        break;
    case APSD__V1__TRIGGER__KIND_CALENDAR_INTERVAL: {
        const Apsd__V1__CalendarIntervalTrigger *c = t->calendar_interval;
        sb_printf(b, "calendar_interval[");
        if (c->years)
            sb_printf(b, "years=%d, ", c->years);
        if (c->months)
            sb_printf(b, "months=%d, ", c->months);
        if (c->weeks)
            sb_printf(b, "weeks=%d, ", c->weeks);
        if (c->days)
            sb_printf(b, "days=%d, ", c->days);
        sb_printf(b, "time=%02d:%02d:%02d]", c->hour, c->minute, c->second);
        break;
    }
    case APSD__V1__TRIGGER__KIND_ALL_OF:
    case APSD__V1__TRIGGER__KIND_ANY_OF: {
        int all = t->kind_case == APSD__V1__TRIGGER__KIND_ALL_OF;
        size_t n = all ? t->all_of->n_triggers : t->any_of->n_triggers;
        Apsd__V1__Trigger **ts = all ? t->all_of->triggers : t->any_of->triggers;
        sb_printf(b, "%s[", all ? "and" : "or");
        for (size_t k = 0; k < n; k++) {
            if (k)
                sb_printf(b, ", ");
            describe(b, ts[k], depth + 1);
        }
        sb_printf(b, "]");
        break;
    }
    default:
        sb_printf(b, "-");
    }
}

void
trigger_describe(const Apsd__V1__Trigger *t, char *buf, size_t cap)
{
    sbuf b = {buf, cap, 0};
    buf[0] = '\0';
    describe(&b, t, 0);
}

static const char *
trigger_zone(const Apsd__V1__Trigger *t)
{
    if (t == NULL)
        return "";
    switch (t->kind_case) {
    case APSD__V1__TRIGGER__KIND_CRON:
        return t->cron->timezone;
    case APSD__V1__TRIGGER__KIND_INTERVAL:
        return t->interval->timezone;
    case APSD__V1__TRIGGER__KIND_DATE:
        return t->date->timezone;
    case APSD__V1__TRIGGER__KIND_CALENDAR_INTERVAL:
        return t->calendar_interval->timezone;
    default:
        return "";
    }
}

/* ---- Jobs -------------------------------------------------------------------------------- */

static void
target_describe(const Apsd__V1__Target *t, sbuf *b)
{
    if (t == NULL) {
        sb_printf(b, "-");
    } else if (t->kind_case == APSD__V1__TARGET__KIND_COMMAND) {
        for (size_t i = 0; i < t->command->n_argv; i++) {
            const char *a = t->command->argv[i];
            int quote = a[0] == '\0' || strpbrk(a, " \t'\"\\$`") != NULL;
            sb_printf(b, "%s%s%s%s", i ? " " : "", quote ? "'" : "", a, quote ? "'" : "");
        }
    } else if (t->kind_case == APSD__V1__TARGET__KIND_REMOTE) {
        sb_printf(b, "remote %s", t->remote->task);
        if (t->remote->queue[0])
            sb_printf(b, " (queue %s)", t->remote->queue);
    } else {
        sb_printf(b, "-");
    }
}

static const char *
overlap_name(Apsd__V1__OverlapPolicy p)
{
    switch (p) {
    case APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_SKIP:
        return "skip";
    case APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_QUEUE_ONE:
        return "queue-one";
    case APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_QUEUE_ALL:
        return "queue-all";
    case APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_CANCEL_RUNNING:
        return "cancel-running";
    default:
        return "default (skip)";
    }
}

static const char *
status_word(Apsd__V1__RunStatus s)
{
    switch (s) {
    case APSD__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED:
        return "succeeded";
    case APSD__V1__RUN_STATUS__RUN_STATUS_FAILED:
        return "failed";
    case APSD__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT:
        return "timed-out";
    case APSD__V1__RUN_STATUS__RUN_STATUS_CANCELLED:
        return "cancelled";
    case APSD__V1__RUN_STATUS__RUN_STATUS_LEASE_EXPIRED:
        return "lease-expired";
    case APSD__V1__RUN_STATUS__RUN_STATUS_START_FAILED:
        return "start-failed";
    default:
        return "unknown";
    }
}

/* First line of an output tail, escaped and shortened. */
static char *
tail_line(const ProtobufCBinaryData *d, size_t max_w)
{
    size_t n = d->len;
    const char *s = (const char *)d->data;
    const char *nl = n ? memchr(s, '\n', n) : NULL;
    if (nl != NULL && (size_t)(nl - s) + 1 == n)
        n--; /* one trailing newline: leave it out */
    return esc(s ? s : "", n, max_w);
}

static void
outcome_describe(const Apsd__V1__RunOutcome *o, sbuf *b)
{
    char db[APSC_DURATION_BUFSZ];
    sb_printf(b, "%s", status_word(o->status));
    if (o->termination_case == APSD__V1__RUN_OUTCOME__TERMINATION_EXIT_CODE)
        sb_printf(b, " exit=%d", o->exit_code);
    else if (o->termination_case == APSD__V1__RUN_OUTCOME__TERMINATION_SIGNAL)
        sb_printf(b, " signal=%d", o->signal);
    if (o->duration)
        sb_printf(b, " %s", dur_str(o->duration, db));
    if (o->error[0]) {
        char *e = esc(o->error, strlen(o->error), 60);
        sb_printf(b, " error=\"%s\"", e);
        free(e);
    }
    if (o->stdout_tail.len) {
        char *t = tail_line(&o->stdout_tail, 40);
        sb_printf(b, " stdout=\"%s\"", t);
        free(t);
    }
    if (o->stderr_tail.len) {
        char *t = tail_line(&o->stderr_tail, 40);
        sb_printf(b, " stderr=\"%s\"", t);
        free(t);
    }
    if (o->return_value) {
        char *j = NULL;
        if (apsc_to_json(o->return_value, 0, &j) == 0) {
            char *e = esc(j, strlen(j), 40);
            sb_printf(b, " return=%s", e);
            free(e);
        }
        free(j);
    }
}

static void
kvline(const char *k, const char *v)
{
    char *e = esc(v, strlen(v), 0);
    printf("%-20s%s\n", k, e);
    free(e);
}

void
show_job(const Apsd__V1__Job *j)
{
    char buf[2048], tb[APSC_TIME_BUFSZ], db[APSC_DURATION_BUFSZ];
    sbuf b = {buf, sizeof buf, 0};

    kvline("id", j->id);
    kvline("name", j->name);
    trigger_describe(j->trigger, buf, sizeof buf);
    kvline("trigger", buf);
    if (trigger_zone(j->trigger)[0])
        kvline("timezone", trigger_zone(j->trigger));
    if (j->trigger && j->trigger->jitter)
        kvline("jitter", dur_str(j->trigger->jitter, db));
    b.len = 0;
    buf[0] = '\0';
    target_describe(j->target, &b);
    kvline("target", buf);
    if (j->target && j->target->kind_case == APSD__V1__TARGET__KIND_COMMAND) {
        const Apsd__V1__CommandTarget *c = j->target->command;
        for (size_t i = 0; i < c->n_env; i++) {
            snprintf(buf, sizeof buf, "%s=%s", c->env[i]->key, c->env[i]->value);
            kvline("env", buf);
        }
        if (c->cwd[0])
            kvline("cwd", c->cwd);
        if (c->timeout)
            kvline("command_timeout", dur_str(c->timeout, db));
    }
    kvline("executor", j->executor[0] ? j->executor : "default");
    kvline("jobstore", j->jobstore[0] ? j->jobstore : "default");
    kvline("next_run_time", j->next_run_time ? ts_str(j->next_run_time, tb) : "- (paused)");
    kvline("paused", j->paused ? "yes" : "no");
    if (j->misfire_grace_time == NULL)
        kvline("misfire_grace_time", "default");
    else if (j->misfire_grace_time->limit_case == APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED)
        kvline("misfire_grace_time", "unlimited");
    else
        kvline("misfire_grace_time", dur_str(j->misfire_grace_time->duration, db));
    kvline("coalesce", j->optional_coalesce_case ? (j->coalesce ? "yes" : "no") : "default");
    if (j->optional_max_instances_case)
        snprintf(buf, sizeof buf, "%d", j->max_instances);
    else
        snprintf(buf, sizeof buf, "default");
    kvline("max_instances", buf);
    kvline("overlap_policy", overlap_name(j->overlap_policy));
    b.len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < j->n_labels; i++)
        sb_printf(&b, "%s%s=%s", i ? ", " : "", j->labels[i]->key, j->labels[i]->value);
    kvline("labels", j->n_labels ? buf : "-");
    snprintf(buf, sizeof buf, "%d running, %d queued", j->running_instances, j->queued_runs);
    kvline("instances", buf);
    kvline("create_time", ts_str(j->create_time, tb));
    kvline("update_time", ts_str(j->update_time, tb));
    if (j->stats != NULL) {
        const Apsd__V1__JobStats *s = j->stats;
        snprintf(buf, sizeof buf,
                 "%llu runs, %llu failures, %llu misses, %llu max-instance skips, %llu coalesced",
                 (unsigned long long)s->runs, (unsigned long long)s->failures,
                 (unsigned long long)s->misses, (unsigned long long)s->max_instance_skips,
                 (unsigned long long)s->coalesced);
        kvline("stats", buf);
        if (s->last_run_id[0]) {
            b.len = 0;
            buf[0] = '\0';
            sb_printf(&b, "%s (run %s): ", ts_str(s->last_run_time, tb), s->last_run_id);
            if (s->last_outcome)
                outcome_describe(s->last_outcome, &b);
            kvline("last_run", buf);
        }
        if (s->lateness_samples) {
            char d2[APSC_DURATION_BUFSZ], d3[APSC_DURATION_BUFSZ], d4[APSC_DURATION_BUFSZ];
            snprintf(buf, sizeof buf, "p50 %s, p90 %s, p99 %s, max %s (%u runs)",
                     dur_str(s->lateness_p50, db), dur_str(s->lateness_p90, d2),
                     dur_str(s->lateness_p99, d3), dur_str(s->lateness_max, d4),
                     s->lateness_samples);
            kvline("lateness", buf);
        }
    }
}

void
show_job_table(Apsd__V1__Job **jobs, size_t n)
{
    table t = {5, 0, 0, NULL};
    const char *head[] = {"ID", "NAME", "TRIGGER", "NEXT RUN (UTC)", "STATE"};
    char trig[512], tb[APSC_TIME_BUFSZ], st[64];

    table_row(&t, head);
    for (size_t i = 0; i < n; i++) {
        const Apsd__V1__Job *j = jobs[i];
        trigger_describe(j->trigger, trig, sizeof trig);
        if (j->paused)
            snprintf(st, sizeof st, "paused");
        else if (j->running_instances)
            snprintf(st, sizeof st, "running (%d)", j->running_instances);
        else
            snprintf(st, sizeof st, "scheduled");
        if (j->queued_runs)
            snprintf(st + strlen(st), sizeof st - strlen(st), ", %d queued", j->queued_runs);
        const char *row[] = {j->id, j->name, trig, ts_str(j->next_run_time, tb), st};
        table_row(&t, row);
    }
    table_print(&t);
    printf("%zu job%s\n", n, n == 1 ? "" : "s");
}

/* ---- The scheduler ------------------------------------------------------------------------ */

static const char *
state_word(Apsd__V1__SchedulerState s)
{
    switch (s) {
    case APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_STOPPED:
        return "stopped";
    case APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_RUNNING:
        return "running";
    case APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_PAUSED:
        return "paused";
    default:
        return "unknown";
    }
}

void
show_scheduler(const Apsd__V1__SchedulerInfo *s)
{
    char buf[512], tb[APSC_TIME_BUFSZ], db[APSC_DURATION_BUFSZ];
    table t = {4, 0, 0, NULL};

    kvline("state", state_word(s->state));
    kvline("version", s->version);
    kvline("default_timezone", s->default_timezone);
    kvline("start_time", ts_str(s->start_time, tb));
    kvline("current_time", ts_str(s->current_time, tb));
    kvline("next_wakeup_time", ts_str(s->next_wakeup_time, tb));
    if (s->event_log) {
        const Apsd__V1__EventLogInfo *e = s->event_log;
        snprintf(buf, sizeof buf, "sequences %llu-%llu (keeps %llu events, %s)",
                 (unsigned long long)e->first_sequence, (unsigned long long)e->last_sequence,
                 (unsigned long long)e->max_events, e->max_age ? dur_str(e->max_age, db) : "-");
        kvline("event_log", buf);
    }
    const char *mg = "default";
    char mgb[APSC_DURATION_BUFSZ];
    if (s->default_misfire_grace_time) {
        if (s->default_misfire_grace_time->limit_case ==
            APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED)
            mg = "unlimited";
        else
            mg = dur_str(s->default_misfire_grace_time->duration, mgb);
    }
    snprintf(buf, sizeof buf, "misfire_grace_time %s, coalesce %s, max_instances %d", mg,
             s->default_coalesce ? "yes" : "no", s->default_max_instances);
    kvline("job_defaults", buf);

    printf("\n");
    const char *h1[] = {"JOBSTORE", "TYPE", "JOBS", "PAUSED"};
    table_row(&t, h1);
    for (size_t i = 0; i < s->n_jobstores; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", s->jobstores[i]->job_count);
        snprintf(b, sizeof b, "%d", s->jobstores[i]->paused_job_count);
        const char *row[] = {s->jobstores[i]->name, s->jobstores[i]->type, a, b};
        table_row(&t, row);
    }
    table_print(&t);
    for (size_t i = 0; i < s->n_jobstores; i++)
        if (s->jobstores[i]->low_space)
            printf("jobstore %s: its disk is full and its reserve was given back: new jobs "
                   "are refused until space is freed\n",
                   s->jobstores[i]->name);
    printf("\n");
    table t2 = {6, 0, 0, NULL};
    const char *h2[] = {"EXECUTOR", "TYPE", "MAX_WORKERS", "RUNNING", "PENDING", "WORKERS"};
    table_row(&t2, h2);
    for (size_t i = 0; i < s->n_executors; i++) {
        const Apsd__V1__ExecutorInfo *e = s->executors[i];
        char a[16], b[16], c[16], d[16];
        snprintf(a, sizeof a, "%d", e->max_workers);
        snprintf(b, sizeof b, "%d", e->running);
        snprintf(c, sizeof c, "%d", e->pending);
        snprintf(d, sizeof d, "%d", e->connected_workers);
        const char *row[] = {e->name, e->type, e->max_workers ? a : "-", b, c,
                             strcmp(e->type, "workers") == 0 ? d : "-"};
        table_row(&t2, row);
    }
    table_print(&t2);
}

/* ---- Preview, backfill, events ----------------------------------------------------------- */

/* The wall-clock time of an instant in an IANA zone, through the C
 * library's TZ handling: `2026-11-27 09:00:00 CET`. */
static void
local_time(int64_t seconds, const char *zone, char *buf, size_t cap)
{
    char *old = getenv("TZ") ? xstrdup(getenv("TZ")) : NULL;
    char tz[300];
    struct tm tm;
    time_t t = (time_t)seconds;

    snprintf(tz, sizeof tz, ":%s", zone);
    setenv("TZ", tz, 1);
    tzset();
    if (localtime_r(&t, &tm) == NULL || strftime(buf, cap, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
        buf[0] = '\0';
    if (old != NULL) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
}

void
show_preview(const Apsd__V1__PreviewTriggerResponse *r)
{
    char tb[APSC_TIME_BUFSZ], lt[96];
    const char *zone = trigger_zone(r->effective_trigger);
    int local = zone[0] && strcmp(zone, "UTC") != 0;
    kvline("trigger", r->description);
    if (zone[0])
        kvline("timezone", zone);
    for (size_t i = 0; i < r->n_fire_times; i++) {
        apsc_format_time(r->fire_times[i]->seconds, r->fire_times[i]->nanos, tb);
        if (local) {
            local_time(r->fire_times[i]->seconds, zone, lt, sizeof lt);
            printf("%4zu  %-24s  %s\n", i + 1, tb, lt);
        } else {
            printf("%4zu  %s\n", i + 1, tb);
        }
    }
    if (r->n_fire_times == 0)
        printf("(no fire times)\n");
}

void
show_backfill(const Apsd__V1__BackfillResponse *r)
{
    char tb[APSC_TIME_BUFSZ];
    for (size_t i = 0; i < r->n_scheduled_run_times; i++) {
        apsc_format_time(r->scheduled_run_times[i]->seconds, r->scheduled_run_times[i]->nanos, tb);
        printf("%s  %s\n", tb, i < r->n_run_ids ? r->run_ids[i] : "(validate only)");
    }
    printf("%zu run%s%s\n", r->n_scheduled_run_times, r->n_scheduled_run_times == 1 ? "" : "s",
           r->truncated ? " (truncated: the range holds more; raise --max-runs)" : "");
}

void
show_event_item(const Apsd__V1__SubscribeEventsResponse *r, int show_bookmarks)
{
    char buf[1024], tb[APSC_TIME_BUFSZ];
    sbuf b = {buf, sizeof buf, 0};

    buf[0] = '\0';
    if (r->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_GAP) {
        printf("-- gap: events %llu to %llu were pruned from the event log\n",
               (unsigned long long)r->gap->requested_sequence,
               (unsigned long long)(r->gap->first_available_sequence
                                        ? r->gap->first_available_sequence - 1
                                        : 0));
        return;
    }
    if (r->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_BOOKMARK) {
        if (show_bookmarks)
            printf("-- bookmark: sequence %llu%s\n", (unsigned long long)r->bookmark->sequence,
                   r->bookmark->caught_up ? " (caught up)" : "");
        return;
    }
    if (r->item_case != APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT || r->event == NULL)
        return;
    const Apsd__V1__Event *e = r->event;
    if (e->run_id[0]) {
        /* Its last 8 hex digits: the first ones are the time, the same for
         * every run of a minute. */
        size_t n = strlen(e->run_id);
        sb_printf(&b, "run=%s ", e->run_id + (n > 8 ? n - 8 : 0));
    }
    switch (e->type) {
    case APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_EXECUTED:
    case APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_ERROR:
        if (e->outcome)
            outcome_describe(e->outcome, &b);
        break;
    case APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_SUBMITTED:
    case APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_MAX_INSTANCES:
    case APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_MISSED:
        if (e->n_scheduled_run_times)
            sb_printf(&b, "scheduled=%s", ts_str(e->scheduled_run_times[0], tb));
        if (e->n_scheduled_run_times > 1)
            sb_printf(&b, " (+%zu coalesced)", e->n_scheduled_run_times - 1);
        if (e->executor[0])
            sb_printf(&b, " executor=%s", e->executor);
        break;
    default:
        if (e->message[0])
            sb_printf(&b, "%s", e->message);
        else if (e->jobstore[0])
            sb_printf(&b, "jobstore=%s", e->jobstore);
        else if (e->executor[0])
            sb_printf(&b, "executor=%s", e->executor);
    }
    char *details = esc(buf, strlen(buf), 0);
    /* Whole generated ids (44 chars), to be copied into --job or get. */
    char *job = esc(e->job_id[0] ? e->job_id : "-", strlen(e->job_id[0] ? e->job_id : "-"), 64);
    printf("%6llu  %-24s  %-17s  ", (unsigned long long)e->sequence, ts_str(e->time, tb),
           event_type_short(e->type));
    pad(stdout, job, 16);
    printf("  %s\n", details);
    free(job);
    free(details);
}

int
print_json(const void *msg)
{
    char *s = NULL;
    if (apsc_to_json(msg, APSC_JSON_EMIT_DEFAULTS, &s) != 0) {
        fprintf(stderr, "apsctl: cannot format the response as JSON\n");
        return EXIT_LOCAL;
    }
    puts(s);
    free(s);
    return 0;
}
