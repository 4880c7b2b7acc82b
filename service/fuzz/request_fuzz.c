/*
 * libFuzzer target for the API request path: every request message of
 * apsd.v1.Scheduler and apsd.v1.Workers through the daemon's own decode
 * (aps_pb_unpack, as server.c does it), the real handlers of
 * scheduler_rpc.c and workers_rpc.c (validation, protobuf-c <-> engine
 * mapping in convert.c) and the engine, on a scheduler with two memory
 * stores (see the flags for its loop).
 *
 * Decoding is server.c's: aps_pb_unpack, then aps_pb_check_request.
 * The gRPC plumbing is replaced by this file: it defines the aps_call_*
 * functions of server.h and the aps_pump_* functions of pump.h (so
 * server.c and pump.c are not linked), which record what a handler does
 * and check it. No gRPC library is needed.
 *
 * Input: a flags byte, then up to MAX_FRAMES frames, each
 *   byte    method: index into `methods` below (modulo their number)
 *   2 bytes length of the message (big-endian; clamped to what is left)
 *   ...     the serialized request
 * Flags: bit 0: streams end by a daemon shutdown (the pump's stop) rather
 * than by the client leaving; bit 1: a slow client (stream writes never
 * complete); bit 2: Complete / ExtendLease with run_id "@" use the last
 * dispatched run (and lease_token "@" its token), and ListJobs with
 * page_token "@" continues the last listing, else they go as sent;
 * bit 3: the scheduler stays stopped, else it is started (external loop)
 * and its loop makes one pass after each frame, on a clock that stands
 * still at NOW_US (so a job fires at most once per input).
 *
 * Checked, whatever the bytes:
 *   - every call ends exactly once (reply, fail or, for streams, finish /
 *     cancel), a unary call before its handler returns, a stream at the
 *     latest when its client leaves or the daemon stops;
 *   - a reply or stream message is of the method's output type, and every
 *     string in it is valid UTF-8 (a client's protobuf parser rejects
 *     anything else); a status is an error code other than UNKNOWN and
 *     INTERNAL (a request never makes a memory store fail), with a
 *     non-empty message;
 *   - no leak, no sanitizer report (the scheduler is destroyed per input).
 *
 * tools/fuzz builds and runs it (`tools/fuzz request`); seeds:
 * service/fuzz/gen_request_corpus.sh; //service/fuzz:request_corpus_test
 * runs the corpus once as a plain test. The handlers' aps_time_now is
 * this file's (the engine's clock, standing still):
 * fuzz-ldflags: -Wl,--wrap=aps_time_now
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "apsd/v1/scheduler.pb-c.h"
#include "apsd/v1/workers.pb-c.h"
#include "service/convert.h"
#include "service/log.h"
#include "service/pump.h"
#include "service/rpc.h"
#include "service/server.h"

#define MAX_FRAMES 32
#define MAX_DECODE_DEPTH 100 /* as server.c */
#define PUMP_ROUNDS 8
/* Ahead of the wall clock: the event log prunes by age on the real clock,
 * which would otherwise drop every event at once. */
#define NOW_US INT64_C(2114380800000000) /* 2037-01-01T00:00:00Z */

/* The methods, by the selector byte. The order is the seeds' format:
 * append only. */
static const char *const methods[] = {
    "/apsd.v1.Scheduler/AddJob",          "/apsd.v1.Scheduler/GetJob",
    "/apsd.v1.Scheduler/ListJobs",        "/apsd.v1.Scheduler/ModifyJob",
    "/apsd.v1.Scheduler/RescheduleJob",   "/apsd.v1.Scheduler/PauseJob",
    "/apsd.v1.Scheduler/ResumeJob",       "/apsd.v1.Scheduler/RunJobNow",
    "/apsd.v1.Scheduler/RemoveJob",       "/apsd.v1.Scheduler/RemoveAllJobs",
    "/apsd.v1.Scheduler/PreviewTrigger",  "/apsd.v1.Scheduler/GetScheduler",
    "/apsd.v1.Scheduler/PauseScheduler",  "/apsd.v1.Scheduler/ResumeScheduler",
    "/apsd.v1.Scheduler/Backfill",        "/apsd.v1.Scheduler/SubscribeEvents",
    "/apsd.v1.Workers/Acquire",           "/apsd.v1.Workers/Complete",
    "/apsd.v1.Workers/ExtendLease",
};
#define N_METHODS (sizeof methods / sizeof methods[0])

/* ---- the fake server: calls ------------------------------------------------ */

struct aps_call {
    aps_arena *arena;
    const aps_method *m;
    const ProtobufCMessageDescriptor *output;
    int owner; /* the handler's reference, until it ends the call */
    int cancelled;
    int slow; /* writes never complete */
    size_t queued;
    void (*watch)(void *arg);
    void *watch_arg;
    struct aps_call *next;
};

static struct {
    int trace; /* REQUEST_FUZZ_TRACE set: one line per answer on stderr */
    int slow;
    char run_id[64];
    char lease_token[128];
    char page_token[512];
} g;

/* The oracle of "every string in a reply is valid UTF-8": deliberately its
 * own copy of the RFC 3629 rules, not the daemon's (aps__pb_utf8_ok of
 * pbcheck.h, the request check in convert.c). Request strings reach replies
 * and error messages only through those checks, which are what this oracle
 * tests: sharing their code would blind it to their bugs. */
static int
utf8_ok(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;

    while (*s) {
        unsigned c = *s, n;
        uint32_t cp;

        if (c < 0x80) {
            s++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n + 1;
    }
    return 1;
}

static void
die(const char *what, const aps_call *c)
{
    fprintf(stderr, "request_fuzz: %s (%s)\n", what, c && c->m ? c->m->path : "-");
    abort();
}

/* Every string field of `m`, at any depth, is valid UTF-8. */
static void
check_strings(const ProtobufCMessage *m, const aps_call *c)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        size_t n = 1;

        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)((const char *)m + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)m + f->quantifier_offset);
            base = *(const char *const *)base;
        }
        for (size_t k = 0; k < n; k++) {
            const void *v = ((const void *const *)base)[k];
            if (v == NULL)
                continue;
            if (f->type == PROTOBUF_C_TYPE_STRING && !utf8_ok(v))
                die("a string field of the answer is not UTF-8", c);
            if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                check_strings(v, c);
        }
    }
}

/* What a client would receive: packs `msg`, decodes it again as the
 * method's output type, checks its strings. */
static void
check_message(const aps_call *c, const ProtobufCMessage *msg)
{
    ProtobufCMessage *back;
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);

    if (msg->descriptor != c->output)
        die("answer of the wrong message type", c);
    if (buf == NULL)
        abort();
    if (protobuf_c_message_pack(msg, buf) != n)
        die("packed size mismatch", c);
    back = protobuf_c_message_unpack(c->output, NULL, n, buf);
    if (back == NULL)
        die("the answer does not decode", c);
    check_strings(back, c);
    protobuf_c_message_free_unpacked(back, NULL);
    free(buf);
}

static void
end_call(aps_call *c)
{
    if (!c->owner)
        die("a call ended twice (or after its handler gave it up)", c);
    c->owner = 0;
    c->watch = NULL; /* cleared by finish/cancel, as server.h says */
}

static void
check_status(aps_call *c, grpc_status_code code, const char *msg)
{
    if ((int)code <= 0 || (int)code > 16)
        die("a status that is not an error code", c);
    if (code == GRPC_STATUS_UNKNOWN || code == GRPC_STATUS_INTERNAL) {
        fprintf(stderr, "request_fuzz: status %d: %s\n", (int)code, msg ? msg : "");
        die("UNKNOWN or INTERNAL status", c);
    }
    if (msg == NULL || msg[0] == '\0')
        die("a status without a message", c);
}

aps_arena *
aps_call_arena(aps_call *c)
{
    return c->arena;
}

const char *
aps_call_path(aps_call *c)
{
    return c->m->path;
}

const uint8_t *
aps_call_request_bytes(aps_call *c, size_t *len)
{
    (void)c;
    *len = 0;
    return NULL;
}

int
aps_call_cancelled(aps_call *c)
{
    return c->cancelled;
}

aps_server *
aps_call_server(aps_call *c)
{
    (void)c;
    return NULL;
}

void
aps_call_reply(aps_call *c, const ProtobufCMessage *msg)
{
    if (c->m->kind != APS_RPC_UNARY)
        die("reply on a stream", c);
    check_message(c, msg);
    if (g.trace)
        fprintf(stderr, "  %s: OK\n", c->m->path);
    if (msg->descriptor == &apsd__v1__list_jobs_response__descriptor) {
        const Apsd__V1__ListJobsResponse *r = (const Apsd__V1__ListJobsResponse *)msg;
        snprintf(g.page_token, sizeof g.page_token, "%s", r->next_page_token);
    }
    end_call(c);
}

void
aps_call_reply_bytes(aps_call *c, const uint8_t *data, size_t len)
{
    (void)data;
    (void)len;
    die("raw reply from an API method", c);
}

void
aps_call_fail(aps_call *c, grpc_status_code code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    check_status(c, code, msg);
    if (g.trace)
        fprintf(stderr, "  %s: %s: %s\n", c->m->path, aps_status_name(code), msg);
    end_call(c);
}

int
aps_call_send(aps_call *c, const ProtobufCMessage *msg)
{
    if (c->m->kind != APS_RPC_SERVER_STREAM)
        die("send on a unary call", c);
    if (!c->owner)
        die("send after the call ended", c);
    if (c->cancelled)
        return -1;
    check_message(c, msg);
    if (g.trace)
        fprintf(stderr, "  %s: message %s\n", c->m->path, msg->descriptor->short_name);
    if (msg->descriptor == &apsd__v1__acquire_response__descriptor) {
        const Apsd__V1__AcquireResponse *r = (const Apsd__V1__AcquireResponse *)msg;
        if (r->item_case == APSD__V1__ACQUIRE_RESPONSE__ITEM_DISPATCH) {
            snprintf(g.run_id, sizeof g.run_id, "%s", r->dispatch->run_id);
            snprintf(g.lease_token, sizeof g.lease_token, "%s", r->dispatch->lease_token);
        }
    }
    if (c->slow) {
        c->queued++;
    } else if (c->watch) {
        c->watch(c->watch_arg); /* the write completed */
    }
    return 0;
}

int
aps_call_send_bytes(aps_call *c, const uint8_t *data, size_t len)
{
    (void)data;
    (void)len;
    die("raw send from an API method", c);
    return -1;
}

size_t
aps_call_queued(aps_call *c)
{
    return c->queued;
}

void
aps_call_finish(aps_call *c, grpc_status_code code, const char *msg)
{
    if (c->m->kind != APS_RPC_SERVER_STREAM)
        die("finish on a unary call", c);
    check_status(c, code, msg);
    if (g.trace)
        fprintf(stderr, "  %s: stream ends %s: %s\n", c->m->path, aps_status_name(code), msg);
    end_call(c);
}

void
aps_call_cancel(aps_call *c, grpc_status_code code, const char *msg)
{
    aps_call_finish(c, code, msg);
}

int
aps_call_hold(aps_call *c)
{
    die("hold from an API method", c);
    return 0;
}

void
aps_call_watch(aps_call *c, void (*fn)(void *arg), void *arg)
{
    c->watch = fn;
    c->watch_arg = arg;
}

/* ---- the fake pump: serviced between frames, on this thread ----------------- */

struct aps_pump {
    aps_pump_src *head;
    int added; /* a source was added by the current handler */
};

int
aps_pump_add(aps_pump *p, aps_pump_src *src)
{
    src->pump = p;
    atomic_store(&src->pending, 1);
    src->prev = NULL;
    src->next = p->head;
    if (p->head)
        p->head->prev = src;
    p->head = src;
    p->added = 1;
    return 0;
}

void
aps_pump_wake(aps_pump_src *src)
{
    atomic_store(&src->pending, 1);
}

static void
pump_unlink(aps_pump *p, aps_pump_src *src)
{
    if (src->prev)
        src->prev->next = src->next;
    else
        p->head = src->next;
    if (src->next)
        src->next->prev = src->prev;
}

/* Which call each stream source belongs to: recorded when a handler adds
 * a source (the handlers' stream state is private to them). */
typedef struct stream_ref {
    aps_pump_src *src;
    aps_call *c;
} stream_ref;

static stream_ref streams[MAX_FRAMES];
static size_t n_streams;

static aps_call *
call_of(const aps_pump_src *src)
{
    for (size_t i = 0; i < n_streams; i++)
        if (streams[i].src == src)
            return streams[i].c;
    abort();
}

static void
release(aps_pump *p, aps_pump_src *src)
{
    aps_call *c = call_of(src);

    pump_unlink(p, src);
    src->release(src);
    if (c->owner)
        die("a stream was released without ending its call", c);
}

/* Services every source that asks for it, a bounded number of rounds. */
static void
pump_run(aps_pump *p, int tick)
{
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        int any = 0;
        for (aps_pump_src *s = p->head, *next; s != NULL; s = next) {
            next = s->next;
            if (!atomic_exchange(&s->pending, 0) && !(tick && round == 0))
                continue;
            any = 1;
            if (s->service(s, tick && round == 0) == 0)
                release(p, s);
        }
        if (!any)
            break;
    }
}

/* Ends every stream: the client leaves, or the daemon stops. */
static void
pump_end(aps_pump *p, int shutdown)
{
    pump_run(p, 1);
    while (p->head != NULL) {
        aps_pump_src *s = p->head;
        aps_call *c = call_of(s);
        if (shutdown) {
            s->stop(s);
            release(p, s);
            continue;
        }
        c->cancelled = 1;
        if (c->watch)
            c->watch(c->watch_arg);
        if (s->service(s, 0) != 0)
            die("a stream outlived its client", c);
        release(p, s);
    }
}

/* ---- the daemon's state ------------------------------------------------------- */

static aps_method table[32];
static size_t n_table;
static const ProtobufCMessageDescriptor *outputs[32];

static const aps_app_executor app_execs[] = {
    {"default", "processpool", 10, NULL, 0, APS_OUTPUT_LIMIT_DEFAULT, NULL, 0},
    {"restricted", "processpool", 2, (const char *const[]){"/usr/bin/", "/bin/true"}, 2,
     APS_OUTPUT_LIMIT_DEFAULT, (const char *const[]){"LANG", "LC_*"}, 2},
    {"workers", "workers", 10, NULL, 0, 0, NULL, 0},
};
static const aps_app_store app_stores[] = {{"default", "memory"}, {"extra", "memory"}};

/* The engine's executors are all of type workers: the daemon's
 * processpool ones (as the service sees them, app_execs) become executors
 * that refuse command runs at once. A fuzzer must never start processes,
 * and a refusal on the caller's thread keeps every input deterministic
 * (a thread pool would finish runs at any time). Remote tasks go to a
 * real workers executor, whose dispatches the Acquire stream hands out. */
static const aps_executor_def eng_execs[] = {
    {.name = "default", .type = "workers", .max_workers = 1, .max_queue = 64},
    {.name = "restricted", .type = "workers", .max_workers = 1, .max_queue = 64},
    {.name = "workers", .type = "workers", .max_workers = 4, .max_queue = 64},
};
static const aps_store_def eng_stores[] = {{"default", "memory", NULL}, {"extra", "memory", NULL}};

static aps_time
fixed_now(void *ctx)
{
    (void)ctx;
    return NOW_US;
}

/* The handlers' aps_time_now (the link wraps it): the engine's clock. */
aps_time __wrap_aps_time_now(void);
aps_time
__wrap_aps_time_now(void)
{
    return NOW_US;
}

static const aps_clock clock_fixed = {fixed_now, NULL};

static const ProtobufCMessageDescriptor *
output_of(const char *path)
{
    const ProtobufCServiceDescriptor *sds[] = {&apsd__v1__scheduler__descriptor,
                                               &apsd__v1__workers__descriptor};
    for (size_t s = 0; s < 2; s++) {
        size_t n = strlen(sds[s]->name);
        if (strncmp(path + 1, sds[s]->name, n) != 0 || path[1 + n] != '/')
            continue;
        for (unsigned i = 0; i < sds[s]->n_methods; i++)
            if (strcmp(sds[s]->methods[i].name, path + 2 + n) == 0)
                return sds[s]->methods[i].output;
    }
    return NULL;
}

static void
init_once(aps_app *app)
{
    static int done;
    int n;

    if (done)
        return;
    done = 1;
    aps_log_set_level(APS_LOG_ERROR);
    n = aps_scheduler_methods(app, table, 32);
    if (n < 0)
        abort();
    n_table = (size_t)n;
    n = aps_workers_methods(app, table + n_table, 32 - n_table);
    if (n < 0)
        abort();
    n_table += (size_t)n;
    for (size_t i = 0; i < n_table; i++) {
        outputs[i] = output_of(table[i].path);
        if (outputs[i] == NULL)
            abort();
    }
    /* Every method of both services is reachable by a selector. */
    if (n_table != N_METHODS)
        abort();
}

static size_t
find_method(const char *path)
{
    for (size_t i = 0; i < n_table; i++)
        if (strcmp(table[i].path, path) == 0)
            return i;
    abort();
}

/* Complete / ExtendLease: "@" names the last dispatched run; ListJobs:
 * page_token "@" is the last page's next_page_token. */
static void
substitute(const aps_method *m, ProtobufCMessage *req)
{
    char **run_id = NULL, **token = NULL;

    if (strcmp(m->path, "/apsd.v1.Scheduler/ListJobs") == 0) {
        Apsd__V1__ListJobsRequest *r = (Apsd__V1__ListJobsRequest *)req;
        if (strcmp(r->page_token, "@") == 0)
            r->page_token = g.page_token;
        return;
    }
    if (strcmp(m->path, "/apsd.v1.Workers/Complete") == 0) {
        run_id = &((Apsd__V1__CompleteRequest *)req)->run_id;
        token = &((Apsd__V1__CompleteRequest *)req)->lease_token;
    } else if (strcmp(m->path, "/apsd.v1.Workers/ExtendLease") == 0) {
        run_id = &((Apsd__V1__ExtendLeaseRequest *)req)->run_id;
        token = &((Apsd__V1__ExtendLeaseRequest *)req)->lease_token;
    } else {
        return;
    }
    if (g.run_id[0] && strcmp(*run_id, "@") == 0)
        *run_id = g.run_id;
    if (g.lease_token[0] && strcmp(*token, "@") == 0)
        *token = g.lease_token;
}

/* One request, as server.c runs it: decode, then the handler. */
static aps_call *
call(aps_app *app, size_t mi, const uint8_t *data, size_t len, int subst)
{
    const aps_method *m = &table[mi];
    aps_call *c = calloc(1, sizeof(*c));
    ProtobufCMessage *req;
    char why[192];

    if (c == NULL)
        abort();
    c->arena = aps_arena_new(64u << 20);
    if (c->arena == NULL)
        abort();
    c->m = m;
    c->output = outputs[mi];
    c->owner = 1;
    c->slow = g.slow;
    req = aps_pb_unpack(c->arena, m->input, data, len, MAX_DECODE_DEPTH);
    if (req == NULL || aps_pb_check_request(m->input, data, len, why, sizeof why) != 0) {
        /* server.c answers INVALID_ARGUMENT without calling the handler */
        if (g.trace)
            fprintf(stderr, "  %s: rejected: %s\n", m->path, req ? why : "does not decode");
        c->owner = 0;
        return c;
    }
    if (subst)
        substitute(m, req);
    app->pump->added = 0;
    m->handler(c, req, m->app);
    if (app->pump->added) {
        /* The stream owns the call until the pump releases it. */
        if (n_streams == MAX_FRAMES)
            abort();
        streams[n_streams].src = app->pump->head;
        streams[n_streams].c = c;
        n_streams++;
    } else if (c->owner) {
        die("the handler returned without ending its call", c);
    }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static aps_pump pump;
    aps_scheduler_config cfg;
    aps_scheduler *sched = NULL;
    aps_error err = {0};
    aps_app app;
    aps_call *calls = NULL;
    uint8_t flags;
    int frames = 0;

    if (size < 1)
        return 0;
    flags = data[0];
    data++;
    size--;

    memset(&app, 0, sizeof app);
    memset(&cfg, 0, sizeof cfg);
    cfg.stores = eng_stores;
    cfg.n_stores = 2;
    cfg.executors = eng_execs;
    cfg.n_executors = 3;
    cfg.clock = &clock_fixed;
    cfg.jitter_seed = 1;
    cfg.event_max_count = 64;
    if (aps_scheduler_create(&cfg, &sched, &err) != 0) {
        fprintf(stderr, "request_fuzz: aps_scheduler_create: %s\n", err.msg);
        abort();
    }
    memset(&pump, 0, sizeof pump);
    memset(&g, 0, sizeof g);
    g.trace = getenv("REQUEST_FUZZ_TRACE") != NULL;
    g.slow = (flags & 2) != 0;
    n_streams = 0;
    app.sched = sched;
    app.pump = &pump;
    app.default_tz = "UTC";
    app.start_time = NOW_US;
    app.executors = app_execs;
    app.n_executors = sizeof app_execs / sizeof app_execs[0];
    app.stores = app_stores;
    app.n_stores = 2;
    app.default_coalesce = 1;
    app.default_max_instances = 1;
    app.default_misfire_us = 1000000;
    app.event_max_count = 64;
    app.event_max_age_us = INT64_C(7) * 86400 * 1000000;
    app.max_subscribers = 2;
    app.subscriber_queue = 4;
    app.heartbeat_us = 1000000;
    app.backfill_max_runs = 50;
    if (!(flags & 8) && aps_scheduler_start(sched, APS_RUN_EXTERNAL) != 0)
        abort();
    if (aps_workers_init(&app) != 0)
        abort();
    init_once(&app);
    /* The method table's app pointers are the first input's: repoint. */
    for (size_t i = 0; i < n_table; i++)
        table[i].app = &app;

    while (size >= 3 && frames < MAX_FRAMES) {
        size_t mi = find_method(methods[data[0] % N_METHODS]);
        size_t len = (size_t)data[1] << 8 | data[2];
        aps_call *c;

        data += 3;
        size -= 3;
        if (len > size)
            len = size;
        c = call(&app, mi, data, len, (flags & 4) != 0);
        c->next = calls;
        calls = c;
        data += len;
        size -= len;
        frames++;
        if (!(flags & 8))
            aps_scheduler_process(sched, NULL);
        pump_run(&pump, 0);
    }
    pump_end(&pump, flags & 1);
    while (calls != NULL) {
        aps_call *next = calls->next;
        aps_arena_free(calls->arena);
        free(calls);
        calls = next;
    }
    aps_scheduler_destroy(sched);
    aps_workers_fini(&app);
    return 0;
}
