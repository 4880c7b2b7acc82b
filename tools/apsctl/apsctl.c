/*
 * apsctl: the command-line client of apsd, on the C client library
 * (bindings/c). `apsctl --help` is the manual; tools/apsctl/README.md has
 * examples with real output.
 *
 * The command line is table-driven: one table of options (each tagged with
 * the command groups that accept it, so `--help` of every command lists
 * exactly its options) and one table of commands.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apsctl.h"

/* ---- Small helpers ------------------------------------------------------------------ */

void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "apsctl: out of memory\n");
        exit(EXIT_LOCAL);
    }
    return p;
}

void *
xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (p == NULL) {
        fprintf(stderr, "apsctl: out of memory\n");
        exit(EXIT_LOCAL);
    }
    return p;
}

char *
xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

void
strlist_add(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = realloc(l->v, l->cap * sizeof(char *));
        if (l->v == NULL) {
            fprintf(stderr, "apsctl: out of memory\n");
            exit(EXIT_LOCAL);
        }
    }
    l->v[l->n++] = s;
}

int
usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("apsctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_USAGE;
}

int
call_error(ctx *x, int rc, const char *what)
{
    const char *msg = x->err.message ? x->err.message : apsc_strerror(rc);
    if (rc == APSC_ERPC) {
        fprintf(stderr, "apsctl: %s: %s\n", apsc_status_name(x->err.code), msg);
        return EXIT_RPC_BASE + (int)x->err.code;
    }
    fprintf(stderr, "apsctl: %s: %s\n", what, msg);
    return EXIT_LOCAL;
}

/* ---- Options -------------------------------------------------------------------------- */

/* Command groups: an option is accepted by the commands whose groups it
 * names. */
enum {
    G_ALL = 1 << 0,
    G_TRIG = 1 << 1,   /* add modify reschedule preview */
    G_JOB = 1 << 2,    /* add modify */
    G_ADD = 1 << 3,    /* add */
    G_REQ = 1 << 4,    /* mutating commands: --request-id */
    G_VIEW = 1 << 5,   /* get list */
    G_LIST = 1 << 6,   /* list */
    G_PREV = 1 << 7,   /* preview */
    G_EVENTS = 1 << 8, /* events */
    G_BACK = 1 << 9,   /* backfill */
    G_RMALL = 1 << 10, /* remove-all */
};

enum {
    O_SERVER = 1,
    O_TOKEN,
    O_TOKEN_FILE,
    O_TLS,
    O_TLS_CA,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TLS_NAME,
    O_TIMEOUT,
    O_JSON,
    O_HELP,
    O_CRON,
    O_CRONTAB,
    O_INTERVAL,
    O_DATE,
    O_CALENDAR,
    O_TRIGGER_JSON,
    O_TIMEZONE,
    O_START_DATE,
    O_END_DATE,
    O_JITTER,
    O_ID,
    O_NAME,
    O_EXECUTOR,
    O_JOBSTORE,
    O_MISFIRE,
    O_COALESCE,
    O_NO_COALESCE,
    O_MAX_INSTANCES,
    O_OVERLAP,
    O_LABEL,
    O_NEXT_RUN_TIME,
    O_ENV,
    O_CWD,
    O_COMMAND_TIMEOUT,
    O_MAX_OUTPUT,
    O_REMOTE,
    O_ARGS,
    O_KWARGS,
    O_QUEUE,
    O_JOB_JSON,
    O_PAUSED,
    O_REPLACE,
    O_REQUEST_ID,
    O_VIEW,
    O_ACTIVE,
    O_SELECTOR,
    O_PAGE_SIZE,
    O_LIMIT,
    O_COUNT,
    O_START,
    O_END,
    O_MAX_RUNS,
    O_DRY_RUN,
    O_FOLLOW,
    O_TYPE,
    O_JOB,
    O_AFTER,
    O_CONTINUE_AFTER_GAP,
    O_BOOKMARKS,
    O_NO_RESUME,
};

typedef struct optdef {
    const char *name;
    char shortc;
    const char *arg; /* metavariable; NULL = a flag without value */
    int groups;
    int id;
    const char *help;
} optdef;

static const optdef options[] = {
    /* Triggers: APScheduler's trigger keywords. */
    {"cron", 0, "'FIELD=EXPR ...'", G_TRIG, O_CRON,
     "cron trigger; fields year month day week day_of_week hour minute second, with "
     "APScheduler's expressions: --cron 'second=*/5', --cron 'day_of_week=mon-fri hour=9 "
     "minute=30', --cron 'day=last fri'; repeatable"},
    {"crontab", 0, "'M H DOM MON DOW'", G_TRIG, O_CRONTAB,
     "cron trigger from a crontab line: --crontab '*/5 * * * *'"},
    {"interval", 0, "DURATION", G_TRIG, O_INTERVAL,
     "interval trigger: 3s, 1m30s, 2h, 1d, 0.5s, or keywords 'hours=2 minutes=30'"},
    {"date", 0, "TIME", G_TRIG, O_DATE,
     "date trigger (runs once): 2026-11-23T10:00:00+01:00, '2026-11-23 10:00' (in --timezone), "
     "+12s (from now), now"},
    {"calendar", 0, "'KEY=N ...'", G_TRIG, O_CALENDAR,
     "calendar interval trigger (APScheduler 4): years months weeks days, at hour minute second: "
     "--calendar 'months=1 hour=9'"},
    {"trigger-json", 0, "JSON", G_TRIG, O_TRIGGER_JSON,
     "any trigger in proto JSON (as grpcurl takes it), e.g. all_of / any_of: see the "
     "examples of apsctl add --help"},
    {"timezone", 0, "ZONE", G_TRIG, O_TIMEZONE,
     "IANA time zone of the trigger (Europe/Berlin); default: the daemon's"},
    {"start-date", 0, "TIME", G_TRIG, O_START_DATE, "earliest fire time (cron, interval, calendar)"},
    {"end-date", 0, "TIME", G_TRIG, O_END_DATE, "latest fire time (cron, interval, calendar)"},
    {"jitter", 0, "DURATION", G_TRIG, O_JITTER, "random delay of 0 to DURATION added to each run"},
    /* Jobs. */
    {"id", 0, "ID", G_ADD, O_ID, "the job id (or give it as the first argument; default: generated)"},
    {"name", 0, "NAME", G_JOB, O_NAME, "human-readable name (default: the program)"},
    {"executor", 0, "NAME", G_JOB, O_EXECUTOR, "executor (default: `default` for commands)"},
    {"jobstore", 0, "NAME", G_ADD, O_JOBSTORE,
     "job store: default (persistent) or memory (lost at restart)"},
    {"misfire-grace-time", 0, "DURATION", G_JOB, O_MISFIRE,
     "how late a run may start: 30s, `unlimited`, or `default`"},
    {"coalesce", 0, NULL, G_JOB, O_COALESCE, "roll missed runs into one (APScheduler's default)"},
    {"no-coalesce", 0, NULL, G_JOB, O_NO_COALESCE, "run every missed run"},
    {"max-instances", 0, "N", G_JOB, O_MAX_INSTANCES, "most runs of the job at once (default 1)"},
    {"overlap", 0, "POLICY", G_JOB, O_OVERLAP,
     "when max-instances is reached: skip, queue-one, queue-all, cancel-running"},
    {"label", 0, "KEY=VALUE", G_JOB, O_LABEL, "a label; repeatable (modify: replaces all labels)"},
    {"next-run-time", 0, "TIME", G_JOB, O_NEXT_RUN_TIME,
     "the first (add) or next (modify) run time instead of the trigger's"},
    {"env", 0, "KEY=VALUE", G_JOB, O_ENV, "environment variable of the command; repeatable"},
    {"cwd", 0, "DIR", G_JOB, O_CWD, "working directory of the command"},
    {"command-timeout", 0, "DURATION", G_JOB, O_COMMAND_TIMEOUT, "kill the command after this long"},
    {"max-output-bytes", 0, "N", G_JOB, O_MAX_OUTPUT, "bytes of stdout/stderr kept per run"},
    {"remote", 0, "TASK", G_JOB, O_REMOTE,
     "run `module:func` in a worker (Workers.Acquire) instead of a command"},
    {"args", 0, "JSON", G_JOB, O_ARGS, "positional arguments of --remote: '[1, \"two\"]'"},
    {"kwargs", 0, "JSON", G_JOB, O_KWARGS, "keyword arguments of --remote: '{\"k\": true}'"},
    {"queue", 0, "NAME", G_JOB, O_QUEUE, "worker queue of --remote (default `default`)"},
    {"job-json", 0, "JSON", G_ADD, O_JOB_JSON,
     "the job in proto JSON (as grpcurl takes it); other options override its fields"},
    {"paused", 0, NULL, G_ADD, O_PAUSED, "add the job paused"},
    {"replace", 0, NULL, G_ADD, O_REPLACE, "replace a job with the same id (replace_existing)"},
    {"request-id", 0, "ID", G_REQ, O_REQUEST_ID,
     "idempotency key: a retry with the same id is not applied twice"},
    /* Reads. */
    {"view", 0, "basic|full", G_VIEW, O_VIEW, "with (full) or without (basic) run statistics"},
    {"paused", 0, NULL, G_LIST, O_PAUSED, "only paused jobs"},
    {"active", 0, NULL, G_LIST, O_ACTIVE, "only jobs that are not paused"},
    {"selector", 0, "SELECTOR", G_LIST, O_SELECTOR,
     "label selector: 'team=a,env!=prod', 'tier in (a,b)', '!canary'"},
    {"jobstore", 0, "NAME", G_LIST | G_RMALL, O_JOBSTORE, "only this job store"},
    {"page-size", 0, "N", G_LIST, O_PAGE_SIZE, "jobs per ListJobs call (default 100)"},
    {"limit", 0, "N", G_LIST, O_LIMIT, "list at most N jobs"},
    /* Preview and backfill. */
    {"count", 0, "N", G_PREV, O_COUNT, "number of fire times (default 10, at most 1000)"},
    {"start", 0, "TIME", G_PREV, O_START, "compute from this time (default now)"},
    {"start", 0, "TIME", G_BACK, O_START, "start of the range (inclusive); required"},
    {"end", 0, "TIME", G_BACK, O_END, "end of the range (exclusive; default now)"},
    {"max-runs", 0, "N", G_BACK, O_MAX_RUNS, "at most N runs (default: the daemon's limit, 1000)"},
    {"dry-run", 0, NULL, G_BACK, O_DRY_RUN, "only show the fire times (validate_only)"},
    /* Events. */
    {"follow", 'f', NULL, G_EVENTS, O_FOLLOW,
     "keep waiting for new events (reconnects and resumes if the daemon restarts)"},
    {"type", 0, "TYPE", G_EVENTS, O_TYPE,
     "only this event type: executed, error, missed, submitted, added, removed, modified, "
     "max_instances, scheduler_paused... (or JOB_EXECUTED, EVENT_TYPE_JOB_EXECUTED); "
     "repeatable, or comma-separated"},
    {"job", 0, "ID", G_EVENTS, O_JOB, "only events of this job; repeatable"},
    {"after", 0, "SEQ", G_EVENTS, O_AFTER,
     "start after this sequence number (default: without --follow the whole log, with --follow "
     "only new events)"},
    {"continue-after-gap", 0, NULL, G_EVENTS, O_CONTINUE_AFTER_GAP,
     "if events were pruned, go on with the oldest kept (else stop with OUT_OF_RANGE)"},
    {"bookmarks", 0, NULL, G_EVENTS, O_BOOKMARKS, "also print progress bookmarks"},
    {"count", 0, "N", G_EVENTS, O_COUNT, "stop after N events"},
    {"no-resume", 0, NULL, G_EVENTS, O_NO_RESUME,
     "do not reconnect when the daemon goes away (exit 24, UNAVAILABLE)"},
    /* Global. */
    {"server", 0, "HOST:PORT", G_ALL, O_SERVER,
     "the daemon (default $APSD_SERVER, else $APSD, else 127.0.0.1:50051); unix:/path works"},
    {"token", 0, "TOKEN", G_ALL, O_TOKEN, "bearer token (default $APSD_TOKEN)"},
    {"token-file", 0, "FILE", G_ALL, O_TOKEN_FILE, "read the bearer token from FILE"},
    {"tls", 0, NULL, G_ALL, O_TLS, "use TLS (implied by the --tls-* options)"},
    {"tls-ca", 0, "FILE", G_ALL, O_TLS_CA, "CA certificates of the server (PEM; default: system)"},
    {"tls-cert", 0, "FILE", G_ALL, O_TLS_CERT, "client certificate for mTLS (PEM), with --tls-key"},
    {"tls-key", 0, "FILE", G_ALL, O_TLS_KEY, "client private key (PEM)"},
    {"tls-server-name", 0, "NAME", G_ALL, O_TLS_NAME, "name to check in the server certificate"},
    {"timeout", 0, "DURATION", G_ALL, O_TIMEOUT, "deadline of each call (default 30s)"},
    {"json", 0, NULL, G_ALL, O_JSON,
     "print the response as proto JSON (field names as in the .proto, every scalar field "
     "present), one object per line"},
    {"help", 'h', NULL, G_ALL, O_HELP, "this help"},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

/* ---- Commands ---------------------------------------------------------------------------- */

typedef int (*cmd_fn)(ctx *x);

typedef struct command {
    const char *name;
    cmd_fn fn;
    int groups;
    int min_pos, max_pos; /* positional arguments */
    int program;          /* takes a program after -- */
    const char *usage;
    const char *summary;
    const char *help; /* description and examples */
} command;

static int print_or_json(ctx *x, const void *msg, void (*show)(const void *));

static void
show_job_v(const void *m)
{
    show_job(m);
}

static void
show_scheduler_v(const void *m)
{
    show_scheduler(m);
}

static int
finish(ctx *x, int rc, void *resp, const char *what, void (*show)(const void *))
{
    if (rc != 0)
        return call_error(x, rc, what);
    rc = print_or_json(x, resp, show);
    apsc_free(resp);
    return rc;
}

static int
print_or_json(ctx *x, const void *msg, void (*show)(const void *))
{
    if (x->o->json)
        return print_json(msg);
    show(msg);
    return 0;
}

static int
cmd_add(ctx *x)
{
    Apsd__V1__AddJobRequest *req = xcalloc(1, sizeof(*req));
    Apsd__V1__Job *job = NULL;
    apsd__v1__add_job_request__init(req);
    int rc = build_job(x, 0, &req->job, NULL);
    if (rc != 0) {
        apsc_free(req);
        return rc;
    }
    req->replace_existing = x->o->replace;
    if (x->o->request_id)
        req->request_id = xstrdup(x->o->request_id);
    rc = apsc_add_job(x->c, req, &job, &x->err);
    apsc_free(req);
    return finish(x, rc, job, "AddJob", show_job_v);
}

static int
cmd_get(ctx *x)
{
    Apsd__V1__GetJobRequest req = APSD__V1__GET_JOB_REQUEST__INIT;
    Apsd__V1__Job *job = NULL;
    req.job_id = (char *)x->o->pos.v[0];
    if (x->o->view) {
        if (strcmp(x->o->view, "basic") == 0)
            req.view = APSD__V1__JOB_VIEW__JOB_VIEW_BASIC;
        else if (strcmp(x->o->view, "full") == 0)
            req.view = APSD__V1__JOB_VIEW__JOB_VIEW_FULL;
        else
            return usage_error("--view: basic or full, not '%s'", x->o->view);
    }
    int rc = apsc_get_job(x->c, &req, &job, &x->err);
    return finish(x, rc, job, "GetJob", show_job_v);
}

static int
parse_count(const char *what, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return usage_error("%s: expected an integer from %ld to %ld, got '%s'", what, min, max, s);
    *out = v;
    return 0;
}

static int
cmd_list(ctx *x)
{
    const opts *o = x->o;
    Apsd__V1__ListJobsRequest req = APSD__V1__LIST_JOBS_REQUEST__INIT;
    Apsd__V1__ListJobsResponse *resp = NULL;
    long limit = 0, page = 0;
    int rc;

    if (o->paused && o->active)
        return usage_error("list: --paused and --active exclude each other");
    if (o->paused || o->active) {
        req.optional_paused_case = APSD__V1__LIST_JOBS_REQUEST__OPTIONAL_PAUSED_PAUSED;
        req.paused = o->paused;
    }
    if (o->jobstore)
        req.jobstore = (char *)o->jobstore;
    if (o->selector)
        req.label_selector = (char *)o->selector;
    if (o->view) {
        if (strcmp(o->view, "basic") == 0)
            req.view = APSD__V1__JOB_VIEW__JOB_VIEW_BASIC;
        else if (strcmp(o->view, "full") == 0)
            req.view = APSD__V1__JOB_VIEW__JOB_VIEW_FULL;
        else
            return usage_error("--view: basic or full, not '%s'", o->view);
    }
    if (o->page_size && (rc = parse_count("--page-size", o->page_size, 1, 1000, &page)) != 0)
        return rc;
    if (o->limit && (rc = parse_count("--limit", o->limit, 1, 1000000, &limit)) != 0)
        return rc;
    req.page_size = (int32_t)page;
    if (limit && (page == 0 || page > limit) && limit <= 1000)
        req.page_size = (int32_t)limit;
    rc = apsc_list_all_jobs(x->c, &req, (size_t)limit, &resp, &x->err);
    if (rc != 0)
        return call_error(x, rc, "ListJobs");
    if (limit && resp->n_jobs > (size_t)limit) {
        for (size_t i = (size_t)limit; i < resp->n_jobs; i++)
            apsc_free(resp->jobs[i]);
        resp->n_jobs = (size_t)limit;
    }
    if (o->json)
        rc = print_json(resp);
    else
        show_job_table(resp->jobs, resp->n_jobs);
    apsc_free(resp);
    return rc;
}

static int
cmd_modify(ctx *x)
{
    Apsd__V1__ModifyJobRequest *req = xcalloc(1, sizeof(*req));
    Apsd__V1__Job *job = NULL;
    strlist mask = {NULL, 0, 0};
    apsd__v1__modify_job_request__init(req);
    int rc = build_job(x, 1, &req->job, &mask);
    if (rc == 0 && mask.n == 0)
        rc = usage_error("modify: nothing to change (give --name, a trigger, -- PROGRAM, "
                         "--max-instances...; see apsctl modify --help)");
    if (rc != 0) {
        free(mask.v);
        apsc_free(req);
        return rc;
    }
    req->update_mask = xcalloc(1, sizeof(*req->update_mask));
    google__protobuf__field_mask__init(req->update_mask);
    req->update_mask->paths = xcalloc(mask.n, sizeof(char *));
    for (size_t i = 0; i < mask.n; i++)
        req->update_mask->paths[req->update_mask->n_paths++] = xstrdup(mask.v[i]);
    free(mask.v);
    if (x->o->request_id)
        req->request_id = xstrdup(x->o->request_id);
    rc = apsc_modify_job(x->c, req, &job, &x->err);
    apsc_free(req);
    return finish(x, rc, job, "ModifyJob", show_job_v);
}

static int
cmd_reschedule(ctx *x)
{
    Apsd__V1__RescheduleJobRequest req = APSD__V1__RESCHEDULE_JOB_REQUEST__INIT;
    Apsd__V1__Job *job = NULL;
    int rc = build_trigger(x, 1, &req.trigger);
    if (rc != 0)
        return rc;
    req.job_id = (char *)x->o->pos.v[0];
    if (x->o->request_id)
        req.request_id = (char *)x->o->request_id;
    rc = apsc_reschedule_job(x->c, &req, &job, &x->err);
    apsc_free(req.trigger);
    return finish(x, rc, job, "RescheduleJob", show_job_v);
}

/* pause, resume, remove: one call per id, stopping at the first error. */
static int
each_id(ctx *x, int which)
{
    for (size_t i = 0; i < x->o->pos.n; i++) {
        char *id = (char *)x->o->pos.v[i];
        char *rid = (char *)(x->o->request_id ? x->o->request_id : "");
        int rc;
        if (which == 0 || which == 1) {
            Apsd__V1__Job *job = NULL;
            if (which == 0) {
                Apsd__V1__PauseJobRequest req = APSD__V1__PAUSE_JOB_REQUEST__INIT;
                req.job_id = id;
                req.request_id = rid;
                rc = apsc_pause_job(x->c, &req, &job, &x->err);
            } else {
                Apsd__V1__ResumeJobRequest req = APSD__V1__RESUME_JOB_REQUEST__INIT;
                req.job_id = id;
                req.request_id = rid;
                rc = apsc_resume_job(x->c, &req, &job, &x->err);
            }
            if (rc != 0)
                return call_error(x, rc, which ? "ResumeJob" : "PauseJob");
            if (x->o->json) {
                rc = print_json(job);
            } else {
                char tb[APSC_TIME_BUFSZ];
                printf("%s %s: next run %s\n", which ? "resumed" : "paused", job->id,
                       job->next_run_time ? ts_str(job->next_run_time, tb) : "- (paused)");
            }
            apsc_free(job);
            if (rc != 0)
                return rc;
        } else {
            Apsd__V1__RemoveJobRequest req = APSD__V1__REMOVE_JOB_REQUEST__INIT;
            Apsd__V1__RemoveJobResponse *resp = NULL;
            req.job_id = id;
            req.request_id = rid;
            rc = apsc_remove_job(x->c, &req, &resp, &x->err);
            if (rc != 0)
                return call_error(x, rc, "RemoveJob");
            if (x->o->json)
                rc = print_json(resp);
            else
                printf("removed %s\n", id);
            apsc_free(resp);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

static int
cmd_pause(ctx *x)
{
    return each_id(x, 0);
}

static int
cmd_resume(ctx *x)
{
    return each_id(x, 1);
}

static int
cmd_remove(ctx *x)
{
    return each_id(x, 2);
}

static int
cmd_run(ctx *x)
{
    Apsd__V1__RunJobNowRequest req = APSD__V1__RUN_JOB_NOW_REQUEST__INIT;
    Apsd__V1__RunJobNowResponse *resp = NULL;
    char tb[APSC_TIME_BUFSZ];
    req.job_id = (char *)x->o->pos.v[0];
    if (x->o->request_id)
        req.request_id = (char *)x->o->request_id;
    int rc = apsc_run_job_now(x->c, &req, &resp, &x->err);
    if (rc != 0)
        return call_error(x, rc, "RunJobNow");
    if (x->o->json)
        rc = print_json(resp);
    else
        printf("run %s of %s %s at %s\n", resp->run_id, req.job_id,
               resp->queued ? "queued" : "started", ts_str(resp->scheduled_run_time, tb));
    apsc_free(resp);
    return rc;
}

static int
cmd_remove_all(ctx *x)
{
    Apsd__V1__RemoveAllJobsRequest req = APSD__V1__REMOVE_ALL_JOBS_REQUEST__INIT;
    Apsd__V1__RemoveAllJobsResponse *resp = NULL;
    if (x->o->jobstore)
        req.jobstore = (char *)x->o->jobstore;
    if (x->o->request_id)
        req.request_id = (char *)x->o->request_id;
    int rc = apsc_remove_all_jobs(x->c, &req, &resp, &x->err);
    if (rc != 0)
        return call_error(x, rc, "RemoveAllJobs");
    if (x->o->json)
        rc = print_json(resp);
    else
        printf("removed %d job%s\n", resp->removed_count, resp->removed_count == 1 ? "" : "s");
    apsc_free(resp);
    return rc;
}

static int
cmd_preview(ctx *x)
{
    Apsd__V1__PreviewTriggerRequest req = APSD__V1__PREVIEW_TRIGGER_REQUEST__INIT;
    Apsd__V1__PreviewTriggerResponse *resp = NULL;
    long count = 0;
    int rc = 0;

    if (x->o->count && (rc = parse_count("--count", x->o->count, 1, 2147483647, &count)) != 0)
        return rc;
    req.count = (int32_t)count;
    rc = build_trigger(x, 1, &req.trigger);
    if (rc == 0 && x->o->start)
        rc = parse_time_arg(x, "--start", x->o->start, x->o->timezone, &req.start_time);
    if (rc == 0) {
        rc = apsc_preview_trigger(x->c, &req, &resp, &x->err);
        if (rc != 0) {
            rc = call_error(x, rc, "PreviewTrigger");
        } else {
            if (x->o->json)
                rc = print_json(resp);
            else
                show_preview(resp);
            apsc_free(resp);
        }
    }
    apsc_free(req.trigger);
    apsc_free(req.start_time);
    return rc;
}

static int
cmd_backfill(ctx *x)
{
    Apsd__V1__BackfillRequest req = APSD__V1__BACKFILL_REQUEST__INIT;
    Apsd__V1__BackfillResponse *resp = NULL;
    long max_runs = 0;
    int rc = 0;

    if (x->o->start == NULL)
        return usage_error("backfill: --start TIME is required");
    if (x->o->max_runs && (rc = parse_count("--max-runs", x->o->max_runs, 1, 1000000, &max_runs)))
        return rc;
    req.job_id = (char *)x->o->pos.v[0];
    req.max_runs = (int32_t)max_runs;
    req.validate_only = x->o->dry_run;
    if (x->o->request_id)
        req.request_id = (char *)x->o->request_id;
    rc = parse_time_arg(x, "--start", x->o->start, NULL, &req.start_time);
    if (rc == 0)
        rc = parse_time_arg(x, "--end", x->o->end ? x->o->end : "now", NULL, &req.end_time);
    if (rc == 0) {
        rc = apsc_backfill(x->c, &req, &resp, &x->err);
        if (rc != 0) {
            rc = call_error(x, rc, "Backfill");
        } else {
            if (x->o->json)
                rc = print_json(resp);
            else
                show_backfill(resp);
            apsc_free(resp);
        }
    }
    apsc_free(req.start_time);
    apsc_free(req.end_time);
    return rc;
}

static int
cmd_state(ctx *x)
{
    Apsd__V1__GetSchedulerRequest req = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = NULL;
    int rc = apsc_get_scheduler(x->c, &req, &info, &x->err);
    return finish(x, rc, info, "GetScheduler", show_scheduler_v);
}

static int
cmd_pause_scheduler(ctx *x)
{
    Apsd__V1__PauseSchedulerRequest req = APSD__V1__PAUSE_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = NULL;
    if (x->o->request_id)
        req.request_id = (char *)x->o->request_id;
    int rc = apsc_pause_scheduler(x->c, &req, &info, &x->err);
    return finish(x, rc, info, "PauseScheduler", show_scheduler_v);
}

static int
cmd_resume_scheduler(ctx *x)
{
    Apsd__V1__ResumeSchedulerRequest req = APSD__V1__RESUME_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = NULL;
    if (x->o->request_id)
        req.request_id = (char *)x->o->request_id;
    int rc = apsc_resume_scheduler(x->c, &req, &info, &x->err);
    return finish(x, rc, info, "ResumeScheduler", show_scheduler_v);
}

/* The open event stream, for the signal thread: SIGINT/SIGTERM stop it and
 * `events --follow` then exits 0. */
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static apsc_stream *sig_stream;
static volatile int sig_caught;

static int
cmd_events(ctx *x)
{
    const opts *o = x->o;
    Apsd__V1__SubscribeEventsRequest req = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    apsc_stream_options so = APSC_STREAM_OPTIONS_INIT;
    apsc_stream *s = NULL;
    Apsd__V1__EventType types[32];
    long count = 0, printed = 0;
    int rc = 0;

    for (size_t i = 0; i < o->types.n; i++) {
        char *list = xstrdup(o->types.v[i]), *save = NULL;
        for (char *t = strtok_r(list, ", ", &save); t != NULL; t = strtok_r(NULL, ", ", &save)) {
            int v = event_type_from_name(t);
            if (v < 0) {
                rc = usage_error("--type: unknown event type '%s' (executed, error, missed, "
                                 "submitted, max_instances, added, removed, modified, "
                                 "all_jobs_removed, scheduler_started, scheduler_shutdown, "
                                 "scheduler_paused, scheduler_resumed, executor_added, "
                                 "executor_removed, jobstore_added, jobstore_removed)",
                                 t);
                free(list);
                return rc;
            }
            if (req.n_types == sizeof types / sizeof types[0]) {
                free(list);
                return usage_error("--type: too many types");
            }
            types[req.n_types++] = (Apsd__V1__EventType)v;
        }
        free(list);
    }
    req.types = types;
    req.n_job_ids = o->jobs.n;
    req.job_ids = (char **)o->jobs.v;
    if (o->after) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(o->after, &end, 10);
        if (o->after[0] == '\0' || o->after[0] == '-' || *end != '\0' || errno != 0)
            return usage_error("--after: expected a sequence number, got '%s'", o->after);
        req.optional_after_sequence_case =
            APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
        req.after_sequence = v;
    } else if (!o->follow) {
        req.optional_after_sequence_case =
            APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
        req.after_sequence = 0; /* the whole retained log */
    }
    if (o->count && (rc = parse_count("--count", o->count, 1, 1000000000, &count)) != 0)
        return rc;
    req.continue_after_gap = o->continue_after_gap;
    /* Bookmarks say when the replay of the log is done (the end, without
     * --follow); they are printed only with --bookmarks. */
    req.send_bookmarks = 1;
    so.resume = !o->no_resume;

    rc = apsc_subscribe_events(x->c, &req, &so, &s, &x->err);
    if (rc != 0)
        return call_error(x, rc, "SubscribeEvents");
    pthread_mutex_lock(&sig_mu);
    sig_stream = s;
    if (sig_caught)
        apsc_stream_stop(s);
    pthread_mutex_unlock(&sig_mu);
    if (!o->json)
        printf("%6s  %-24s  %-17s  %-16s  %s\n", "SEQ", "TIME (UTC)", "TYPE", "JOB", "DETAILS");
    fflush(stdout);
    for (;;) {
        Apsd__V1__SubscribeEventsResponse *item = NULL;
        rc = apsc_events_next(s, -1, &item, &x->err);
        if (rc == APSC_EOF) {
            rc = 0;
            break;
        }
        if (rc != 0) {
            rc = call_error(x, rc, "SubscribeEvents");
            break;
        }
        int is_bm = item->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_BOOKMARK;
        int done = is_bm && !o->follow && item->bookmark->caught_up;
        if (!is_bm || o->bookmarks) {
            if (o->json)
                rc = print_json(item);
            else
                show_event_item(item, o->bookmarks);
            fflush(stdout);
        }
        if (item->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT && count &&
            ++printed >= count)
            done = 1;
        apsc_free(item);
        if (done || rc != 0)
            break;
    }
    pthread_mutex_lock(&sig_mu);
    sig_stream = NULL;
    pthread_mutex_unlock(&sig_mu);
    apsc_stream_close(s);
    return rc;
}

#define TRIGGER_EXAMPLES                                                                        \
    "  apsctl add seed-cron --cron 'second=*/5' -- /bin/echo 定时任务\n"                         \
    "  apsctl add seed-once --date +12s -- /bin/echo 一次性任务\n"                               \
    "  apsctl add seed-interval --interval 3s -- /bin/echo 循环任务\n"

static const command commands[] = {
    {"add", cmd_add, G_ALL | G_TRIG | G_JOB | G_ADD | G_REQ, 0, 1, 1,
     "apsctl add [ID] TRIGGER [OPTIONS] -- PROGRAM [ARGS...]",
     "add a job: a trigger, then the command after --",
     "Adds a job (AddJob) and prints it. Without a trigger the job runs once, now (or at\n"
     "--next-run-time), as APScheduler's add_job(func) does. The program is run without a\n"
     "shell; use -- /bin/sh -c '...' for one.\n"
     "\nExamples (the brief's three jobs, Berlin office hours, a remote task, an OR):\n" TRIGGER_EXAMPLES
     "  apsctl add standup --cron 'day_of_week=mon-fri hour=9 minute=30' \\\n"
     "      --timezone Europe/Berlin --label team=a -- /usr/bin/logger standup\n"
     "  apsctl add backup --crontab '0 3 * * *' --max-instances 1 --overlap skip \\\n"
     "      --command-timeout 1h -- /usr/local/bin/backup --full\n"
     "  apsctl add cleanup --interval 1h --remote myapp.jobs:cleanup \\\n"
     "      --kwargs '{\"days\": 7}'\n"
     "  apsctl add twice-a-day --trigger-json \\\n"
     "      '{\"any_of\":{\"triggers\":[{\"cron\":{\"hour\":\"9\"}},{\"cron\":{\"hour\":\"17\"}}]}}' \\\n"
     "      -- /bin/date\n"},
    {"get", cmd_get, G_ALL | G_VIEW, 1, 1, 0, "apsctl get ID [--view basic|full]",
     "show a job with its run statistics",
     "Shows one job (GetJob), with its statistics unless --view basic.\n"
     "\nExamples:\n  apsctl get seed-cron\n  apsctl get seed-cron --json\n"},
    {"list", cmd_list, G_ALL | G_VIEW | G_LIST, 0, 0, 0, "apsctl list [OPTIONS]",
     "list jobs (every page)",
     "Lists jobs ordered by id (ListJobs, every page). With --json: one ListJobsResponse\n"
     "object {\"jobs\": [...]} on one line.\n"
     "\nExamples:\n  apsctl list\n  apsctl list --paused\n  apsctl list --selector 'team=a'\n"
     "  apsctl list --json\n"},
    {"modify", cmd_modify, G_ALL | G_TRIG | G_JOB | G_REQ, 1, 1, 1,
     "apsctl modify ID [OPTIONS] [TRIGGER] [-- PROGRAM [ARGS...]]", "change fields of a job",
     "Changes the fields given (ModifyJob with an update_mask of exactly those). A new\n"
     "trigger does not move the next run time (use reschedule, or --next-run-time); a new\n"
     "command after -- replaces the target whole; --label replaces all labels.\n"
     "\nExamples:\n  apsctl modify seed-cron --name heartbeat --max-instances 2\n"
     "  apsctl modify seed-cron -- /bin/echo changed\n"
     "  apsctl modify seed-cron --next-run-time +1m\n"},
    {"reschedule", cmd_reschedule, G_ALL | G_TRIG | G_REQ, 1, 1, 0,
     "apsctl reschedule ID TRIGGER", "give a job a new trigger (next run recomputed)",
     "Replaces a job's trigger and recomputes its next run time from now (RescheduleJob).\n"
     "\nExamples:\n  apsctl reschedule seed-cron --cron 'second=*/10'\n"
     "  apsctl reschedule seed-cron --crontab '*/5 * * * *' --timezone Europe/Berlin\n"},
    {"pause", cmd_pause, G_ALL | G_REQ, 1, 1000, 0, "apsctl pause ID...", "pause jobs",
     "Pauses jobs (PauseJob): they keep their trigger but do not fire until resumed.\n"
     "\nExample:\n  apsctl pause seed-cron seed-interval\n"},
    {"resume", cmd_resume, G_ALL | G_REQ, 1, 1000, 0, "apsctl resume ID...", "resume jobs",
     "Resumes jobs (ResumeJob): the next run time is recomputed from now.\n"
     "\nExample:\n  apsctl resume seed-cron\n"},
    {"run", cmd_run, G_ALL | G_REQ, 1, 1, 0, "apsctl run ID", "run a job once now",
     "Starts one extra run of a job now (RunJobNow); its schedule is unchanged. Follow\n"
     "the result with `apsctl events --follow --job ID`.\n"
     "\nExample:\n  apsctl run seed-cron\n"},
    {"remove", cmd_remove, G_ALL | G_REQ, 1, 1000, 0, "apsctl remove ID...", "remove jobs",
     "Removes jobs (RemoveJob). A job that does not exist: exit 15 (NOT_FOUND).\n"
     "\nExamples:\n  apsctl remove seed-once\n"
     "  apsctl remove seed-once || [ $? -eq 15 ]   # already gone is fine\n"},
    {"remove-all", cmd_remove_all, G_ALL | G_RMALL | G_REQ, 0, 0, 0,
     "apsctl remove-all [--jobstore NAME]", "remove every job (of one job store)",
     "Removes every job, or every job of one job store (RemoveAllJobs).\n"
     "\nExamples:\n  apsctl remove-all\n  apsctl remove-all --jobstore memory\n"},
    {"preview", cmd_preview, G_ALL | G_TRIG | G_PREV, 0, 0, 0, "apsctl preview TRIGGER [OPTIONS]",
     "show the next fire times of a trigger",
     "Computes the next fire times of a trigger without adding a job (PreviewTrigger).\n"
     "\nExamples:\n  apsctl preview --cron 'day=last fri hour=5' --count 3\n"
     "  apsctl preview --crontab '30 9 * * 1-5' --timezone Europe/Berlin\n"
     "  apsctl preview --interval 1h30m --start 2026-01-01T00:00:00Z --count 3\n"},
    {"backfill", cmd_backfill, G_ALL | G_BACK | G_REQ, 1, 1, 0,
     "apsctl backfill ID --start TIME [--end TIME] [--max-runs N] [--dry-run]",
     "run a job's past fire times of a range",
     "Runs a job once for each fire time of its trigger in [--start, --end) (Backfill).\n"
     "\nExamples:\n  apsctl backfill seed-cron --start -1m --dry-run   # the last minute\n"
     "  apsctl backfill seed-cron --start 2026-11-27T05:00:00Z \\\n"
     "      --end 2026-11-27T05:01:00Z\n"},
    {"events", cmd_events, G_ALL | G_EVENTS, 0, 0, 0, "apsctl events [OPTIONS]",
     "print events (--follow to wait for more)",
     "Prints events from the daemon's durable event log (SubscribeEvents). Without --follow\n"
     "it prints the retained log (after --after SEQ) and exits; with --follow it then waits\n"
     "for new events until interrupted (SIGINT/SIGTERM: exit 0) or --count is reached. When\n"
     "the daemon restarts, the stream reconnects and resumes after the last sequence seen,\n"
     "so no event is lost or repeated. --json prints one SubscribeEventsResponse object per\n"
     "line ({\"event\": {...}} or {\"gap\": {...}}).\n"
     "\nExamples:\n  apsctl events\n"
     "  apsctl events --follow --job seed-interval --type executed,error\n"
     "  apsctl events --follow --after 42 --json\n"
     "  apsctl events --follow --type executed --count 1   # wait for one run\n"},
    {"state", cmd_state, G_ALL, 0, 0, 0, "apsctl state", "show the scheduler",
     "Shows the scheduler (GetScheduler): state, version, time zone, job stores, executors,\n"
     "event log bounds.\n\nExample:\n  apsctl state\n"},
    {"pause-scheduler", cmd_pause_scheduler, G_ALL | G_REQ, 0, 0, 0, "apsctl pause-scheduler",
     "stop firing jobs (the state persists)",
     "Pauses job processing for the whole scheduler (PauseScheduler).\n"
     "\nExample:\n  apsctl pause-scheduler\n"},
    {"resume-scheduler", cmd_resume_scheduler, G_ALL | G_REQ, 0, 0, 0, "apsctl resume-scheduler",
     "fire jobs again",
     "Resumes job processing (ResumeScheduler); missed runs follow each job's\n"
     "misfire_grace_time and coalesce.\n\nExample:\n  apsctl resume-scheduler\n"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const char exit_codes_help[] =
    "Exit codes:\n"
    "  0       success\n"
    "  1       local failure (unreadable file, bad TLS files, undecodable response)\n"
    "  2       usage error (unknown command or option, bad value)\n"
    "  10+N    the call failed with gRPC status N (any of 1-16); stderr has\n"
    "          `apsctl: STATUS_NAME: message`. The usual ones:\n"
    "          11 CANCELLED           13 INVALID_ARGUMENT    14 DEADLINE_EXCEEDED\n"
    "          15 NOT_FOUND           16 ALREADY_EXISTS      17 PERMISSION_DENIED\n"
    "          18 RESOURCE_EXHAUSTED  19 FAILED_PRECONDITION 20 ABORTED\n"
    "          21 OUT_OF_RANGE        22 UNIMPLEMENTED       23 INTERNAL\n"
    "          24 UNAVAILABLE (daemon not reachable)         26 UNAUTHENTICATED\n";

static void
print_option(const optdef *d)
{
    char left[64];
    if (d->shortc)
        snprintf(left, sizeof left, "-%c, --%s%s%s", d->shortc, d->name, d->arg ? " " : "",
                 d->arg ? d->arg : "");
    else
        snprintf(left, sizeof left, "--%s%s%s", d->name, d->arg ? " " : "", d->arg ? d->arg : "");
    /* Wrap the help text at 78 columns, indented past the option column. */
    const char *h = d->help;
    printf("  %-26s", left);
    if (strlen(left) >= 26)
        printf("\n%28s", "");
    int col = 28;
    while (*h) {
        /* A word; a quoted example ('M H DOM MON DOW') is one word, never
         * broken (an apostrophe inside a word does not open a quote). */
        const char *sp = h;
        if (*h == '\'' && strchr(h + 1, '\'') != NULL)
            sp = strchr(h + 1, '\'') + 1;
        while (*sp && *sp != ' ')
            sp++;
        int wl = (int)(sp - h);
        if (col > 28 && col + 1 + wl > 78) {
            printf("\n%28s", "");
            col = 28;
        } else if (col > 28) {
            putchar(' ');
            col++;
        }
        printf("%.*s", wl, h);
        col += wl;
        h = sp;
        while (*h == ' ')
            h++;
    }
    putchar('\n');
}

static void
print_options(int groups, int exclude)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if ((options[i].groups & groups) && !(options[i].groups & exclude))
            print_option(&options[i]);
}

static void
main_help(void)
{
    printf("Usage: apsctl [GLOBAL OPTIONS] COMMAND [ARGS] [OPTIONS] [-- PROGRAM ARGS...]\n"
           "\n"
           "apsctl is the command-line client of apsd, APScheduler rebuilt as a C daemon.\n"
           "It talks gRPC to the daemon (apsd.v1.Scheduler); options may come in any order.\n"
           "\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        printf("  %-18s %s\n", commands[i].name, commands[i].summary);
    printf("Run `apsctl COMMAND --help` for its options and examples.\n"
           "\nGlobal options (every command):\n");
    print_options(G_ALL, 0);
    printf("\nTriggers (add, modify, reschedule, preview) use APScheduler's keywords:\n");
    print_options(G_TRIG, 0);
    printf("\nTIME is RFC 3339 (2026-11-23T10:00:00+01:00, ...Z), a local time\n"
           "'2026-11-23 10:00[:00]' read in --timezone (default: the daemon's zone),\n"
           "+DURATION from now (+12s), -DURATION before now (-1h), or now.\n"
           "DURATION is 3s, 1m30s, 2h, 1d, 1w, 0.5s, 250ms.\n"
           "\n%s"
           "\nOutput: tables for people by default. --json prints proto JSON (the names of\n"
           "the .proto, as grpcurl prints them: snake_case, enums by name, 64-bit integers\n"
           "as strings, times in RFC 3339), one JSON object per line.\n"
           "\nExamples (the brief's three jobs: cron every 5 s, once in 12 s, every 3 s):\n" TRIGGER_EXAMPLES
           "  apsctl list\n"
           "  apsctl events --follow --job seed-interval --type executed --count 2\n"
           "  apsctl get seed-cron --json\n"
           "  apsctl preview --cron 'day_of_week=mon-fri hour=9' --timezone Europe/Berlin\n"
           "  apsctl pause seed-cron; apsctl resume seed-cron\n"
           "  apsctl remove seed-once || [ $? -eq 15 ]   # 15 = NOT_FOUND: it ran, is gone\n"
           "\nA daemon elsewhere, with TLS and bearer tokens (apsd --tls-cert --token-file):\n"
           "  apsctl --server apsd.example:50051 --tls-ca ca.pem \\\n"
           "      --token-file ~/.apsd-token state\n",
           exit_codes_help);
}

/* Prints `text` word-wrapped at 78 columns (its newlines are spaces). */
static void
print_wrapped(const char *text, size_t len)
{
    int col = 0;
    const char *h = text, *end = text + len;
    while (h < end) {
        while (h < end && (*h == ' ' || *h == '\n'))
            h++;
        const char *sp = h;
        while (sp < end && *sp != ' ' && *sp != '\n')
            sp++;
        int wl = (int)(sp - h);
        if (wl == 0)
            break;
        if (col > 0 && col + 1 + wl > 78) {
            putchar('\n');
            col = 0;
        } else if (col > 0) {
            putchar(' ');
            col++;
        }
        printf("%.*s", wl, h);
        col += wl;
        h = sp;
    }
    if (col > 0)
        putchar('\n');
}

static void
command_help(const command *c)
{
    const char *ex = strstr(c->help, "\nExample");
    size_t dlen = ex ? (size_t)(ex - c->help) : strlen(c->help);
    printf("Usage: %s\n\n", c->usage);
    print_wrapped(c->help, dlen);
    if (ex != NULL)
        fputs(ex, stdout);
    int own = c->groups & ~G_ALL;
    if (own) {
        printf("\nOptions:\n");
        print_options(own, 0);
    }
    printf("\nGlobal options: --server HOST:PORT, --token TOKEN, --token-file FILE, --tls,\n"
           "--tls-ca FILE, --tls-cert FILE, --tls-key FILE, --tls-server-name NAME,\n"
           "--timeout DURATION, --json, -h/--help (see apsctl --help).\n"
           "\nExit codes: 0 ok, 2 usage error, 10 + gRPC status when the call fails\n"
           "(15 NOT_FOUND, 16 ALREADY_EXISTS, 13 INVALID_ARGUMENT, 24 UNAVAILABLE...),\n"
           "1 other failures.\n");
}

static const optdef *
find_option(const char *name, size_t len, char shortc, int groups)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const optdef *d = &options[i];
        if (!(d->groups & groups))
            continue;
        if (shortc ? d->shortc == shortc
                   : strlen(d->name) == len && strncmp(d->name, name, len) == 0)
            return d;
    }
    return NULL;
}

static const command *
find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Whether a global option takes a value (for finding the command word). */
static int
global_takes_value(const char *arg)
{
    if (strncmp(arg, "--", 2) != 0 || strchr(arg, '=') != NULL)
        return 0;
    const optdef *d = find_option(arg + 2, strlen(arg + 2), 0, G_ALL);
    return d != NULL && d->arg != NULL;
}

static int
set_option(opts *o, const optdef *d, const char *v)
{
    switch (d->id) {
    case O_SERVER: o->server = v; break;
    case O_TOKEN: o->token = v; break;
    case O_TOKEN_FILE: o->token_file = v; break;
    case O_TLS: o->tls = 1; break;
    case O_TLS_CA: o->tls_ca = v; break;
    case O_TLS_CERT: o->tls_cert = v; break;
    case O_TLS_KEY: o->tls_key = v; break;
    case O_TLS_NAME: o->tls_server_name = v; break;
    case O_TIMEOUT: o->timeout = v; break;
    case O_JSON: o->json = 1; break;
    case O_HELP: o->help = 1; break;
    case O_CRON: strlist_add(&o->cron, v); break;
    case O_CRONTAB: o->crontab = v; break;
    case O_INTERVAL: o->interval = v; break;
    case O_DATE: o->date = v; break;
    case O_CALENDAR: strlist_add(&o->calendar, v); break;
    case O_TRIGGER_JSON: o->trigger_json = v; break;
    case O_TIMEZONE: o->timezone = v; break;
    case O_START_DATE: o->start_date = v; break;
    case O_END_DATE: o->end_date = v; break;
    case O_JITTER: o->jitter = v; break;
    case O_ID: o->id = v; break;
    case O_NAME: o->name = v; break;
    case O_EXECUTOR: o->executor = v; break;
    case O_JOBSTORE: o->jobstore = v; break;
    case O_MISFIRE: o->misfire = v; break;
    case O_COALESCE: o->coalesce = 1; break;
    case O_NO_COALESCE: o->coalesce = 0; break;
    case O_MAX_INSTANCES: o->max_instances = v; break;
    case O_OVERLAP: o->overlap = v; break;
    case O_LABEL: strlist_add(&o->labels, v); break;
    case O_NEXT_RUN_TIME: o->next_run_time = v; break;
    case O_ENV: strlist_add(&o->env, v); break;
    case O_CWD: o->cwd = v; break;
    case O_COMMAND_TIMEOUT: o->command_timeout = v; break;
    case O_MAX_OUTPUT: o->max_output = v; break;
    case O_REMOTE: o->remote = v; break;
    case O_ARGS: o->args = v; break;
    case O_KWARGS: o->kwargs = v; break;
    case O_QUEUE: o->queue = v; break;
    case O_JOB_JSON: o->job_json = v; break;
    case O_PAUSED: o->paused = 1; break;
    case O_REPLACE: o->replace = 1; break;
    case O_REQUEST_ID: o->request_id = v; break;
    case O_VIEW: o->view = v; break;
    case O_ACTIVE: o->active = 1; break;
    case O_SELECTOR: o->selector = v; break;
    case O_PAGE_SIZE: o->page_size = v; break;
    case O_LIMIT: o->limit = v; break;
    case O_COUNT: o->count = v; break;
    case O_START: o->start = v; break;
    case O_END: o->end = v; break;
    case O_MAX_RUNS: o->max_runs = v; break;
    case O_DRY_RUN: o->dry_run = 1; break;
    case O_FOLLOW: o->follow = 1; break;
    case O_TYPE: strlist_add(&o->types, v); break;
    case O_JOB: strlist_add(&o->jobs, v); break;
    case O_AFTER: o->after = v; break;
    case O_CONTINUE_AFTER_GAP: o->continue_after_gap = 1; break;
    case O_BOOKMARKS: o->bookmarks = 1; break;
    case O_NO_RESUME: o->no_resume = 1; break;
    default: return usage_error("internal: option %s", d->name);
    }
    return 0;
}

static int
parse_args(int argc, char **argv, const command **cmd_out, opts *o)
{
    const command *cmd = NULL;
    int cmd_index = -1;

    /* The command is the first word that is not an option or the value of
     * a global option. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            if (global_takes_value(argv[i]))
                i++;
            continue;
        }
        cmd = find_command(argv[i]);
        if (cmd == NULL)
            return usage_error("unknown command '%s' (see apsctl --help)", argv[i]);
        cmd_index = i;
        break;
    }
    int groups = cmd ? cmd->groups : G_ALL;
    const char *where = cmd ? cmd->name : "apsctl";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i == cmd_index)
            continue;
        if (strcmp(a, "--") == 0) {
            if (cmd == NULL || !cmd->program)
                return usage_error("%s takes no program after --", where);
            o->dashdash = 1;
            o->argv = argv + i + 1;
            o->argc = argc - i - 1;
            break;
        }
        if (a[0] == '-' && a[1] != '\0') {
            const optdef *d;
            const char *val = NULL;
            if (a[1] == '-') {
                const char *eq = strchr(a + 2, '=');
                size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
                d = find_option(a + 2, len, 0, groups);
                if (d == NULL)
                    return usage_error("%s: unknown option --%.*s (see apsctl %s--help)", where,
                                       (int)len, a + 2, cmd ? cmd->name : "");
                if (eq != NULL) {
                    if (d->arg == NULL)
                        return usage_error("--%s takes no value", d->name);
                    val = eq + 1;
                }
            } else {
                d = a[2] == '\0' ? find_option(NULL, 0, a[1], groups) : NULL;
                if (d == NULL)
                    return usage_error("%s: unknown option %s (see apsctl %s--help)", where, a,
                                       cmd ? cmd->name : "");
            }
            if (d->arg != NULL && val == NULL) {
                if (i + 1 >= argc)
                    return usage_error("--%s needs a value (%s)", d->name, d->arg);
                val = argv[++i];
            }
            int rc = set_option(o, d, val);
            if (rc != 0)
                return rc;
            continue;
        }
        strlist_add(&o->pos, a);
    }
    *cmd_out = cmd;
    return 0;
}

/* ---- Signals ----------------------------------------------------------------------------- */

/* gRPC's threads inherit the signal mask of the thread that starts them, so
 * SIGINT/SIGTERM are blocked before the client exists and handled here
 * (grpc-core.md, point 7): an event stream is stopped cleanly, anything else
 * exits at once. */
static void *
signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig;
    for (;;) {
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&sig_mu);
        sig_caught = sig;
        if (sig_stream != NULL) {
            apsc_stream_stop(sig_stream);
            pthread_mutex_unlock(&sig_mu);
            continue;
        }
        pthread_mutex_unlock(&sig_mu);
        _exit(128 + sig);
    }
    return NULL;
}

static int
read_token_file(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    if (f == NULL) {
        fprintf(stderr, "apsctl: --token-file %s: %s\n", path, strerror(errno));
        return EXIT_LOCAL;
    }
    if (fgets(line, sizeof line, f) == NULL)
        line[0] = '\0';
    fclose(f);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    if (n == 0) {
        fprintf(stderr, "apsctl: --token-file %s: empty\n", path);
        return EXIT_LOCAL;
    }
    *out = xstrdup(line);
    return 0;
}

int
main(int argc, char **argv)
{
    opts o;
    ctx x;
    const command *cmd = NULL;
    char *token = NULL;
    int rc;

    memset(&o, 0, sizeof o);
    memset(&x, 0, sizeof x);
    o.coalesce = -1;
    x.o = &o;
    apsc_error_init(&x.err);

    rc = parse_args(argc, argv, &cmd, &o);
    if (rc != 0)
        goto out;
    if (cmd == NULL) {
        if (o.help || argc == 1) {
            main_help();
            rc = argc == 1 ? EXIT_USAGE : 0;
        } else {
            rc = usage_error("no command given (see apsctl --help)");
        }
        goto out;
    }
    if (o.help) {
        command_help(cmd);
        goto out;
    }
    if ((int)o.pos.n < cmd->min_pos || (int)o.pos.n > cmd->max_pos) {
        if (o.pos.n > (size_t)cmd->max_pos && cmd->program && !o.dashdash)
            rc = usage_error("%s: too many arguments; put the program after --, e.g. %s", cmd->name,
                             cmd->usage);
        else
            rc = usage_error("%s: wrong number of arguments; usage: %s", cmd->name, cmd->usage);
        goto out;
    }
    if (o.dashdash && o.argc == 0) {
        rc = usage_error("%s: no program after --", cmd->name);
        goto out;
    }

    apsc_options co = APSC_OPTIONS_INIT;
    co.target = o.server ? o.server : getenv("APSD_SERVER") ? getenv("APSD_SERVER") : getenv("APSD");
    if (co.target != NULL && co.target[0] == '\0')
        co.target = NULL;
    if (o.token_file) {
        rc = read_token_file(o.token_file, &token);
        if (rc != 0)
            goto out;
        co.token = token;
    } else {
        co.token = o.token ? o.token : getenv("APSD_TOKEN");
        if (co.token != NULL && co.token[0] == '\0')
            co.token = NULL;
    }
    co.tls = o.tls;
    co.tls_ca_file = o.tls_ca;
    co.tls_cert_file = o.tls_cert;
    co.tls_key_file = o.tls_key;
    co.tls_server_name = o.tls_server_name;
    if (o.timeout) {
        int64_t s;
        int32_t ns;
        if (apsc_parse_duration(o.timeout, &s, &ns) != 0 || (s == 0 && ns == 0)) {
            rc = usage_error("--timeout: expected a duration such as 10s, got '%s'", o.timeout);
            goto out;
        }
        co.timeout_ms = s * 1000 + ns / 1000000;
        if (co.timeout_ms == 0)
            co.timeout_ms = 1;
    }

    static sigset_t set;
    pthread_t th;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (pthread_create(&th, NULL, signal_thread, &set) == 0)
        pthread_detach(th);

    rc = apsc_client_create(&co, &x.c, &x.err);
    if (rc != 0) {
        rc = rc == APSC_EINVAL ? usage_error("%s", x.err.message)
                               : call_error(&x, rc, "connecting");
        goto out;
    }
    rc = cmd->fn(&x);
    fflush(stdout);
    apsc_client_destroy(x.c);

out:
    free(token);
    free(x.default_tz);
    apsc_error_dispose(&x.err);
    free(o.cron.v);
    free(o.calendar.v);
    free(o.labels.v);
    free(o.env.v);
    free(o.types.v);
    free(o.jobs.v);
    free(o.pos.v);
    return rc;
}
