/*
 * bench_service: a load client for the apsd daemon on the gRPC C core and
 * protobuf-c (no binding): N calls in flight on one completion queue, one
 * thread, for a fixed time or count. tools/bench/service/run and
 * tools/bench/run start the daemon and drive it.
 *
 *   bench_service unary TARGET get|add INFLIGHT SECONDS [WARMUP [STORE [CHANNELS]]]
 *       GetScheduler (the floor of the stack, on a daemon with an empty
 *       store) or AddJob
 *       (a far `date` job running /bin/true into STORE, default `default`
 *       = LMDB, durable; ids unique per run) with INFLIGHT calls in flight
 *       for WARMUP (default 0.5) + SECONDS seconds; calls completing in the
 *       SECONDS window count: rate and latency p50/p99/max.
 *   bench_service fill TARGET JOBS INFLIGHT [STORE [CHANNELS]]
 *       adds exactly JOBS hourly interval jobs (ids job-0000000..., start
 *       times spread over the hour after the next, so none fires during a
 *       benchmark), INFLIGHT in flight: the time it took.
 *   bench_service events TARGET SUBSCRIBERS SECONDS [INFLIGHT]
 *       event delivery to SUBSCRIBERS SubscribeEvents streams (one
 *       connection each), in two phases:
 *       live:   the streams are open and caught up (a bookmark says so);
 *               a producer adds jobs to the `memory` store with INFLIGHT
 *               (default 64) AddJob calls in flight for SECONDS, so N
 *               JOB_ADDED events are logged; every stream must then get
 *               all N. Figures: events produced/s, events delivered/s
 *               summed over the streams (until the last one has its N),
 *               delivery latency (receipt - the event's time) p50/p99,
 *               and streams the daemon cut as too slow.
 *       replay: as many new streams read the same N events back from the
 *               durable log (after_sequence); nothing else runs, so this
 *               is the delivery capacity itself: events delivered/s until
 *               the last stream has all N.
 *   bench_service list TARGET PAGES PAGE_SIZE
 *       ListJobs from the first page on, PAGES pages of PAGE_SIZE jobs,
 *       following next_page_token: the latency of each page.
 *   bench_service firstfire TARGET FILE DELAY_MS
 *       adds (replacing) job `first-fire`: a `date` job DELAY_MS from now,
 *       misfire grace unlimited, that runs /bin/sh -c 'date +%s%N > FILE'.
 *   bench_service repeat TARGET get COUNT
 *       COUNT GetScheduler calls one after the other: their latency.
 *   bench_service wait TARGET SECONDS
 *       calls ListJobs (one job) until it answers, at most SECONDS: the
 *       daemon serves and its engine answers.
 *
 * TARGET is HOST:PORT (plaintext). Output: one line per figure,
 * "<what> key=value ...", for the drivers. Exit status 0 when every call
 * succeeded, 1 otherwise (the figures are printed either way).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "apsd/v1/scheduler.pb-c.h"

#define NS INT64_C(1000000000)
#define MAX_CHANNELS 256
#define MAX_EVENTS 90000 /* the event log keeps 100,000 by default: replay needs them all */

/* ---- clocks, samples ------------------------------------------------------------ */

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t
real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_service: %s\n", what);
    exit(2);
}

/* A growable array of latencies (ns), bounded so a long run cannot eat the
 * machine: past the cap, samples are dropped (counts stay exact). */
typedef struct samples {
    int64_t *v;
    size_t n, cap;
} samples;

#define SAMPLES_MAX ((size_t)16 << 20)

static void
samples_add(samples *s, int64_t x)
{
    if (s->n == s->cap) {
        if (s->cap >= SAMPLES_MAX)
            return;
        size_t cap = s->cap ? s->cap * 2 : 4096;
        int64_t *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) in microseconds; sorts the samples. */
static double
pct_us(samples *s, double q)
{
    if (s->n == 0)
        return 0.0;
    qsort(s->v, s->n, sizeof(*s->v), cmp_i64);
    size_t i = (size_t)((double)(s->n - 1) * q + 0.5);
    return (double)s->v[i] / 1e3;
}

/* ---- channels and the completion queue ---------------------------------------- */

/* A completion: the tag of every batch is one of these (first member of
 * its owner), so the loop dispatches without a switch. */
typedef struct tag {
    void (*done)(struct tag *t, int ok);
} tag;

enum { M_GET, M_ADD, M_LIST, M_SUB, M_COUNT };
static const char *const method_path[M_COUNT] = {
    "/apsd.v1.Scheduler/GetScheduler",
    "/apsd.v1.Scheduler/AddJob",
    "/apsd.v1.Scheduler/ListJobs",
    "/apsd.v1.Scheduler/SubscribeEvents",
};

static grpc_completion_queue *cq;
static struct {
    grpc_channel *ch;
    void *method[M_COUNT];
} chans[MAX_CHANNELS];
static int n_chans;

/* Opens channels up to n (0..n-1). Each has its own subchannel pool:
 * without it, channels with the same target and arguments share one TCP
 * connection, and "50 subscribers" would be 50 streams on one connection. */
static void
open_channels(const char *target, int n)
{
    /* Reconnect backoff of 10-100 ms instead of 1-120 s: `wait` polls a
     * daemon that is starting, and the figure is its start-up time. */
    static const struct {
        const char *key;
        int value;
    } ints[] = {
        {GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1},
        {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, -1},
        {GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 10},
        {GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 10},
        {GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100},
    };
    enum { N_ARGS = sizeof(ints) / sizeof(ints[0]) };
    grpc_arg args[N_ARGS];
    memset(args, 0, sizeof(args));
    for (int i = 0; i < N_ARGS; i++) {
        args[i].type = GRPC_ARG_INTEGER;
        args[i].key = (char *)ints[i].key;
        args[i].value.integer = ints[i].value;
    }
    grpc_channel_args ca = {N_ARGS, args};
    if (n > MAX_CHANNELS)
        die("too many channels");
    for (; n_chans < n; n_chans++) {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        chans[n_chans].ch = grpc_channel_create(target, creds, &ca);
        grpc_channel_credentials_release(creds);
        for (int m = 0; m < M_COUNT; m++)
            chans[n_chans].method[m] =
                grpc_channel_register_call(chans[n_chans].ch, method_path[m], NULL, NULL);
    }
}

/* Runs completions until *flag becomes nonzero or the monotonic deadline
 * (ns, 0 = none) passes. */
static void
loop_until(const int *flag, int64_t deadline)
{
    while (!*flag && (deadline == 0 || mono_ns() < deadline)) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(50, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            ((tag *)ev.tag)->done((tag *)ev.tag, ev.success);
        else if (ev.type == GRPC_QUEUE_SHUTDOWN)
            die("completion queue shut down");
    }
}

static grpc_byte_buffer *
pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static ProtobufCMessage *
unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

static gpr_timespec
deadline_in(int seconds)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(seconds, GPR_TIMESPAN));
}

/* ---- unary calls ----------------------------------------------------------------- */

typedef struct ucall ucall;
struct ucall {
    tag t; /* first */
    void (*on_done)(ucall *u, int ok);
    void *owner;
    grpc_call *call;
    grpc_metadata_array md_init, md_trail;
    grpc_byte_buffer *req, *resp;
    grpc_status_code status;
    grpc_slice details;
    int64_t start_ns;
};

static void
ucall_done(tag *t, int ok)
{
    ucall *u = (ucall *)t;
    u->on_done(u, ok && u->status == GRPC_STATUS_OK);
}

/* Starts one unary call; `req` is taken. wait_for_ready: queue the call
 * until the channel connects instead of failing it at once. */
static void
ucall_start(ucall *u, int ch, int method, grpc_byte_buffer *req, int wait_for_ready)
{
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    u->t.done = ucall_done;
    u->req = req;
    u->resp = NULL;
    u->status = GRPC_STATUS_UNKNOWN;
    u->details = grpc_empty_slice();
    grpc_metadata_array_init(&u->md_init);
    grpc_metadata_array_init(&u->md_trail);
    u->call = grpc_channel_create_registered_call(chans[ch].ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                                  chans[ch].method[method], deadline_in(60), NULL);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->md_trail;
    ops[5].data.recv_status_on_client.status = &u->status;
    ops[5].data.recv_status_on_client.status_details = &u->details;
    u->start_ns = mono_ns();
    grpc_call_error e = grpc_call_start_batch(u->call, ops, 6, &u->t, NULL);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "bench_service: start_batch: %s\n", grpc_call_error_to_string(e));
        exit(2);
    }
}

/* Frees what the finished call held; the response stays (caller's). */
static void
ucall_release(ucall *u)
{
    grpc_byte_buffer_destroy(u->req);
    u->req = NULL;
    grpc_metadata_array_destroy(&u->md_init);
    grpc_metadata_array_destroy(&u->md_trail);
    grpc_slice_unref(u->details);
    grpc_call_unref(u->call);
    u->call = NULL;
}

static void
ucall_error(const ucall *u, const char *what)
{
    char *d = grpc_slice_to_c_string(u->details);
    fprintf(stderr, "bench_service: %s: status %d: %s\n", what, (int)u->status, d);
    gpr_free(d);
}

/* One synchronous call (the loop serves other calls meanwhile). */
typedef struct sync_call {
    ucall u;
    int done, ok;
} sync_call;

static void
sync_done(ucall *u, int ok)
{
    sync_call *s = (sync_call *)u;
    s->done = 1;
    s->ok = ok;
}

static ProtobufCMessage *
call_sync(int ch, int method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *out,
          int wait_for_ready, int64_t *latency_ns)
{
    sync_call s;
    memset(&s, 0, sizeof(s));
    s.u.on_done = sync_done;
    ucall_start(&s.u, ch, method, pack(req), wait_for_ready);
    loop_until(&s.done, 0);
    if (latency_ns)
        *latency_ns = mono_ns() - s.u.start_ns;
    ProtobufCMessage *m = NULL;
    if (s.ok)
        m = unpack(out, s.u.resp);
    else
        ucall_error(&s.u, method_path[method]);
    grpc_byte_buffer_destroy(s.u.resp);
    ucall_release(&s.u);
    return m;
}

/* ---- requests --------------------------------------------------------------------- */

enum { JOB_FAR_DATE, JOB_HOURLY };

/* An AddJob request: a command job running /bin/true. */
static grpc_byte_buffer *
add_request(const char *id, const char *store, int kind, int64_t start_us)
{
    static char *argv[] = {"/bin/true"};
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Apsd__V1__DateTrigger date = APSD__V1__DATE_TRIGGER__INIT;
    Apsd__V1__IntervalTrigger iv = APSD__V1__INTERVAL_TRIGGER__INIT;
    Apsd__V1__Trigger trig = APSD__V1__TRIGGER__INIT;
    Apsd__V1__CommandTarget cmd = APSD__V1__COMMAND_TARGET__INIT;
    Apsd__V1__Target target = APSD__V1__TARGET__INIT;
    Apsd__V1__Job job = APSD__V1__JOB__INIT;
    Apsd__V1__AddJobRequest req = APSD__V1__ADD_JOB_REQUEST__INIT;

    if (kind == JOB_FAR_DATE) {
        ts.seconds = INT64_C(4102444800); /* 2100-01-01, as bench_engine's adds */
        date.run_date = &ts;
        trig.kind_case = APSD__V1__TRIGGER__KIND_DATE;
        trig.date = &date;
    } else {
        ts.seconds = start_us / 1000000;
        ts.nanos = (int32_t)(start_us % 1000000) * 1000;
        iv.hours = 1;
        iv.start_date = &ts;
        trig.kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
        trig.interval = &iv;
    }
    cmd.n_argv = 1;
    cmd.argv = argv;
    target.kind_case = APSD__V1__TARGET__KIND_COMMAND;
    target.command = &cmd;
    job.id = (char *)id;
    job.trigger = &trig;
    job.target = &target;
    job.jobstore = (char *)store;
    req.job = &job;
    return pack(&req.base);
}

static grpc_byte_buffer *
empty_request(void)
{
    grpc_slice s = grpc_empty_slice();
    return grpc_raw_byte_buffer_create(&s, 1);
}

/* ---- the unary load: INFLIGHT slots, each restarting its call ------------------ */

typedef struct load {
    int method, kind, channels;
    const char *store;
    char prefix[48];
    uint64_t next_id, limit; /* limit: most calls issued (0 = by time only) */
    int64_t t0, rec_from, rec_to; /* ns: start, recording window */
    int64_t job_base_us;          /* JOB_HOURLY start times */
    int active, stopped, all_done;
    uint64_t ok, errors, in_window;
    int64_t last_done_ns;
    samples lat;
} load;

typedef struct slot {
    ucall u; /* first */
    load *L;
    int ch;
} slot;

static void slot_done(ucall *u, int ok);

static void
slot_start(slot *s)
{
    load *L = s->L;
    grpc_byte_buffer *req;
    s->u.on_done = slot_done;
    if (L->method == M_ADD) {
        char id[96];
        uint64_t n = L->next_id++;
        if (L->kind == JOB_HOURLY)
            snprintf(id, sizeof(id), "%s%07" PRIu64, L->prefix, n);
        else
            snprintf(id, sizeof(id), "%s%" PRIu64, L->prefix, n);
        /* Hourly jobs spread over the hour, one per millisecond. */
        req = add_request(id, L->store, L->kind,
                          L->job_base_us + (int64_t)(n % 3600000) * 1000);
    } else {
        L->next_id++;
        req = empty_request();
    }
    ucall_start(&s->u, s->ch, L->method, req, 1);
}

static void
slot_done(ucall *u, int ok)
{
    slot *s = (slot *)u;
    load *L = s->L;
    int64_t now = mono_ns();
    if (ok) {
        L->ok++;
        if (now >= L->rec_from && now < L->rec_to) {
            L->in_window++;
            samples_add(&L->lat, now - u->start_ns);
        }
    } else {
        if (L->errors++ < 3)
            ucall_error(u, method_path[L->method]);
    }
    L->last_done_ns = now;
    grpc_byte_buffer_destroy(u->resp);
    u->resp = NULL;
    ucall_release(u);
    int more = !L->stopped && (L->limit ? L->next_id < L->limit : now < L->rec_to);
    if (more) {
        slot_start(s);
    } else if (--L->active == 0) {
        L->all_done = 1;
    }
}

/* Starts the load; it runs while loop_until is called. */
static slot *
load_start(load *L, int inflight, double warmup, double seconds)
{
    slot *slots = calloc((size_t)inflight, sizeof(*slots));
    if (slots == NULL)
        die("out of memory");
    L->t0 = mono_ns();
    L->rec_from = L->t0 + (int64_t)(warmup * 1e9);
    L->rec_to = L->limit ? INT64_MAX : L->rec_from + (int64_t)(seconds * 1e9);
    L->active = inflight;
    for (int i = 0; i < inflight; i++) {
        slots[i].L = L;
        slots[i].ch = i % L->channels;
        slot_start(&slots[i]);
    }
    return slots;
}

static void
unique_prefix(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s-%ld-%" PRId64 "-", what, (long)getpid(), real_ns() / 1000 % 1000000000);
}

static int
cmd_unary(const char *target, const char *method, int inflight, double seconds, double warmup,
          const char *store, int channels)
{
    load L;
    memset(&L, 0, sizeof(L));
    L.method = strcmp(method, "add") == 0 ? M_ADD : M_GET;
    L.kind = JOB_FAR_DATE;
    L.store = store;
    L.channels = channels;
    unique_prefix(L.prefix, sizeof(L.prefix), "bench");
    open_channels(target, channels);
    slot *slots = load_start(&L, inflight, warmup, seconds);
    loop_until(&L.all_done, 0);
    double window = (double)(L.rec_to - L.rec_from) / 1e9;
    double p50 = pct_us(&L.lat, 0.5), p99 = pct_us(&L.lat, 0.99), mx = pct_us(&L.lat, 1.0);
    printf("unary method=%s inflight=%d channels=%d store=%s calls=%" PRIu64 " errors=%" PRIu64
           " seconds=%.2f rps=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f\n",
           L.method == M_ADD ? "AddJob" : "GetScheduler", inflight, channels,
           L.method == M_ADD ? store : "-", L.in_window, L.errors, window,
           (double)L.in_window / window, p50, p99, mx);
    free(slots);
    free(L.lat.v);
    return L.errors ? 1 : 0;
}

static int
cmd_repeat(const char *target, uint64_t count)
{
    load L;
    memset(&L, 0, sizeof(L));
    L.method = M_GET;
    L.channels = 1;
    L.limit = count;
    open_channels(target, 1);
    slot *slots = load_start(&L, 1, 0, 0);
    loop_until(&L.all_done, 0);
    printf("repeat method=GetScheduler calls=%" PRIu64 " errors=%" PRIu64
           " p50_us=%.0f p99_us=%.0f max_us=%.0f\n",
           L.ok, L.errors, pct_us(&L.lat, 0.5), pct_us(&L.lat, 0.99), pct_us(&L.lat, 1.0));
    free(slots);
    free(L.lat.v);
    return L.errors ? 1 : 0;
}

static int
cmd_fill(const char *target, uint64_t jobs, int inflight, const char *store, int channels)
{
    load L;
    memset(&L, 0, sizeof(L));
    L.method = M_ADD;
    L.kind = JOB_HOURLY;
    L.store = store;
    L.channels = channels;
    L.limit = jobs;
    snprintf(L.prefix, sizeof(L.prefix), "job-");
    /* The hour after the next: nothing fires while the benchmark runs. */
    L.job_base_us = real_ns() / 1000 + INT64_C(3600000000);
    open_channels(target, channels);
    if (inflight > (int)jobs)
        inflight = (int)jobs;
    slot *slots = load_start(&L, inflight, 0, 0);
    loop_until(&L.all_done, 0);
    double el = (double)(L.last_done_ns - L.t0) / 1e9;
    printf("fill jobs=%" PRIu64 " ok=%" PRIu64 " errors=%" PRIu64 " inflight=%d seconds=%.2f "
           "per_s=%.0f p50_us=%.0f p99_us=%.0f\n",
           jobs, L.ok, L.errors, inflight, el, (double)L.ok / el, pct_us(&L.lat, 0.5),
           pct_us(&L.lat, 0.99));
    free(slots);
    free(L.lat.v);
    return L.errors ? 1 : 0;
}

/* ---- SubscribeEvents streams ------------------------------------------------------- */

typedef struct sub sub;
typedef struct stag {
    tag t;
    sub *s;
} stag;

typedef struct ev_bench {
    samples lat; /* live: receipt - event time */
    int record;  /* live phase: record latencies */
} ev_bench;

struct sub {
    stag t_start, t_recv, t_status;
    ev_bench *B;
    grpc_call *call;
    grpc_metadata_array md_init, md_trail;
    grpc_byte_buffer *req, *msg;
    grpc_status_code status;
    grpc_slice details;
    int pending; /* batches not completed yet */
    int caught_up, ended;
    uint64_t count, want;
    int64_t last_ns, done_ns;
};

static void sub_recv(sub *s);

static void
sub_start_done(tag *t, int ok)
{
    sub *s = ((stag *)t)->s;
    (void)ok;
    s->pending--;
}

static void
sub_status_done(tag *t, int ok)
{
    sub *s = ((stag *)t)->s;
    (void)ok;
    s->pending--;
    s->ended = 1;
}

static void
sub_recv_done(tag *t, int ok)
{
    sub *s = ((stag *)t)->s;
    int64_t now_real = real_ns();
    s->pending--;
    if (!ok || s->msg == NULL)
        return; /* the stream is over: its status follows */
    Apsd__V1__SubscribeEventsResponse *r = (Apsd__V1__SubscribeEventsResponse *)unpack(
        &apsd__v1__subscribe_events_response__descriptor, s->msg);
    grpc_byte_buffer_destroy(s->msg);
    s->msg = NULL;
    if (r != NULL) {
        if (r->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT) {
            s->count++;
            s->last_ns = mono_ns();
            if (s->want && s->count == s->want)
                s->done_ns = s->last_ns;
            if (s->B->record && r->event->time != NULL)
                samples_add(&s->B->lat, now_real - (r->event->time->seconds * NS +
                                                    r->event->time->nanos));
        } else if (r->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_BOOKMARK &&
                   r->bookmark->caught_up) {
            s->caught_up = 1;
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    sub_recv(s);
}

static void
sub_recv(sub *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->msg;
    s->pending++;
    if (grpc_call_start_batch(s->call, &op, 1, &s->t_recv.t, NULL) != GRPC_CALL_OK)
        die("start_batch (recv)");
}

/* Opens a JOB_ADDED stream after `after` on channel ch. */
static void
sub_open(sub *s, ev_bench *B, int ch, uint64_t after, int bookmarks)
{
    Apsd__V1__EventType types[] = {APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_ADDED};
    Apsd__V1__SubscribeEventsRequest req = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    grpc_op ops[4];

    memset(s, 0, sizeof(*s));
    s->B = B;
    s->t_start = (stag){{sub_start_done}, s};
    s->t_recv = (stag){{sub_recv_done}, s};
    s->t_status = (stag){{sub_status_done}, s};
    req.n_types = 1;
    req.types = types;
    req.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    req.after_sequence = after;
    req.send_bookmarks = bookmarks;
    s->req = pack(&req.base);
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->md_init);
    grpc_metadata_array_init(&s->md_trail);
    s->call = grpc_channel_create_registered_call(chans[ch].ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                                  chans[ch].method[M_SUB], deadline_in(600), NULL);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
    s->pending++;
    if (grpc_call_start_batch(s->call, ops, 4, &s->t_start.t, NULL) != GRPC_CALL_OK)
        die("start_batch (subscribe)");
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->md_trail;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    s->pending++;
    if (grpc_call_start_batch(s->call, ops, 1, &s->t_status.t, NULL) != GRPC_CALL_OK)
        die("start_batch (status)");
    sub_recv(s);
}

/* Cancels the streams still open and waits for every batch to complete;
 * returns how many ended on their own with RESOURCE_EXHAUSTED (cut as too
 * slow) or another error before being cancelled. */
static int
subs_close(sub *subs, int k, int *cut)
{
    int others = 0;
    *cut = 0;
    for (int i = 0; i < k; i++) {
        if (subs[i].ended) {
            if (subs[i].status == GRPC_STATUS_RESOURCE_EXHAUSTED)
                (*cut)++;
            else
                others++;
        } else {
            grpc_call_cancel(subs[i].call, NULL);
        }
    }
    int64_t deadline = mono_ns() + 10 * NS;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < k; i++)
            busy += subs[i].pending;
        if (busy == 0)
            break;
        int never = 0;
        if (mono_ns() > deadline)
            die("streams did not close within 10 s");
        loop_until(&never, mono_ns() + 20 * 1000000);
    }
    for (int i = 0; i < k; i++) {
        grpc_byte_buffer_destroy(subs[i].req);
        grpc_byte_buffer_destroy(subs[i].msg);
        grpc_metadata_array_destroy(&subs[i].md_init);
        grpc_metadata_array_destroy(&subs[i].md_trail);
        grpc_slice_unref(subs[i].details);
        grpc_call_unref(subs[i].call);
    }
    return others;
}

static uint64_t
last_sequence(void)
{
    Apsd__V1__GetSchedulerRequest req = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = (Apsd__V1__SchedulerInfo *)call_sync(
        0, M_GET, &req.base, &apsd__v1__scheduler_info__descriptor, 1, NULL);
    if (info == NULL)
        die("GetScheduler failed");
    uint64_t seq = info->event_log ? info->event_log->last_sequence : 0;
    protobuf_c_message_free_unpacked(&info->base, NULL);
    return seq;
}

/* Repeats loop_until in short steps until cond(subs) holds or the deadline. */
static int
subs_wait(sub *subs, int k, int (*cond)(const sub *s), int64_t deadline)
{
    for (;;) {
        int n = 0;
        for (int i = 0; i < k; i++)
            n += cond(&subs[i]);
        if (n == k)
            return 1;
        if (mono_ns() > deadline)
            return 0;
        int never = 0;
        loop_until(&never, mono_ns() + 5 * 1000000);
    }
}

static int
is_live(const sub *s)
{
    return s->caught_up || s->ended;
}

static int
has_all(const sub *s)
{
    return s->count >= s->want || s->ended;
}

static int
cmd_events(const char *target, int k, double seconds, int inflight)
{
    ev_bench B;
    int rc = 0, cut = 0, failed;
    memset(&B, 0, sizeof(B));
    /* Channel 0: the producer; 1..k: one connection per stream. */
    open_channels(target, k + 1);
    uint64_t seq0 = last_sequence();

    /* -- live -- */
    sub *subs = calloc((size_t)k, sizeof(*subs));
    for (int i = 0; i < k; i++)
        sub_open(&subs[i], &B, 1 + i, seq0, 1);
    if (!subs_wait(subs, k, is_live, mono_ns() + 15 * NS))
        die("the streams did not catch up within 15 s");
    load L;
    memset(&L, 0, sizeof(L));
    L.method = M_ADD;
    L.kind = JOB_FAR_DATE;
    L.store = "memory";
    L.channels = 1;
    L.limit = 0;
    unique_prefix(L.prefix, sizeof(L.prefix), "ev");
    B.record = 1;
    slot *slots = load_start(&L, inflight, 0, seconds);
    /* Bounded: the replay phase needs every event still in the log. */
    while (!L.all_done) {
        int never = 0;
        loop_until(&never, mono_ns() + 5 * 1000000);
        if (L.next_id >= MAX_EVENTS)
            L.stopped = 1;
    }
    uint64_t n = L.ok;
    double produce_s = (double)(L.last_done_ns - L.t0) / 1e9;
    for (int i = 0; i < k; i++)
        subs[i].want = n;
    int all = subs_wait(subs, k, has_all, L.last_done_ns + 20 * NS);
    uint64_t delivered = 0;
    int64_t last = L.t0;
    for (int i = 0; i < k; i++) {
        delivered += subs[i].count < n ? subs[i].count : n;
        if (subs[i].last_ns > last)
            last = subs[i].last_ns;
    }
    B.record = 0;
    failed = subs_close(subs, k, &cut);
    double deliver_s = (double)(last - L.t0) / 1e9;
    printf("events phase=live subscribers=%d produced=%" PRIu64 " produce_errors=%" PRIu64
           " produce_s=%.2f produced_per_s=%.0f delivered=%" PRIu64 " expected=%" PRIu64
           " deliver_s=%.2f delivered_per_s=%.0f lag_ms=%.1f lat_p50_us=%.0f lat_p99_us=%.0f"
           " lat_max_us=%.0f cut=%d failed=%d complete=%d\n",
           k, n, L.errors, produce_s, (double)n / produce_s, delivered, n * (uint64_t)k,
           deliver_s, (double)delivered / deliver_s, (double)(last - L.last_done_ns) / 1e6,
           pct_us(&B.lat, 0.5), pct_us(&B.lat, 0.99), pct_us(&B.lat, 1.0), cut, failed, all);
    fflush(stdout);
    if (L.errors || cut || failed || !all)
        rc = 1;
    free(slots);

    /* -- replay: the same n events, read back from the log by k new streams -- */
    int64_t t0 = mono_ns();
    for (int i = 0; i < k; i++) {
        sub_open(&subs[i], &B, 1 + i, seq0, 0);
        subs[i].want = n;
    }
    all = subs_wait(subs, k, has_all, t0 + 60 * NS);
    delivered = 0;
    last = t0;
    for (int i = 0; i < k; i++) {
        delivered += subs[i].count < n ? subs[i].count : n;
        int64_t d = subs[i].done_ns ? subs[i].done_ns : subs[i].last_ns;
        if (d > last)
            last = d;
    }
    failed = subs_close(subs, k, &cut);
    double replay_s = (double)(last - t0) / 1e9;
    printf("events phase=replay subscribers=%d events=%" PRIu64 " delivered=%" PRIu64
           " expected=%" PRIu64 " seconds=%.2f delivered_per_s=%.0f cut=%d failed=%d complete=%d\n",
           k, n, delivered, n * (uint64_t)k, replay_s, (double)delivered / replay_s, cut, failed,
           all);
    if (cut || failed || !all)
        rc = 1;
    free(subs);
    free(B.lat.v);
    free(L.lat.v);
    return rc;
}

/* ---- ListJobs, first-fire job, readiness ----------------------------------------- */

static int
cmd_list(const char *target, int pages, int page_size)
{
    samples lat = {0};
    char *token = strdup("");
    uint64_t jobs = 0;
    int64_t first = 0;
    int rc = 0, i;
    open_channels(target, 1);
    for (i = 0; i < pages; i++) {
        Apsd__V1__ListJobsRequest req = APSD__V1__LIST_JOBS_REQUEST__INIT;
        int64_t ns = 0;
        req.page_size = page_size;
        req.page_token = token;
        Apsd__V1__ListJobsResponse *r = (Apsd__V1__ListJobsResponse *)call_sync(
            0, M_LIST, &req.base, &apsd__v1__list_jobs_response__descriptor, 1, &ns);
        if (r == NULL) {
            rc = 1;
            break;
        }
        if (i == 0)
            first = ns;
        samples_add(&lat, ns);
        jobs += r->n_jobs;
        free(token);
        token = strdup(r->next_page_token);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (token[0] == '\0') {
            i++;
            break;
        }
    }
    printf("list page_size=%d pages=%d jobs=%" PRIu64 " first_ms=%.2f p50_ms=%.2f p99_ms=%.2f "
           "max_ms=%.2f\n",
           page_size, i, jobs, (double)first / 1e6, pct_us(&lat, 0.5) / 1e3,
           pct_us(&lat, 0.99) / 1e3, pct_us(&lat, 1.0) / 1e3);
    free(token);
    free(lat.v);
    return rc;
}

static int
cmd_firstfire(const char *target, const char *file, long delay_ms)
{
    char script[1024];
    char *argv[] = {"/bin/sh", "-c", script};
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Apsd__V1__DateTrigger date = APSD__V1__DATE_TRIGGER__INIT;
    Apsd__V1__Trigger trig = APSD__V1__TRIGGER__INIT;
    Apsd__V1__CommandTarget cmd = APSD__V1__COMMAND_TARGET__INIT;
    Apsd__V1__Target tgt = APSD__V1__TARGET__INIT;
    Apsd__V1__MisfireGraceTime grace = APSD__V1__MISFIRE_GRACE_TIME__INIT;
    Apsd__V1__Job job = APSD__V1__JOB__INIT;
    Apsd__V1__AddJobRequest req = APSD__V1__ADD_JOB_REQUEST__INIT;

    snprintf(script, sizeof(script), "exec /bin/date +%%s%%N > '%s'", file);
    int64_t at = real_ns() + (int64_t)delay_ms * 1000000;
    ts.seconds = at / NS;
    ts.nanos = (int32_t)(at % NS);
    date.run_date = &ts;
    trig.kind_case = APSD__V1__TRIGGER__KIND_DATE;
    trig.date = &date;
    cmd.n_argv = 3;
    cmd.argv = argv;
    tgt.kind_case = APSD__V1__TARGET__KIND_COMMAND;
    tgt.command = &cmd;
    grace.limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED;
    grace.unlimited = 1;
    job.id = "first-fire";
    job.trigger = &trig;
    job.target = &tgt;
    job.misfire_grace_time = &grace;
    req.job = &job;
    req.replace_existing = 1;
    open_channels(target, 1);
    ProtobufCMessage *r = call_sync(0, M_ADD, &req.base, &apsd__v1__job__descriptor, 1, NULL);
    if (r == NULL)
        return 1;
    protobuf_c_message_free_unpacked(r, NULL);
    printf("firstfire at_ns=%" PRId64 "\n", at);
    return 0;
}

static int
cmd_wait(const char *target, double seconds)
{
    int64_t t0 = mono_ns(), deadline = t0 + (int64_t)(seconds * 1e9);
    while (mono_ns() < deadline) {
        /* A fresh channel per attempt: after a refused connection a channel
         * waits out its reconnect backoff (seconds, whatever the arguments
         * say), which would be measured as start-up time. */
        if (n_chans > 0) {
            grpc_channel_destroy(chans[0].ch);
            n_chans = 0;
        }
        open_channels(target, 1);
        /* ListJobs of one job: the engine answers, at a cost that does not
         * grow with the store (GetScheduler's does: it counts the jobs). */
        Apsd__V1__ListJobsRequest req = APSD__V1__LIST_JOBS_REQUEST__INIT;
        sync_call s;
        req.page_size = 1;
        memset(&s, 0, sizeof(s));
        s.u.on_done = sync_done;
        /* Not wait-for-ready: a refused connection fails at once; retry. */
        ucall_start(&s.u, 0, M_LIST, pack(&req.base), 0);
        loop_until(&s.done, 0);
        grpc_byte_buffer_destroy(s.u.resp);
        ucall_release(&s.u);
        if (s.ok) {
            printf("ready ms=%.1f\n", (double)(mono_ns() - t0) / 1e6);
            return 0;
        }
        usleep(5000);
    }
    fprintf(stderr, "bench_service: %s did not answer within %.0f s\n", target, seconds);
    return 1;
}

/* ---- main ---------------------------------------------------------------------------- */

static void
usage(void)
{
    fprintf(stderr,
            "usage: bench_service unary TARGET get|add INFLIGHT SECONDS [WARMUP [STORE [CHANNELS]]]\n"
            "       bench_service fill TARGET JOBS INFLIGHT [STORE [CHANNELS]]\n"
            "       bench_service events TARGET SUBSCRIBERS SECONDS [INFLIGHT]\n"
            "       bench_service list TARGET PAGES PAGE_SIZE\n"
            "       bench_service firstfire TARGET FILE DELAY_MS\n"
            "       bench_service repeat TARGET get COUNT\n"
            "       bench_service wait TARGET SECONDS\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    int rc = 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4)
        usage();
    const char *cmd = argv[1], *target = argv[2];
    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);
    if (strcmp(cmd, "unary") == 0 && argc >= 6)
        rc = cmd_unary(target, argv[3], atoi(argv[4]), atof(argv[5]),
                       argc > 6 ? atof(argv[6]) : 0.5, argc > 7 ? argv[7] : "default",
                       argc > 8 ? atoi(argv[8]) : 1);
    else if (strcmp(cmd, "fill") == 0 && argc >= 5)
        rc = cmd_fill(target, strtoull(argv[3], NULL, 10), atoi(argv[4]),
                      argc > 5 ? argv[5] : "default", argc > 6 ? atoi(argv[6]) : 1);
    else if (strcmp(cmd, "events") == 0 && argc >= 5)
        rc = cmd_events(target, atoi(argv[3]), atof(argv[4]), argc > 5 ? atoi(argv[5]) : 64);
    else if (strcmp(cmd, "list") == 0 && argc >= 5)
        rc = cmd_list(target, atoi(argv[3]), atoi(argv[4]));
    else if (strcmp(cmd, "firstfire") == 0 && argc >= 5)
        rc = cmd_firstfire(target, argv[3], atol(argv[4]));
    else if (strcmp(cmd, "repeat") == 0 && argc >= 5 && strcmp(argv[3], "get") == 0)
        rc = cmd_repeat(target, strtoull(argv[4], NULL, 10));
    else if (strcmp(cmd, "wait") == 0)
        rc = cmd_wait(target, atof(argv[3]));
    else
        usage();
    for (int i = 0; i < n_chans; i++)
        grpc_channel_destroy(chans[i].ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    return rc;
}
