/* apsd.v1.Scheduler: the RPC handlers (see proto/apsd/v1/scheduler.proto). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apsd/v1/scheduler.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "service/convert.h"
#include "service/log.h"
#include "service/rpc.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define LIST_SCAN_MAX 100000      /* jobs examined by one ListJobs call */
#define REPLY_SOFT_MAX (3u << 20) /* a ListJobs page stops growing here */
#define PREVIEW_DEFAULT 10
#define PREVIEW_MAX 1000
#define SUB_JOB_IDS_MAX 1000
#define SUB_REPLAY_WINDOW 32 /* events queued per stream while replaying */
#define SUB_BATCH 256        /* events pulled per service round */
#define REQUEST_ID_MAX 64
#define SELECTOR_MAX 64

/* ---- errors ------------------------------------------------------------------ */

/* 1 if `msg` starts with a field path ("name:", "trigger.cron.hour:", "labels[0].key:"). */
static int
names_field(const char *msg)
{
    size_t i = 0;
    while ((msg[i] >= 'a' && msg[i] <= 'z') || msg[i] == '_')
        i++;
    return i > 0 && (msg[i] == ':' || msg[i] == '.' || msg[i] == '[');
}

static void
fail_code(aps_call *c, grpc_status_code code, int rc, const aps_error *err, const char *prefix)
{
    const char *msg = err != NULL && err->msg[0] ? err->msg : aps_strerror(rc);
    if (prefix != NULL && names_field(msg))
        aps_call_fail(c, code, "%s%s", prefix, msg);
    else
        aps_call_fail(c, code, "%s", msg);
}

void
aps_rpc_fail_engine(aps_call *c, int rc, const aps_error *err, const char *prefix)
{
    fail_code(c, aps_status_of(rc), rc, err, prefix);
}

/* Validation errors: an unknown zone is APS_ENOENT in the engine, but
 * INVALID_ARGUMENT on the wire; so is a job id "not found" only when the
 * message names job_id. */
static void
fail_validation(aps_call *c, int rc, const aps_error *err, const char *prefix)
{
    grpc_status_code code = aps_status_of(rc);
    if (rc == APS_ENOENT && !(err && strncmp(err->msg, "job_id:", 7) == 0))
        code = GRPC_STATUS_INVALID_ARGUMENT;
    fail_code(c, code, rc, err, prefix);
}

static const char *
opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* A request id used before, within its retention window, for another
 * request: a client bug (two requests under one key), not a retry. */
static void
fail_reused_request_id(aps_call *c, const char *rid)
{
    aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                  "request_id: reused with a different request (\"%.200s\" was first used, "
                  "within the retention window, for another one; a retry repeats it unchanged)",
                  rid);
}

/* Whether `d` is the entry type protoc makes for a map field (a nested
 * `XEntry` with `key` = 1 and `value` = 2). */
static int
is_map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t n = strlen(d->name);
    return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
           d->fields[0].id == 1 && strcmp(d->fields[0].name, "key") == 0 &&
           d->fields[0].type == PROTOBUF_C_TYPE_STRING && d->fields[1].id == 2;
}

static const char *
entry_key(const ProtobufCMessage *e)
{
    const char *k = *(char *const *)((const char *)e + e->descriptor->fields[0].offset);
    return k != NULL ? k : "";
}

/* Sorts n map entries by key, stably (merge sort: a request may carry
 * many, and its sender chooses their order). Left as they are when out of
 * memory: the fingerprint then only matches the same order. */
static void
sort_entries(ProtobufCMessage **v, size_t n)
{
    if (n < 2)
        return;
    ProtobufCMessage **tmp = malloc(n * sizeof(*tmp));
    if (tmp == NULL)
        return;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n - w; lo += 2 * w) {
            size_t mid = lo + w, hi = mid + w < n ? mid + w : n, a = lo, b = mid, k = 0;
            while (a < mid && b < hi)
                tmp[k++] = strcmp(entry_key(v[b]), entry_key(v[a])) < 0 ? v[b++] : v[a++];
            while (a < mid)
                tmp[k++] = v[a++];
            while (b < hi)
                tmp[k++] = v[b++];
            memcpy(v + lo, tmp, k * sizeof(*tmp));
        }
    }
    free(tmp);
}

/* Puts the entries of every map field of `m` (and of the messages in it)
 * in key order, keeping the order of entries with the same key (the last
 * one wins): senders encode maps in any order (Go's in a random one each
 * time, Python's as they were filled), and a retry must fingerprint as
 * its first attempt did. */
static void
sort_maps(ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **v = *(ProtobufCMessage ***)(base + f->offset);
            if (is_map_entry(f->descriptor))
                sort_entries(v, n);
            for (size_t k = 0; k < n; k++)
                sort_maps(v[k]);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)(base + f->quantifier_offset) != f->id)
            continue; /* another member of its oneof is set */
        ProtobufCMessage *sub = *(ProtobufCMessage **)(base + f->offset);
        if (sub != NULL)
            sort_maps(sub);
    }
}

/* The request's fingerprint for idempotency (aps_mutation): FNV-1a over
 * its type name and its encoding, which protobuf-c makes canonical (fields
 * in number order; map entries put in key order first), so a retry of the
 * same request matches and a reused id does not, even between two methods
 * whose requests encode alike. Sorts the request's maps in place (their
 * order means nothing). */
static uint64_t
request_fp(const ProtobufCMessage *cm, const char *rid)
{
    unsigned char stack[4096];
    uint64_t h = 14695981039346656037u;
    if (opt(rid) == NULL)
        return 0;
    ProtobufCMessage *m = (ProtobufCMessage *)cm;
    sort_maps(m);
    for (const char *p = m->descriptor->name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211u;
    size_t n = protobuf_c_message_get_packed_size(m);
    unsigned char *buf = n <= sizeof(stack) ? stack : malloc(n);
    if (buf == NULL)
        return 0; /* unchecked: a replay still answers as the first call did */
    protobuf_c_message_pack(m, buf);
    for (size_t i = 0; i < n; i++)
        h = (h ^ buf[i]) * 1099511628211u;
    if (buf != stack)
        free(buf);
    return h != 0 ? h : 1;
}

static int
check_request_id(aps_call *c, const char *rid)
{
    if (rid != NULL && strlen(rid) > REQUEST_ID_MAX) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "request_id: at most %d bytes",
                      REQUEST_ID_MAX);
        return -1;
    }
    return 0;
}

static int
require_id(aps_call *c, const char *id, const char *field)
{
    if (id == NULL || id[0] == '\0') {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: required", field);
        return -1;
    }
    return 0;
}

static void
reply_job(aps_call *c, const aps_job *job, int with_stats)
{
    Apsd__V1__Job *pb = aps_job_to_pb(aps_call_arena(c), job, with_stats);
    if (pb == NULL)
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "the job is too large to return");
    else
        aps_call_reply(c, &pb->base);
}

/* ---- executors: which can run what ------------------------------------------- */

static const aps_app_executor *
find_exec(const aps_app *app, const char *name)
{
    for (size_t i = 0; i < app->n_executors; i++)
        if (strcmp(app->executors[i].name, name) == 0)
            return &app->executors[i];
    return NULL;
}

static int
find_store(const aps_app *app, const char *name)
{
    for (size_t i = 0; i < app->n_stores; i++)
        if (strcmp(app->stores[i].name, name) == 0)
            return 1;
    return 0;
}

/* The executor a target runs on by default: `default` for commands, the
 * first `workers` executor for remote tasks. */
static const char *
default_exec(const aps_app *app, aps_target_kind kind)
{
    if (kind == APS_TARGET_REMOTE) {
        if (find_exec(app, "workers") != NULL)
            return "workers";
        for (size_t i = 0; i < app->n_executors; i++)
            if (strcmp(app->executors[i].type, "workers") == 0)
                return app->executors[i].name;
        return "workers";
    }
    return "default";
}

/* 1 if `path` (canonical) is on the allow-list (exact file or under a
 * directory entry ending in '/'). */
static int
allowed_by(const aps_app_executor *ex, const char *path)
{
    for (size_t i = 0; i < ex->n_allow; i++) {
        const char *a = ex->allow[i];
        size_t n = strlen(a);
        if (n > 0 && a[n - 1] == '/' ? strncmp(path, a, n) == 0 && strchr(path + n, '/') == NULL
                                     : strcmp(path, a) == 0)
            return 1;
    }
    return 0;
}

/* The program argv[0] names, resolved as the process executor does: an
 * absolute path, or a name looked up in the default PATH. */
static int
resolve_program(const char *argv0, char *out, size_t len)
{
    char buf[PATH_MAX];
    if (strchr(argv0, '/') != NULL) {
        if (argv0[0] != '/')
            return -1;
        if (realpath(argv0, out) == NULL)
            snprintf(out, len, "%s", argv0);
        return 0;
    }
    static const char *const dirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "%s/%s", dirs[i], argv0);
        if (realpath(buf, out) != NULL)
            return 0;
    }
    return -1;
}

/* Checks that executor `name` can run `t`. 0, or fails the call. */
static int
check_exec_target(aps_call *c, const aps_app *app, const char *name, const aps_target *t,
                  const char *path)
{
    const aps_app_executor *ex = find_exec(app, name);
    if (ex == NULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%sexecutor: no executor named \"%s\"", path,
                      name);
        return -1;
    }
    if (t->kind == APS_TARGET_COMMAND && strcmp(ex->type, "processpool") != 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "%sexecutor: executor \"%s\" (%s) cannot run command targets", path, name,
                      ex->type);
        return -1;
    }
    if (t->kind == APS_TARGET_REMOTE && strcmp(ex->type, "workers") != 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "%sexecutor: executor \"%s\" (%s) cannot run remote targets%s", path, name,
                      ex->type, strcmp(name, "workers") == 0 ? "" : " (use a `workers` executor)");
        return -1;
    }
    if (t->kind == APS_TARGET_COMMAND && ex->max_output_limit > 0 &&
        t->u.command.max_output > ex->max_output_limit) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "%starget.command.max_output_bytes: %u is more than executor \"%s\" keeps "
                      "(%u)",
                      path, t->u.command.max_output, name, ex->max_output_limit);
        return -1;
    }
    if (t->kind == APS_TARGET_COMMAND && ex->allow != NULL && ex->n_allow > 0) {
        char real[PATH_MAX];
        if (resolve_program(t->u.command.argv[0], real, sizeof real) != 0 ||
            !allowed_by(ex, real)) {
            aps_call_fail(c, GRPC_STATUS_PERMISSION_DENIED,
                          "%starget.command.argv[0]: \"%.200s\" is not on the command allow-list "
                          "of executor \"%s\"",
                          path, t->u.command.argv[0], name);
            return -1;
        }
        for (size_t i = 0; i < t->u.command.envc; i++) {
            const char *kv = t->u.command.env[i];
            if (aps_env_allowed(ex->allow_env, ex->n_allow_env, kv))
                continue;
            aps_call_fail(c, GRPC_STATUS_PERMISSION_DENIED,
                          "%starget.command.env: \"%.*s\" is not on the environment allow-list "
                          "of executor \"%s\" (with a command allow-list, a job sets only the "
                          "keys --allow-env names)",
                          path, (int)(strcspn(kv, "=") > 100 ? 100 : strcspn(kv, "=")), kv, name);
            return -1;
        }
    }
    return 0;
}

/* ---- AddJob / GetJob / RemoveJob ----------------------------------------------------- */

typedef struct add_call {
    aps_call *c;
    aps_app *app;
} add_call;

/* The engine's answer to an AddJob, once the job is on disk: on a store's
 * writer thread (or the handler's, for errors found up front). */
static void
add_job_done(void *ud, int rc, aps_job *job, const aps_error *err)
{
    add_call *ac = ud;
    atomic_fetch_sub(&ac->app->n_adds, 1);
    if (rc != 0) {
        fail_validation(ac->c, rc, err, "job.");
        return;
    }
    reply_job(ac->c, job, 1);
    aps_job_free(job);
}

/* Runs on a CQ thread when no executor has a command allow-list (checking
 * one resolves argv[0] on disk), else on the pool; either way it does not
 * wait for the commit: the engine answers through add_job_done. */
static void
h_add_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__AddJobRequest *req = (const Apsd__V1__AddJobRequest *)m;
    aps_app *app = ud;
    aps_arena *a = aps_call_arena(c);
    aps_error err = {0};
    aps_job_spec spec;

    if (check_request_id(c, req->request_id) != 0)
        return;
    if (req->job == NULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "job: required");
        return;
    }
    int rc = aps_job_spec_from_pb(a, req->job, "job", &spec, &err);
    if (rc != 0) {
        fail_validation(c, rc, &err, NULL);
        return;
    }
    if (spec.target.kind == APS_TARGET_NONE) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "job.target: one of command, remote is required");
        return;
    }
    if (spec.name == NULL) /* APScheduler names a job after its function */
        spec.name = spec.target.kind == APS_TARGET_COMMAND ? spec.target.u.command.argv[0]
                                                           : spec.target.u.remote.task;
    if (spec.executor == NULL)
        spec.executor = default_exec(app, spec.target.kind);
    if (spec.jobstore != NULL && !find_store(app, spec.jobstore)) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "job.jobstore: no job store named \"%s\"",
                      spec.jobstore);
        return;
    }
    if (check_exec_target(c, app, spec.executor, &spec.target, "job.") != 0)
        return;
    add_call *ac = aps_arena_alloc(a, sizeof(*ac));
    if (ac == NULL) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    /* The pool's queue bounded blocking adds; this bounds the ones waiting
     * for a commit. */
    if (atomic_fetch_add(&app->n_adds, 1) >= (app->max_adds > 0 ? app->max_adds : 1024)) {
        atomic_fetch_sub(&app->n_adds, 1);
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "too many AddJob calls waiting for their commit; retry");
        return;
    }
    ac->c = c;
    ac->app = app;
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id),
                       .replace_existing = req->replace_existing};
    aps_job_add_async(app->sched, &spec, &mu, add_job_done, ac);
}

static void
h_get_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__GetJobRequest *req = (const Apsd__V1__GetJobRequest *)m;
    aps_app *app = ud;
    aps_job *job = NULL;
    if (require_id(c, req->job_id, "job_id") != 0)
        return;
    if ((unsigned)req->view > APSD__V1__JOB_VIEW__JOB_VIEW_FULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "view: unknown value %d", (int)req->view);
        return;
    }
    int rc = aps_job_get(app->sched, req->job_id, &job);
    if (rc == APS_ENOENT) {
        aps_call_fail(c, GRPC_STATUS_NOT_FOUND, "job_id: no job with id \"%.200s\"", req->job_id);
        return;
    }
    if (rc != 0) {
        aps_rpc_fail_engine(c, rc, NULL, NULL);
        return;
    }
    reply_job(c, job, req->view != APSD__V1__JOB_VIEW__JOB_VIEW_BASIC);
    aps_job_free(job);
}

static void
h_remove_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__RemoveJobRequest *req = (const Apsd__V1__RemoveJobRequest *)m;
    aps_app *app = ud;
    if (require_id(c, req->job_id, "job_id") != 0 || check_request_id(c, req->request_id) != 0)
        return;
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    int rc = aps_job_remove(app->sched, req->job_id, &mu);
    if (rc == APS_EINVAL && opt(req->request_id) != NULL) {
        fail_reused_request_id(c, req->request_id);
        return;
    }
    if (rc != 0) {
        aps_error err = {0};
        if (rc == APS_ENOENT)
            aps_cv_fail(&err, rc, "job_id: no job with id \"%.200s\"", req->job_id);
        aps_rpc_fail_engine(c, rc, &err, NULL);
        return;
    }
    Apsd__V1__RemoveJobResponse resp = APSD__V1__REMOVE_JOB_RESPONSE__INIT;
    aps_call_reply(c, &resp.base);
}

static void
h_remove_all(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__RemoveAllJobsRequest *req = (const Apsd__V1__RemoveAllJobsRequest *)m;
    aps_app *app = ud;
    size_t removed = 0;
    if (check_request_id(c, req->request_id) != 0)
        return;
    if (opt(req->jobstore) && !find_store(app, req->jobstore)) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "jobstore: no job store named \"%.64s\"",
                      req->jobstore);
        return;
    }
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    int rc = aps_job_remove_all(app->sched, opt(req->jobstore), &mu, &removed);
    if (rc == APS_EINVAL) {
        fail_reused_request_id(c, req->request_id);
        return;
    }
    if (rc != 0) {
        aps_rpc_fail_engine(c, rc, NULL, NULL);
        return;
    }
    Apsd__V1__RemoveAllJobsResponse resp = APSD__V1__REMOVE_ALL_JOBS_RESPONSE__INIT;
    resp.removed_count = removed > INT32_MAX ? INT32_MAX : (int32_t)removed;
    aps_call_reply(c, &resp.base);
}

/* ---- ListJobs -------------------------------------------------------------------- */

typedef enum sel_op { SEL_EQ, SEL_NE, SEL_EXISTS, SEL_NOT_EXISTS, SEL_IN, SEL_NOTIN } sel_op;

typedef struct sel_req {
    sel_op op;
    char *key;
    char **values;
    size_t n_values;
} sel_req;

static int
label_chars(const char *s, size_t n, int key)
{
    if (n > 63 || (key && n == 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '/' || ch == '-'))
            return 0;
    }
    return 1;
}

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Parses a Kubernetes-style selector. 0, or -1 with a message in err. */
static int
parse_selector(aps_arena *a, const char *text, sel_req **out, size_t *n, aps_error *err)
{
    char *copy = aps_arena_strdup(a, text);
    sel_req *v = aps_arena_alloc(a, SELECTOR_MAX * sizeof(*v));
    *n = 0;
    if (copy == NULL || v == NULL)
        return aps_cv_fail(err, APS_ELIMIT, "label_selector: too long");
    char *p = copy;
    while (*p) {
        /* One requirement: up to a comma outside parentheses. */
        char *start = p;
        int depth = 0;
        while (*p && !(*p == ',' && depth == 0)) {
            depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
            p++;
        }
        if (*p == ',')
            *p++ = '\0';
        char *r = trim(start);
        if (*r == '\0')
            return aps_cv_fail(err, APS_EINVAL, "label_selector: empty requirement");
        if (*n == SELECTOR_MAX)
            return aps_cv_fail(err, APS_EINVAL, "label_selector: more than %d requirements",
                               SELECTOR_MAX);
        sel_req *q = &v[(*n)++];
        memset(q, 0, sizeof(*q));
        char *sp = strpbrk(r, " \t");
        char *op, *rest = sp ? trim(sp + 1) : NULL;
        int set_in = rest && strncmp(rest, "in", 2) == 0 && (rest[2] == ' ' || rest[2] == '(');
        int set_notin =
            rest && strncmp(rest, "notin", 5) == 0 && (rest[5] == ' ' || rest[5] == '(');
        if (r[0] == '!') {
            q->op = SEL_NOT_EXISTS;
            q->key = trim(r + 1);
        } else if (set_in || set_notin) {
            *sp = '\0';
            q->key = r;
            q->op = set_in ? SEL_IN : SEL_NOTIN;
            rest = trim(rest + (set_in ? 2 : 5));
            size_t len = strlen(rest);
            if (len < 2 || rest[0] != '(' || rest[len - 1] != ')')
                return aps_cv_fail(err, APS_EINVAL,
                                   "label_selector: expected a (value,...) list after %s",
                                   q->op == SEL_IN ? "in" : "notin");
            rest[len - 1] = '\0';
            rest++;
            q->values = aps_arena_alloc(a, SELECTOR_MAX * sizeof(char *));
            if (q->values == NULL)
                return aps_cv_fail(err, APS_ELIMIT, "label_selector: too long");
            for (char *tok = rest, *nx; tok != NULL; tok = nx) {
                nx = strchr(tok, ',');
                if (nx)
                    *nx++ = '\0';
                char *val = trim(tok);
                if (!label_chars(val, strlen(val), 0) || q->n_values == SELECTOR_MAX)
                    return aps_cv_fail(err, APS_EINVAL, "label_selector: bad value \"%.63s\"", val);
                q->values[q->n_values++] = val;
            }
        } else if ((op = strstr(r, "!=")) != NULL) {
            *op = '\0';
            q->op = SEL_NE;
            q->key = trim(r);
            q->values = aps_arena_alloc(a, sizeof(char *));
            if (q->values == NULL)
                return aps_cv_fail(err, APS_ELIMIT, "label_selector: too long");
            q->values[0] = trim(op + 2);
            q->n_values = 1;
        } else if ((op = strchr(r, '=')) != NULL) {
            *op = '\0';
            q->op = SEL_EQ;
            q->key = trim(r);
            char *val = op + 1;
            if (*val == '=')
                val++;
            q->values = aps_arena_alloc(a, sizeof(char *));
            if (q->values == NULL)
                return aps_cv_fail(err, APS_ELIMIT, "label_selector: too long");
            q->values[0] = trim(val);
            q->n_values = 1;
        } else {
            q->op = SEL_EXISTS;
            q->key = r;
        }
        if (!label_chars(q->key, strlen(q->key), 1))
            return aps_cv_fail(err, APS_EINVAL, "label_selector: bad label key \"%.63s\"", q->key);
        for (size_t i = 0; i < q->n_values; i++)
            if (!label_chars(q->values[i], strlen(q->values[i]), 0))
                return aps_cv_fail(err, APS_EINVAL, "label_selector: bad value \"%.63s\"",
                                   q->values[i]);
    }
    *out = v;
    return 0;
}

static const char *
job_label(const aps_job *j, const char *key)
{
    for (size_t i = 0; i < j->n_labels; i++)
        if (strcmp(j->labels[i].key, key) == 0)
            return j->labels[i].value ? j->labels[i].value : "";
    return NULL;
}

static int
sel_match(const sel_req *q, size_t n, const aps_job *j)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = job_label(j, q[i].key);
        int in = 0;
        for (size_t k = 0; v && k < q[i].n_values; k++)
            in |= strcmp(v, q[i].values[k]) == 0;
        switch (q[i].op) {
        case SEL_EQ:
        case SEL_IN:
            if (!in)
                return 0;
            break;
        case SEL_NE:
        case SEL_NOTIN:
            if (in)
                return 0;
            break;
        case SEL_EXISTS:
            if (v == NULL)
                return 0;
            break;
        case SEL_NOT_EXISTS:
            if (v != NULL)
                return 0;
            break;
        }
    }
    return 1;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *
b64_encode(aps_arena *a, const unsigned char *p, size_t n)
{
    char *out = aps_arena_alloc(a, (n + 2) / 3 * 4 + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    return out;
}

static int
b64_decode(const char *s, unsigned char *out, size_t cap, size_t *n)
{
    uint32_t acc = 0;
    int bits = 0;
    *n = 0;
    for (; *s; s++) {
        const char *pos = strchr(b64url, *s);
        if (pos == NULL || *s == '\0')
            return -1;
        acc = (acc << 6) | (uint32_t)(pos - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (*n == cap)
                return -1;
            out[(*n)++] = (unsigned char)(acc >> bits);
        }
    }
    return 0;
}

/* FNV-1a over the filters: a token from a request with other filters is refused. */
static uint64_t
filter_hash(const Apsd__V1__ListJobsRequest *req)
{
    uint64_t h = 1469598103934665603ULL;
    const char *parts[2] = {req->jobstore, req->label_selector};
    for (int i = 0; i < 2; i++) {
        for (const char *p = parts[i]; p && *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
    }
    int paused = req->optional_paused_case == APSD__V1__LIST_JOBS_REQUEST__OPTIONAL_PAUSED_PAUSED
                     ? (req->paused ? 1 : 0)
                     : 2;
    return (h ^ (uint64_t)paused) * 1099511628211ULL;
}

static void
h_list_jobs(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__ListJobsRequest *req = (const Apsd__V1__ListJobsRequest *)m;
    aps_app *app = ud;
    aps_arena *a = aps_call_arena(c);
    aps_error err = {0};
    sel_req *sel = NULL;
    size_t n_sel = 0;
    char cursor[256] = "";

    if (req->page_size < 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "page_size: must not be negative (%d)",
                      (int)req->page_size);
        return;
    }
    if ((unsigned)req->view > APSD__V1__JOB_VIEW__JOB_VIEW_FULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "view: unknown value %d", (int)req->view);
        return;
    }
    size_t page = req->page_size == 0         ? PAGE_DEFAULT
                  : req->page_size > PAGE_MAX ? PAGE_MAX
                                              : (size_t)req->page_size;
    if (opt(req->jobstore) && !find_store(app, req->jobstore)) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "jobstore: no job store named \"%.64s\"",
                      req->jobstore);
        return;
    }
    if (opt(req->label_selector) && parse_selector(a, req->label_selector, &sel, &n_sel, &err)) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
        return;
    }
    uint64_t fh = filter_hash(req);
    if (opt(req->page_token)) {
        unsigned char raw[8 + 256];
        size_t n = 0;
        uint64_t th = 0;
        /* n - 8 < sizeof cursor: room for the cursor's NUL. */
        if (strlen(req->page_token) > 400 || b64_decode(req->page_token, raw, sizeof raw, &n) ||
            n <= 8 || n - 8 >= sizeof cursor) {
            aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "page_token: malformed");
            return;
        }
        for (int i = 0; i < 8; i++)
            th = th << 8 | raw[i];
        if (th != fh) {
            aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                          "page_token: from a request with other filters");
            return;
        }
        memcpy(cursor, raw + 8, n - 8);
        cursor[n - 8] = '\0';
    }
    /* The engine filters on equality and existence; the rest is done here. */
    aps_label *eq = n_sel ? aps_arena_alloc(a, n_sel * sizeof(*eq)) : NULL;
    aps_job_filter f = {.jobstore = opt(req->jobstore), .paused = -1, .labels = eq};
    if (req->optional_paused_case == APSD__V1__LIST_JOBS_REQUEST__OPTIONAL_PAUSED_PAUSED)
        f.paused = req->paused ? 1 : 0;
    for (size_t i = 0; i < n_sel; i++) {
        if (sel[i].op == SEL_EQ)
            eq[f.n_labels++] = (aps_label){sel[i].key, sel[i].values[0]};
        else if (sel[i].op == SEL_EXISTS)
            eq[f.n_labels++] = (aps_label){sel[i].key, NULL};
    }
    int with_stats = req->view == APSD__V1__JOB_VIEW__JOB_VIEW_FULL;
    Apsd__V1__ListJobsResponse resp = APSD__V1__LIST_JOBS_RESPONSE__INIT;
    resp.jobs = aps_arena_alloc(a, page * sizeof(*resp.jobs));
    if (resp.jobs == NULL) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t scanned = 0, bytes = 0;
    int more = 0;
    char last[256] = "";
    while (resp.n_jobs < page && scanned < LIST_SCAN_MAX) {
        aps_job **jobs = NULL;
        size_t k = 0;
        char *next = NULL;
        int rc = aps_job_list(app->sched, &f, cursor[0] ? cursor : NULL, page - resp.n_jobs, &jobs,
                              &k, &next);
        if (rc != 0) {
            aps_rpc_fail_engine(c, rc, NULL, NULL);
            return;
        }
        size_t i;
        for (i = 0; i < k && resp.n_jobs < page; i++) {
            scanned++;
            if (n_sel && !sel_match(sel, n_sel, jobs[i])) {
                snprintf(last, sizeof last, "%s", jobs[i]->id);
                continue;
            }
            Apsd__V1__Job *pb = aps_job_to_pb(a, jobs[i], with_stats);
            size_t sz = pb ? protobuf_c_message_get_packed_size(&pb->base) + 8 : 0;
            if (pb == NULL || (resp.n_jobs > 0 && bytes + sz > REPLY_SOFT_MAX)) {
                more = 1; /* the page is full by size: the next one starts here */
                break;
            }
            bytes += sz;
            resp.jobs[resp.n_jobs++] = pb;
            snprintf(last, sizeof last, "%s", jobs[i]->id);
        }
        int rest = i < k;
        aps_job_list_free(jobs, k);
        if (more || rest) {
            more = 1;
            free(next);
            break;
        }
        if (next == NULL) {
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", next);
        free(next);
        if (resp.n_jobs == page) {
            more = 1;
            break;
        }
        if (scanned >= LIST_SCAN_MAX)
            more = 1;
    }
    if (more && last[0]) {
        unsigned char raw[8 + 256];
        size_t n = strlen(last);
        for (int i = 0; i < 8; i++)
            raw[i] = (unsigned char)(fh >> (56 - 8 * i));
        memcpy(raw + 8, last, n);
        resp.next_page_token = b64_encode(a, raw, 8 + n);
    }
    aps_call_reply(c, &resp.base);
}

/* ---- ModifyJob / RescheduleJob / Pause / Resume / RunNow ------------------------------ */

static const struct {
    const char *path;
    uint32_t bit;
} mask_paths[] = {
    {"name", APS_MODIFY_NAME},
    {"trigger", APS_MODIFY_TRIGGER},
    {"target", APS_MODIFY_TARGET},
    {"executor", APS_MODIFY_EXECUTOR},
    {"misfire_grace_time", APS_MODIFY_MISFIRE},
    {"coalesce", APS_MODIFY_COALESCE},
    {"max_instances", APS_MODIFY_MAX_INSTANCES},
    {"overlap_policy", APS_MODIFY_OVERLAP},
    {"labels", APS_MODIFY_LABELS},
    {"next_run_time", APS_MODIFY_NEXT_RUN_TIME},
};

static const char *const immutable_paths[] = {
    "id",          "jobstore",    "paused",      "running_instances",
    "queued_runs", "create_time", "update_time", "stats",
};

static void
h_modify_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__ModifyJobRequest *req = (const Apsd__V1__ModifyJobRequest *)m;
    aps_app *app = ud;
    aps_arena *a = aps_call_arena(c);
    aps_error err = {0};
    aps_job_spec spec;
    aps_job *job = NULL, *cur = NULL;
    uint32_t mask = 0;

    if (check_request_id(c, req->request_id) != 0)
        return;
    if (req->job == NULL || req->job->id[0] == '\0') {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "job.id: required");
        return;
    }
    if (req->update_mask == NULL || req->update_mask->n_paths == 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "update_mask: required (the fields to change, e.g. \"name\")");
        return;
    }
    for (size_t i = 0; i < req->update_mask->n_paths; i++) {
        const char *p = req->update_mask->paths[i];
        int found = 0;
        if (strcmp(p, "*") == 0) {
            for (size_t k = 0; k < sizeof mask_paths / sizeof mask_paths[0]; k++)
                if (mask_paths[k].bit != APS_MODIFY_NEXT_RUN_TIME ||
                    req->job->next_run_time != NULL)
                    mask |= mask_paths[k].bit;
            continue;
        }
        for (size_t k = 0; k < sizeof mask_paths / sizeof mask_paths[0] && !found; k++)
            if (strcmp(p, mask_paths[k].path) == 0) {
                mask |= mask_paths[k].bit;
                found = 1;
            }
        if (found)
            continue;
        for (size_t k = 0; k < sizeof immutable_paths / sizeof immutable_paths[0]; k++)
            if (strcmp(p, immutable_paths[k]) == 0) {
                aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                              "update_mask: \"%s\" cannot be changed by ModifyJob", p);
                return;
            }
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "update_mask: unknown path \"%.100s\" (name, trigger, target, executor, "
                      "misfire_grace_time, coalesce, max_instances, overlap_policy, labels, "
                      "next_run_time, *)",
                      p);
        return;
    }
    int rc = aps_job_spec_from_pb(a, req->job, "job", &spec, &err);
    if (rc != 0) {
        fail_validation(c, rc, &err, NULL);
        return;
    }
    if ((mask & APS_MODIFY_TRIGGER) && spec.trigger == NULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "job.trigger: required when named in update_mask (it cannot be unset)");
        return;
    }
    if ((mask & APS_MODIFY_TARGET) && spec.target.kind == APS_TARGET_NONE) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "job.target: required when named in update_mask (it cannot be unset)");
        return;
    }
    if (mask & (APS_MODIFY_TARGET | APS_MODIFY_EXECUTOR)) {
        rc = aps_job_get(app->sched, spec.id, &cur);
        if (rc != 0) {
            if (rc == APS_ENOENT)
                aps_call_fail(c, GRPC_STATUS_NOT_FOUND, "job.id: no job with id \"%.200s\"",
                              spec.id);
            else
                aps_rpc_fail_engine(c, rc, NULL, NULL);
            return;
        }
        const aps_target *t = (mask & APS_MODIFY_TARGET) ? &spec.target : &cur->target;
        if (!(mask & APS_MODIFY_EXECUTOR))
            spec.executor = cur->executor;
        else if (spec.executor == NULL)
            spec.executor = default_exec(app, t->kind);
        rc = (t->kind == APS_TARGET_COMMAND || t->kind == APS_TARGET_REMOTE)
                 ? check_exec_target(c, app, spec.executor, t, "job.")
                 : 0;
        if (rc != 0) {
            aps_job_free(cur);
            return;
        }
    }
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    rc = aps_job_modify(app->sched, spec.id, &spec, mask, &mu, &job, &err);
    aps_job_free(cur);
    if (rc != 0) {
        if (rc == APS_ENOENT && strncmp(err.msg, "job_id:", 7) == 0)
            aps_call_fail(c, GRPC_STATUS_NOT_FOUND, "job.id: no job with id \"%.200s\"", spec.id);
        else
            fail_validation(c, rc, &err, "job.");
        return;
    }
    reply_job(c, job, 1);
    aps_job_free(job);
}

static void
h_reschedule_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__RescheduleJobRequest *req = (const Apsd__V1__RescheduleJobRequest *)m;
    aps_app *app = ud;
    aps_error err = {0};
    aps_trigger_spec *t = NULL;
    aps_job *job = NULL;
    if (require_id(c, req->job_id, "job_id") != 0 || check_request_id(c, req->request_id) != 0)
        return;
    int rc = aps_trigger_from_pb(aps_call_arena(c), req->trigger, "trigger", &t, &err);
    if (rc != 0) {
        fail_validation(c, rc, &err, NULL);
        return;
    }
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    rc = aps_job_reschedule(app->sched, req->job_id, t, &mu, &job, &err);
    if (rc != 0) {
        fail_validation(c, rc, &err, NULL);
        return;
    }
    reply_job(c, job, 1);
    aps_job_free(job);
}

/* The failure of a call that names a job and may carry a request id: the
 * engine's APS_EINVAL there means the request id was reused. */
static void
not_found(aps_call *c, int rc, const char *id, const char *rid)
{
    if (rc == APS_ENOENT)
        aps_call_fail(c, GRPC_STATUS_NOT_FOUND, "job_id: no job with id \"%.200s\"", id);
    else if (rc == APS_EINVAL && opt(rid) != NULL)
        fail_reused_request_id(c, rid);
    else
        aps_rpc_fail_engine(c, rc, NULL, NULL);
}

static void
h_pause_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__PauseJobRequest *req = (const Apsd__V1__PauseJobRequest *)m;
    aps_app *app = ud;
    aps_job *job = NULL;
    if (require_id(c, req->job_id, "job_id") != 0 || check_request_id(c, req->request_id) != 0)
        return;
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    int rc = aps_job_pause(app->sched, req->job_id, &mu, &job);
    if (rc != 0) {
        not_found(c, rc, req->job_id, req->request_id);
        return;
    }
    if (job == NULL && (rc = aps_job_get(app->sched, req->job_id, &job)) != 0) {
        not_found(c, rc, req->job_id, req->request_id);
        return;
    }
    reply_job(c, job, 1);
    aps_job_free(job);
}

static void
h_resume_job(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__ResumeJobRequest *req = (const Apsd__V1__ResumeJobRequest *)m;
    aps_app *app = ud;
    aps_job *job = NULL, *before = NULL;
    if (require_id(c, req->job_id, "job_id") != 0 || check_request_id(c, req->request_id) != 0)
        return;
    /* A job whose trigger is done is removed by resume: the reply is then
     * the job as it was, with next_run_time unset. */
    int rc = aps_job_get(app->sched, req->job_id, &before);
    if (rc != 0) {
        not_found(c, rc, req->job_id, req->request_id);
        return;
    }
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    rc = aps_job_resume(app->sched, req->job_id, &mu, &job);
    if (rc != 0) {
        aps_job_free(before);
        not_found(c, rc, req->job_id, req->request_id);
        return;
    }
    if (job == NULL) {
        before->next_run_time = APS_TIME_NONE;
        reply_job(c, before, 1);
    } else {
        reply_job(c, job, 1);
    }
    aps_job_free(before);
    aps_job_free(job);
}

static void
h_run_job_now(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__RunJobNowRequest *req = (const Apsd__V1__RunJobNowRequest *)m;
    aps_app *app = ud;
    if (require_id(c, req->job_id, "job_id") != 0 || check_request_id(c, req->request_id) != 0)
        return;
    if (aps_scheduler_get_state(app->sched) == APS_STATE_PAUSED) {
        aps_call_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
                      "the scheduler is paused: a paused scheduler runs nothing");
        return;
    }
    aps_time now = aps_time_now();
    aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
    char run_id[33] = "";
    int queued = 0;
    aps_error err = {0, ""};
    int rc = aps_job_run_now(app->sched, req->job_id, &mu, run_id, &queued, &err);
    if (rc == APS_ESTATE) {
        aps_call_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "%s", err.msg);
        return;
    }
    if (rc != 0) {
        not_found(c, rc, req->job_id, req->request_id);
        return;
    }
    Apsd__V1__RunJobNowResponse resp = APSD__V1__RUN_JOB_NOW_RESPONSE__INIT;
    resp.run_id = run_id;
    resp.queued = queued != 0;
    resp.scheduled_run_time = aps_ts_from_time(aps_call_arena(c), now);
    aps_call_reply(c, &resp.base);
}

/* ---- PreviewTrigger / Backfill --------------------------------------------------------- */

static const char *const kind_names[] = {"",       "cron",  "interval", "date", "calendar_interval",
                                         "all_of", "any_of"};

/* "hour: 25 is ..." from aps_trigger_create -> "trigger.cron.hour: 25 is ...". */
static void
fail_trigger(aps_call *c, int rc, const aps_trigger_spec *t, const aps_error *err)
{
    const char *kind = (int)t->kind >= 1 && (int)t->kind <= 6 ? kind_names[t->kind] : "";
    const char *msg = err->msg[0] ? err->msg : aps_strerror(rc);
    size_t k = strlen(kind);
    grpc_status_code code =
        rc == APS_ENOENT || rc == APS_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : aps_status_of(rc);
    if (t->kind == APS_TRIGGER_ALL_OF || t->kind == APS_TRIGGER_ANY_OF || k == 0) {
        aps_call_fail(c, code, "trigger: %s", msg);
        return;
    }
    if (strncmp(msg, kind, k) == 0 && msg[k] == ':' && msg[k + 1] == ' ')
        msg += k + 2;
    if (strncmp(msg, "trigger: ", 9) == 0)
        msg += 9;
    if (names_field(msg))
        aps_call_fail(c, code, "trigger.%s.%s", kind, msg);
    else
        aps_call_fail(c, code, "trigger.%s: %s", kind, msg);
}

static void
h_preview_trigger(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__PreviewTriggerRequest *req = (const Apsd__V1__PreviewTriggerRequest *)m;
    aps_app *app = ud;
    aps_arena *a = aps_call_arena(c);
    aps_error err = {0};
    aps_trigger_spec *spec = NULL;
    aps_trigger *t = NULL;
    aps_time start;

    if (req->count < 0 || req->count > PREVIEW_MAX) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "count: must be 1-%d (%d given)",
                      PREVIEW_MAX, (int)req->count);
        return;
    }
    int count = req->count ? req->count : PREVIEW_DEFAULT;
    int rc = aps_trigger_from_pb(a, req->trigger, "trigger", &spec, &err);
    if (rc == 0)
        rc = aps_ts_to_time(req->start_time, "start_time", &start, &err);
    if (rc != 0) {
        fail_validation(c, rc, &err, NULL);
        return;
    }
    if (start == APS_TIME_NONE)
        start = aps_time_now();
    spec->jitter_us = 0; /* ignored by a preview */
    aps_trigger_fill_defaults(a, spec, app->default_tz, start);
    rc = aps_trigger_create(spec, app->default_tz, start, &t, &err);
    if (rc != 0) {
        fail_trigger(c, rc, spec, &err);
        return;
    }
    Apsd__V1__PreviewTriggerResponse resp = APSD__V1__PREVIEW_TRIGGER_RESPONSE__INIT;
    resp.fire_times = aps_arena_alloc(a, (size_t)count * sizeof(*resp.fire_times));
    aps_time prev = APS_TIME_NONE, now = start;
    for (int i = 0; resp.fire_times != NULL && i < count; i++) {
        aps_time next = APS_TIME_NONE;
        if (aps_trigger_next(t, prev, now, &next) != 0 || next == APS_TIME_NONE)
            break;
        if (prev != APS_TIME_NONE && next <= prev)
            break; /* never loop on a trigger that does not advance */
        resp.fire_times[resp.n_fire_times++] = aps_ts_from_time(a, next);
        prev = now = next;
    }
    char desc[1024];
    if (aps_trigger_describe(t, desc, sizeof desc) != 0 && desc[0] == '\0')
        desc[0] = '\0';
    resp.description = aps_arena_strdup(a, desc);
    resp.effective_trigger = aps_trigger_to_pb(a, spec);
    aps_trigger_destroy(t);
    if (resp.fire_times == NULL || resp.description == NULL) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    aps_call_reply(c, &resp.base);
}

static void
h_backfill(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__BackfillRequest *req = (const Apsd__V1__BackfillRequest *)m;
    aps_app *app = ud;
    aps_arena *a = aps_call_arena(c);
    aps_error err = {0};
    aps_time start, end;
    aps_job *job = NULL;
    aps_trigger *t = NULL;

    if (require_id(c, req->job_id, "job_id") != 0 || check_request_id(c, req->request_id) != 0)
        return;
    if (req->start_time == NULL || req->end_time == NULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: required",
                      req->start_time == NULL ? "start_time" : "end_time");
        return;
    }
    if (aps_ts_to_time(req->start_time, "start_time", &start, &err) != 0 ||
        aps_ts_to_time(req->end_time, "end_time", &end, &err) != 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
        return;
    }
    if (start >= end) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "end_time: must be after start_time");
        return;
    }
    if (end > aps_time_now()) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "end_time: must not be in the future");
        return;
    }
    if (req->max_runs < 0 || req->max_runs > app->backfill_max_runs) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "max_runs: must be 0-%d (%d given)",
                      app->backfill_max_runs, (int)req->max_runs);
        return;
    }
    size_t max = req->max_runs ? (size_t)req->max_runs : (size_t)app->backfill_max_runs;
    int rc = aps_job_get(app->sched, req->job_id, &job);
    if (rc != 0) {
        not_found(c, rc, req->job_id, req->request_id);
        return;
    }
    if (!req->validate_only && aps_scheduler_get_state(app->sched) == APS_STATE_PAUSED) {
        aps_job_free(job);
        aps_call_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
                      "the scheduler is paused: a paused scheduler runs nothing");
        return;
    }
    /* The fire times, as the engine computes them (without jitter). */
    Apsd__V1__BackfillResponse resp = APSD__V1__BACKFILL_RESPONSE__INIT;
    resp.scheduled_run_times = aps_arena_alloc(a, max * sizeof(*resp.scheduled_run_times));
    if (job->trigger != NULL && resp.scheduled_run_times != NULL) {
        aps_trigger_spec copy = *job->trigger;
        copy.jitter_us = 0;
        if (aps_trigger_create(&copy, app->default_tz, start, &t, NULL) == 0) {
            aps_time ft = APS_TIME_NONE;
            rc = aps_trigger_next(t, APS_TIME_NONE, start, &ft);
            while (rc == 0 && ft != APS_TIME_NONE && ft < end) {
                if (resp.n_scheduled_run_times == max) {
                    resp.truncated = 1;
                    break;
                }
                resp.scheduled_run_times[resp.n_scheduled_run_times++] = aps_ts_from_time(a, ft);
                aps_time prev = ft;
                rc = aps_trigger_next(t, prev, prev, &ft);
                if (rc == 0 && ft != APS_TIME_NONE && ft <= prev)
                    break;
            }
            aps_trigger_destroy(t);
        }
    }
    aps_job_free(job);
    if (!req->validate_only) {
        size_t count = 0;
        aps_mutation mu = {.request_id = opt(req->request_id),
                       .request_fingerprint = request_fp(&req->base, req->request_id)};
        rc = aps_job_backfill(app->sched, req->job_id, start, end, max, &mu, &count, &err);
        if (rc != 0) {
            if (rc == APS_ENOENT)
                not_found(c, rc, req->job_id, req->request_id);
            else
                fail_validation(c, rc, &err, NULL);
            return;
        }
    }
    aps_call_reply(c, &resp.base);
}

/* ---- GetScheduler / PauseScheduler / ResumeScheduler -------------------------------------- */

static void
reply_scheduler(aps_call *c, aps_app *app)
{
    aps_arena *a = aps_call_arena(c);
    Apsd__V1__SchedulerInfo info = APSD__V1__SCHEDULER_INFO__INIT;
    aps_time wake = APS_TIME_NONE;

    switch (aps_scheduler_get_state(app->sched)) {
    case APS_STATE_RUNNING:
        info.state = APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_RUNNING;
        break;
    case APS_STATE_PAUSED:
        info.state = APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_PAUSED;
        break;
    default:
        info.state = APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_STOPPED;
    }
    info.version = (char *)APSD_VERSION;
    info.default_timezone = (char *)app->default_tz;
    info.jobstores = aps_arena_alloc(a, (app->n_stores + 1) * sizeof(void *));
    info.executors = aps_arena_alloc(a, (app->n_executors + 1) * sizeof(void *));
    if (info.jobstores == NULL || info.executors == NULL) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    /* The engine's figures: constant time per store (index sizes), so this
     * stays the cheap call of the API whatever the number of jobs. */
    aps_store_info si;
    for (size_t i = 0; i < app->n_stores &&
                       aps_scheduler_store_info(app->sched, i, &si) == 0; i++) {
        Apsd__V1__JobStoreInfo *js =
            APS_PB_NEW(a, Apsd__V1__JobStoreInfo, APSD__V1__JOB_STORE_INFO__INIT);
        if (js == NULL)
            break;
        js->name = (char *)si.name;
        js->type = (char *)si.type;
        js->job_count = si.jobs > INT32_MAX ? INT32_MAX : (int32_t)si.jobs;
        js->paused_job_count = si.unscheduled > INT32_MAX ? INT32_MAX : (int32_t)si.unscheduled;
        js->low_space = si.low_space != 0;
        if (si.next_run_time != APS_TIME_NONE && (wake == APS_TIME_NONE || si.next_run_time < wake))
            wake = si.next_run_time;
        info.jobstores[info.n_jobstores++] = js;
    }
    aps_executor_info ei;
    for (size_t i = 0; i < app->n_executors &&
                       aps_scheduler_executor_info(app->sched, i, &ei) == 0; i++) {
        Apsd__V1__ExecutorInfo *ex =
            APS_PB_NEW(a, Apsd__V1__ExecutorInfo, APSD__V1__EXECUTOR_INFO__INIT);
        if (ex == NULL)
            break;
        ex->name = (char *)ei.name;
        ex->type = (char *)ei.type;
        ex->max_workers = (int32_t)ei.max_workers;
        ex->running = (int32_t)ei.running;
        ex->pending = (int32_t)ei.pending;
        ex->connected_workers = (int32_t)ei.connected_workers;
        info.executors[info.n_executors++] = ex;
    }
    Apsd__V1__EventLogInfo *log =
        APS_PB_NEW(a, Apsd__V1__EventLogInfo, APSD__V1__EVENT_LOG_INFO__INIT);
    if (log != NULL) {
        uint64_t first = 0, last = 0;
        aps_scheduler_event_bounds(app->sched, &first, &last);
        log->first_sequence = first;
        log->last_sequence = last;
        log->max_events = app->event_max_count;
        if (app->event_max_age_us > 0)
            log->max_age = aps_dur_from_us(a, app->event_max_age_us);
        info.event_log = log;
    }
    info.start_time = aps_ts_from_time(a, app->start_time);
    info.current_time = aps_ts_from_time(a, aps_time_now());
    info.next_wakeup_time = aps_ts_from_time(a, wake);
    Apsd__V1__MisfireGraceTime *mg =
        APS_PB_NEW(a, Apsd__V1__MisfireGraceTime, APSD__V1__MISFIRE_GRACE_TIME__INIT);
    if (mg != NULL) {
        if (app->default_misfire_unlimited) {
            mg->limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED;
            mg->unlimited = 1;
        } else {
            mg->limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_DURATION;
            mg->duration = aps_dur_from_us(a, app->default_misfire_us);
        }
        info.default_misfire_grace_time = mg;
    }
    info.default_coalesce = app->default_coalesce ? 1 : 0;
    info.default_max_instances = app->default_max_instances;
    aps_call_reply(c, &info.base);
}

static void
h_get_scheduler(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    (void)m;
    reply_scheduler(c, ud);
}

static void
h_pause_scheduler(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__PauseSchedulerRequest *req = (const Apsd__V1__PauseSchedulerRequest *)m;
    aps_app *app = ud;
    if (check_request_id(c, req->request_id) != 0)
        return;
    int rc = aps_scheduler_get_state(app->sched) == APS_STATE_PAUSED
                 ? 0
                 : aps_scheduler_pause(app->sched);
    if (rc != 0) {
        aps_rpc_fail_engine(c, rc, NULL, NULL);
        return;
    }
    reply_scheduler(c, app);
}

static void
h_resume_scheduler(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__ResumeSchedulerRequest *req = (const Apsd__V1__ResumeSchedulerRequest *)m;
    aps_app *app = ud;
    if (check_request_id(c, req->request_id) != 0)
        return;
    int rc = aps_scheduler_get_state(app->sched) == APS_STATE_RUNNING
                 ? 0
                 : aps_scheduler_resume(app->sched);
    if (rc != 0) {
        aps_rpc_fail_engine(c, rc, NULL, NULL);
        return;
    }
    reply_scheduler(c, app);
}

/* ---- SubscribeEvents ------------------------------------------------------------------ */

typedef struct sub_stream {
    aps_pump_src src; /* first: the pump hands this pointer back */
    aps_app *app;
    aps_call *c;
    aps_subscriber *sub; /* filters by type and job ids itself */
    int continue_after_gap, bookmarks, caught_up;
    /* No after_sequence: nothing to replay, so the replay window never
     * applies and the slow-subscriber cut does from the first event (a
     * live stream that has not yet drained the ring once is not replaying:
     * under a high event rate it may never drain it, and a client that
     * never reads would then sit until the log is pruned past it). */
    int live;
    uint64_t last_seq; /* newest sequence examined */
    int64_t last_sent_us;
    int done;
    /* Set while a replay waits for writes to complete: only then does a
     * completed write wake the stream (a live stream is woken by the
     * engine when it has an event, not once per message sent). */
    atomic_int want_writes;
} sub_stream;

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A write completed or the call ended (CQ thread, the call's lock held). */
static void
sub_watch(void *arg)
{
    sub_stream *st = arg;
    if (atomic_load(&st->want_writes) || aps_call_cancelled(st->c))
        aps_pump_wake(&st->src);
}

static int
sub_send(sub_stream *st, Apsd__V1__SubscribeEventsResponse *r)
{
    st->last_sent_us = mono_us();
    return aps_call_send(st->c, &r->base);
}

static int
sub_bookmark(sub_stream *st)
{
    Apsd__V1__Bookmark bm = APSD__V1__BOOKMARK__INIT;
    Apsd__V1__SubscribeEventsResponse r = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__INIT;
    bm.sequence = st->last_seq;
    bm.caught_up = st->caught_up;
    r.item_case = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_BOOKMARK;
    r.bookmark = &bm;
    return sub_send(st, &r);
}

/* Bookmarks say how far the engine examined the log for this stream,
 * which is past the last event sent when newer ones did not match. */
static void
sub_position(sub_stream *st)
{
    uint64_t pos = 0;
    if (aps_subscriber_position(st->sub, &pos) == 0 && pos > st->last_seq)
        st->last_seq = pos;
}

/* Ends the stream (the pump then releases it). */
static int
sub_end(sub_stream *st, grpc_status_code code, const char *msg)
{
    st->done = 1;
    aps_call_finish(st->c, code, msg);
    return 0;
}

/* One service round; `*a` is the round's arena (made on first use). */
static int
sub_round(sub_stream *st, int tick, aps_arena **a)
{
    aps_app *app = st->app;
    char msg[256];
    int i;

    if (aps_call_cancelled(st->c))
        return sub_end(st, GRPC_STATUS_CANCELLED, "client went away");
    atomic_store(&st->want_writes, 0);
    for (i = 0; i < SUB_BATCH; i++) {
        size_t queued = aps_call_queued(st->c);
        if (!st->caught_up && !st->live) {
            /* Replaying: the window of queued writes; a completed write
             * resumes it (the flag first, so that none is missed). */
            atomic_store(&st->want_writes, 1);
            queued = aps_call_queued(st->c);
            if (queued >= SUB_REPLAY_WINDOW)
                break;
        }
        aps_event *ev = NULL;
        uint64_t gap_first = 0;
        int rc = aps_subscriber_next(st->sub, 0, &ev, &gap_first);
        if (rc == 0) {
            if (ev->sequence > st->last_seq)
                st->last_seq = ev->sequence;
            if ((st->caught_up || st->live) && queued >= app->subscriber_queue) {
                aps_event_free(ev);
                snprintf(msg, sizeof msg,
                         "subscriber too slow: %zu events not delivered; resume with "
                         "after_sequence",
                         queued);
                st->done = 1;
                aps_log(APS_LOG_WARN, "cutting a slow subscriber", "queued=%zu", queued);
                aps_call_cancel(st->c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
                return 0;
            }
            if (*a == NULL)
                *a = aps_arena_new(64u << 20);
            Apsd__V1__SubscribeEventsResponse r = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__INIT;
            r.item_case = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT;
            r.event = *a ? aps_event_to_pb(*a, ev) : NULL;
            int bad = r.event == NULL || sub_send(st, &r) != 0;
            aps_event_free(ev);
            if (bad)
                return sub_end(
                    st, aps_call_cancelled(st->c) ? GRPC_STATUS_CANCELLED : GRPC_STATUS_INTERNAL,
                    "cannot send an event");
            continue;
        }
        if (rc == APS_ENOENT) {
            if (st->bookmarks)
                sub_position(st);
            if (!st->caught_up) {
                st->caught_up = 1;
                if (st->bookmarks && sub_bookmark(st) != 0)
                    return sub_end(st, GRPC_STATUS_CANCELLED, "client went away");
            }
            break;
        }
        if (rc == APS_ERANGE) {
            Apsd__V1__EventGap gap = APSD__V1__EVENT_GAP__INIT;
            Apsd__V1__SubscribeEventsResponse r = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__INIT;
            gap.requested_sequence = st->last_seq + 1;
            gap.first_available_sequence = gap_first;
            r.item_case = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_GAP;
            r.gap = &gap;
            if (sub_send(st, &r) != 0)
                return sub_end(st, GRPC_STATUS_CANCELLED, "client went away");
            if (!st->continue_after_gap) {
                snprintf(msg, sizeof msg,
                         "events %llu to %llu were pruned from the event log; resume with "
                         "after_sequence=%llu",
                         (unsigned long long)gap.requested_sequence,
                         (unsigned long long)(gap_first ? gap_first - 1 : 0),
                         (unsigned long long)(gap_first ? gap_first - 1 : 0));
                return sub_end(st, GRPC_STATUS_OUT_OF_RANGE, msg);
            }
            if (gap_first > 0)
                st->last_seq = gap_first - 1;
            continue;
        }
        if (rc == APS_ESTATE)
            return sub_end(st, GRPC_STATUS_UNAVAILABLE,
                           "the scheduler shut down (the daemon is stopping)");
        snprintf(msg, sizeof msg, "event log: %s", aps_strerror(rc));
        return sub_end(st, aps_status_of(rc), msg);
    }
    if (i == SUB_BATCH)
        aps_pump_wake(&st->src); /* the batch limit was hit: more may be waiting */
    if (tick && st->bookmarks && st->caught_up &&
        mono_us() - st->last_sent_us >= app->heartbeat_us) {
        sub_position(st);
        if (sub_bookmark(st) != 0)
            return sub_end(st, GRPC_STATUS_CANCELLED, "client went away");
    }
    return 1;
}

static int
sub_service(aps_pump_src *src, int tick)
{
    aps_arena *a = NULL;
    int keep = sub_round((sub_stream *)src, tick, &a);
    aps_arena_free(a);
    return keep;
}

static void
sub_stop(aps_pump_src *src)
{
    sub_stream *st = (sub_stream *)src;
    if (!st->done) {
        st->done = 1;
        aps_call_finish(st->c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
    }
}

static void
sub_release(aps_pump_src *src)
{
    sub_stream *st = (sub_stream *)src;
    aps_subscriber_close(st->sub);
    atomic_fetch_sub(&st->app->n_subscribers, 1);
    free(st);
}

static void
h_subscribe_events(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__SubscribeEventsRequest *req = (const Apsd__V1__SubscribeEventsRequest *)m;
    aps_app *app = ud;
    uint32_t mask = 0;
    uint64_t first = 0, last = 0;

    for (size_t i = 0; i < req->n_types; i++) {
        int t = (int)req->types[i];
        if (t < APS_EVENT_SCHEDULER_STARTED || t > APS_EVENT_JOB_MAX_INSTANCES) {
            aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "types[%zu]: unknown event type %d", i,
                          t);
            return;
        }
        mask |= APS_EVENT_MASK(t);
    }
    if (req->n_job_ids > SUB_JOB_IDS_MAX) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "job_ids: %zu given, at most %d allowed",
                      req->n_job_ids, SUB_JOB_IDS_MAX);
        return;
    }
    for (size_t i = 0; i < req->n_job_ids; i++)
        if (req->job_ids[i][0] == '\0') {
            aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "job_ids[%zu]: must not be empty", i);
            return;
        }
    int rc = aps_scheduler_event_bounds(app->sched, &first, &last);
    if (rc != 0) {
        aps_rpc_fail_engine(c, rc, NULL, NULL);
        return;
    }
    int resume = req->optional_after_sequence_case ==
                 APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    if (resume && req->after_sequence > last) {
        aps_call_fail(c, GRPC_STATUS_OUT_OF_RANGE,
                      "after_sequence: %llu is beyond the newest sequence %llu",
                      (unsigned long long)req->after_sequence, (unsigned long long)last);
        return;
    }
    if (atomic_fetch_add(&app->n_subscribers, 1) >= app->max_subscribers) {
        atomic_fetch_sub(&app->n_subscribers, 1);
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many subscribers (at most %d)",
                      app->max_subscribers);
        return;
    }
    sub_stream *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        atomic_fetch_sub(&app->n_subscribers, 1);
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    st->app = app;
    st->c = c;
    st->continue_after_gap = req->continue_after_gap;
    st->bookmarks = req->send_bookmarks;
    st->live = !resume;
    st->last_seq = resume ? req->after_sequence : last;
    st->last_sent_us = mono_us();
    /* The engine matches types and ids at publish time (O(1) per event
     * and matching stream), and wakes the stream only when it has one. */
    rc = aps_subscribe_ids(app->sched, resume ? req->after_sequence : UINT64_MAX, mask,
                           (const char *const *)req->job_ids, req->n_job_ids, &st->sub);
    if (rc != 0) {
        st->sub = NULL;
        sub_release(&st->src);
        aps_rpc_fail_engine(c, rc, NULL, NULL);
        return;
    }
    /* A live stream starts where the engine's cursor does: the newest
     * published event, which events committed but not yet published may
     * follow with lower sequences than `last`; a first bookmark saying
     * `last` would let a client resuming from it miss them. */
    if (!resume) {
        uint64_t pos = 0;
        if (aps_subscriber_position(st->sub, &pos) == 0)
            st->last_seq = pos;
    }
    st->src.service = sub_service;
    st->src.stop = sub_stop;
    st->src.release = sub_release;
    st->src.fd = aps_subscriber_fd(st->sub);
    st->src.pump = app->pump;
    /* Writes and the end of the call wake the stream. The watch is set
     * before the pump may run it: once added, the stream may end (and the
     * call be freed) at any time. */
    aps_call_watch(c, sub_watch, st);
    if (aps_pump_add(app->pump, &st->src) != 0) {
        aps_call_watch(c, NULL, NULL);
        sub_release(&st->src);
        aps_call_fail(c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
    }
}

/* ---- the method table --------------------------------------------------------------- */

static const struct {
    const char *name;
    aps_handler_fn fn;
    aps_rpc_kind kind;
    int write;
} handlers[] = {
    {"AddJob", h_add_job, APS_RPC_UNARY, 1},
    {"GetJob", h_get_job, APS_RPC_UNARY, 0},
    {"ListJobs", h_list_jobs, APS_RPC_UNARY, 0},
    {"ModifyJob", h_modify_job, APS_RPC_UNARY, 1},
    {"RescheduleJob", h_reschedule_job, APS_RPC_UNARY, 1},
    {"PauseJob", h_pause_job, APS_RPC_UNARY, 1},
    {"ResumeJob", h_resume_job, APS_RPC_UNARY, 1},
    {"RunJobNow", h_run_job_now, APS_RPC_UNARY, 1},
    {"RemoveJob", h_remove_job, APS_RPC_UNARY, 1},
    {"RemoveAllJobs", h_remove_all, APS_RPC_UNARY, 1},
    {"PreviewTrigger", h_preview_trigger, APS_RPC_UNARY, 0},
    {"GetScheduler", h_get_scheduler, APS_RPC_UNARY, 0},
    {"PauseScheduler", h_pause_scheduler, APS_RPC_UNARY, 1},
    {"ResumeScheduler", h_resume_scheduler, APS_RPC_UNARY, 1},
    {"Backfill", h_backfill, APS_RPC_UNARY, 1},
    {"SubscribeEvents", h_subscribe_events, APS_RPC_SERVER_STREAM, 0},
};

static void
h_unimplemented(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    (void)m;
    (void)ud;
    aps_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, "%s is not implemented", aps_call_path(c));
}

static int
any_allow_list(const aps_app *app)
{
    for (size_t i = 0; i < app->n_executors; i++)
        if (app->executors[i].allow != NULL && app->executors[i].n_allow > 0)
            return 1;
    return 0;
}

int
aps_scheduler_methods(aps_app *app, aps_method *out, size_t cap)
{
    const ProtobufCServiceDescriptor *sd = &apsd__v1__scheduler__descriptor;
    if (cap < sd->n_methods)
        return -1;
    for (unsigned i = 0; i < sd->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &sd->methods[i];
        aps_method *m = &out[i];
        memset(m, 0, sizeof(*m));
        /* The path strings live as long as the process (the table does). */
        static char paths[64][96];
        snprintf(paths[i % 64], sizeof paths[0], "/%s/%s", sd->name, md->name);
        m->path = paths[i % 64];
        m->input = md->input;
        m->run_on = APS_RUN_POOL;
        m->handler = h_unimplemented;
        m->write = 1;
        m->app = app;
        for (size_t k = 0; k < sizeof handlers / sizeof handlers[0]; k++)
            if (strcmp(handlers[k].name, md->name) == 0) {
                m->handler = handlers[k].fn;
                m->kind = handlers[k].kind;
                m->write = handlers[k].write;
            }
        if (m->handler == h_unimplemented)
            aps_log(APS_LOG_WARN, "no handler for a method", "path=%s", m->path);
        if (m->handler == h_add_job && !any_allow_list(app))
            m->run_on = APS_RUN_CQ;
    }
    return (int)sd->n_methods;
}
