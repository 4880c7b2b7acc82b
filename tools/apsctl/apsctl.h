/* apsctl internals: the parsed command line, message building (build.c)
 * and human-readable output (show.c). */
#ifndef APSCTL_H
#define APSCTL_H

#include <stddef.h>
#include <stdio.h>

#include "apsd/client.h"

/* Exit codes (documented in `apsctl --help`). */
#define EXIT_LOCAL 1 /* a local failure: file, TLS setup, undecodable data */
#define EXIT_USAGE 2 /* a usage error */
#define EXIT_RPC_BASE 10 /* + the gRPC status code of a failed RPC */

typedef struct strlist {
    const char **v;
    size_t n, cap;
} strlist;

/* Everything the command line can say; NULL / 0 / -1 = not given. */
typedef struct opts {
    /* global */
    const char *server, *token, *token_file, *tls_ca, *tls_cert, *tls_key, *tls_server_name;
    const char *timeout;
    int tls, json, help;
    /* triggers */
    strlist cron, calendar;
    const char *crontab, *interval, *date, *trigger_json, *timezone, *start_date, *end_date;
    const char *jitter;
    /* jobs */
    const char *id, *name, *executor, *jobstore, *misfire, *max_instances, *overlap;
    const char *next_run_time, *cwd, *command_timeout, *max_output, *remote, *args, *kwargs;
    const char *queue, *job_json, *request_id;
    int coalesce; /* -1 not given */
    int paused, replace;
    strlist labels, env;
    /* reads */
    const char *view, *selector, *page_size, *limit;
    int active;
    /* preview, backfill, events */
    const char *count, *start, *end, *max_runs, *after;
    int dry_run, follow, continue_after_gap, bookmarks, no_resume;
    strlist types, jobs;
    /* positional arguments, and the program after `--` */
    strlist pos;
    char **argv;
    int argc, dashdash;
} opts;

/* The context of one command. */
typedef struct ctx {
    opts *o;
    apsc_client *c;
    apsc_error err;
    char *default_tz; /* the daemon's, fetched on first need */
} ctx;

/* Prints "apsctl: msg" to stderr and returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports a failed call (status name and message) and returns its exit
 * code: EXIT_RPC_BASE + status for RPC failures, else EXIT_LOCAL. */
int call_error(ctx *x, int rc, const char *what);
/* malloc that exits on failure (a CLI has nothing better to do). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
char *xstrdup(const char *s);
void strlist_add(strlist *l, const char *s);

/* ---- build.c: command line -> protobuf-c messages ------------------------
 * Every message returned is heap-allocated in protobuf-c's unpacked layout,
 * so apsc_free() releases it with everything it points to. Each returns 0 or
 * an exit code (after printing why). */

/* Whether any trigger option was given. */
int have_trigger(const opts *o);
/* The trigger of the options (*out NULL if none was given and !required). */
int build_trigger(ctx *x, int required, Apsd__V1__Trigger **out);
/* A Job from the options; for ModifyJob, also the update_mask paths. */
int build_job(ctx *x, int for_modify, Apsd__V1__Job **out, strlist *mask);
/* Parses a time argument: RFC 3339, `now`, `+DURATION`, or a local
 * `YYYY-MM-DD[ HH:MM[:SS]]` in `zone` (NULL = the daemon's default). */
int parse_time_arg(ctx *x, const char *what, const char *s, const char *zone,
                   Google__Protobuf__Timestamp **out);
/* Parses an event type name (`executed`, `JOB_EXECUTED`,
 * `EVENT_TYPE_JOB_EXECUTED`, `job-executed`); -1 if unknown. */
int event_type_from_name(const char *s);
/* "JOB_EXECUTED" for an event type. */
const char *event_type_short(int t);

/* ---- show.c: human-readable output ----------------------------------------- */

/* A trigger as APScheduler prints it: `cron[hour='9', minute='30']`. */
void trigger_describe(const Apsd__V1__Trigger *t, char *buf, size_t cap);
void show_job(const Apsd__V1__Job *j);
void show_job_table(Apsd__V1__Job **jobs, size_t n);
void show_scheduler(const Apsd__V1__SchedulerInfo *s);
void show_preview(const Apsd__V1__PreviewTriggerResponse *r);
void show_event_item(const Apsd__V1__SubscribeEventsResponse *r, int show_bookmarks);
void show_backfill(const Apsd__V1__BackfillResponse *r);
/* A Timestamp as RFC 3339 UTC, or `-` when unset. */
const char *ts_str(const Google__Protobuf__Timestamp *t, char *buf);
/* Prints a message as one line of proto JSON (with defaults). */
int print_json(const void *msg);

#endif /* APSCTL_H */
