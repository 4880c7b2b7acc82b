/* The gRPC C core server framework: see server.h and ../shared/notes/grpc-core.md. */
#include "service/server.h"

#include <dlfcn.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "service/log.h"

#define MAX_DECODE_DEPTH 100
/* Longest `authorization` value read: above `Bearer ` + the longest token
 * (APS_AUTH_MAX_TOKEN, 1024) with room for extra spaces. */
#define AUTHZ_MAX 2048

/* A completion-queue tag: a struct whose first member is the function to run
 * on completion (the shape of core's grpc_completion_queue_functor). */
typedef struct aps_tag aps_tag;
struct aps_tag {
    void (*done)(aps_tag *t, int ok);
};

typedef struct call_tag {
    aps_tag base;
    aps_call *c;
} call_tag;

typedef struct out_msg {
    struct out_msg *next;
    grpc_byte_buffer *bb;
} out_msg;

/* One pre-posted request. */
typedef struct req_slot {
    aps_tag tag;
    aps_server *srv;
    int mi; /* method index, -1 = the generic catch-all */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} req_slot;

struct aps_call {
    aps_server *srv;
    const aps_method *m; /* NULL: an unknown method */
    grpc_call *call;
    grpc_metadata_array md;
    aps_arena *arena;
    const uint8_t *req;
    size_t req_len;
    char path[256];

    pthread_mutex_t mu;
    int refs;  /* owner + one per pending batch */
    int owner; /* 1 while the handler/owner holds its reference */
    int md_sent, status_sent, finish_pending, broken;
    atomic_int cancelled;
    int closed;
    int close_cancelled; /* RECV_CLOSE_ON_SERVER's output */
    int held;            /* in the server's held list (srv->mu) */
    aps_call *held_next, *held_prev;

    out_msg *q_head, *q_tail;
    size_t q_len;
    int write_in_flight;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *status_bb;
    grpc_status_code fin_code;
    char *fin_msg;
    grpc_slice status_slice;
    int has_status_slice;
    grpc_byte_buffer *recv_bb;

    void (*watch)(void *arg);
    void *watch_arg;
    void (*read_fn)(aps_call *c, const uint8_t *data, size_t len, int ok, void *arg);
    void *read_arg;
    void (*free_fn)(void *arg);
    void *free_arg;

    call_tag t_close, t_send, t_status, t_recv;
};

typedef struct pool {
    pthread_t *th;
    int n;
    aps_call **q;
    size_t cap, head, len;
    int busy;
    int stop;
    pthread_mutex_t mu;
    /* One token per queued call (and one per thread at stop): a thread
     * sleeps on it. A semaphore wakes exactly one thread per call, where a
     * condition variable would need broadcasts (glibc 2.36 loses
     * pthread_cond_signal wake-ups: sourceware bug 25847). */
    sem_t work;
    pthread_cond_t idle_cv;
} pool;

typedef struct reg_method {
    const aps_method *m;
    void *handle;
} reg_method;

struct aps_server {
    aps_server_config cfg;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *cq_th;
    int n_cq_th;
    reg_method *reg;
    size_t n_reg;
    pool pool;
    atomic_int shutting_down;
    atomic_long live_calls; /* accepted calls not yet freed */
    int started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    aps_call *held;
    size_t n_held, max_held; /* in `held`; the most aps_call_hold takes */
    int shutdown_done;
    int shutdown_posted;
    aps_tag shutdown_tag;
};

static void call_unref(aps_call *c);
static void post_slot(req_slot *slot);

/* ---- helpers ---------------------------------------------------------------- */

static gpr_timespec
inf_future(void)
{
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
}

static grpc_byte_buffer *
bb_from(const uint8_t *data, size_t len)
{
    grpc_slice s = grpc_slice_malloc(len);
    if (len)
        memcpy(GRPC_SLICE_START_PTR(s), data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static grpc_byte_buffer *
bb_pack(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Reads a byte buffer into the arena (or malloc when a == NULL). */
static uint8_t *
bb_read(grpc_byte_buffer *bb, aps_arena *a, size_t *len)
{
    grpc_byte_buffer_reader r;
    uint8_t *out;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    out = a ? aps_arena_alloc(a, *len + 1) : malloc(*len + 1);
    if (out != NULL)
        memcpy(out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return out;
}

/* ---- the pool ------------------------------------------------------------------ */

static void *
pool_main(void *arg)
{
    aps_server *s = arg;
    pool *p = &s->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        pthread_mutex_unlock(&p->mu);
        while (sem_wait(&p->work) != 0)
            ; /* EINTR */
        pthread_mutex_lock(&p->mu);
        if (p->len == 0) {
            if (p->stop)
                break;
            continue;
        }
        aps_call *c = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        if (atomic_load(&c->cancelled))
            aps_call_fail(c, GRPC_STATUS_CANCELLED, "cancelled before it ran");
        else
            c->m->handler(c, c->m->input ? (const ProtobufCMessage *)c->req : NULL, c->m->app);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        if (p->len == 0 && p->busy == 0)
            pthread_cond_broadcast(&p->idle_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int
pool_push(aps_server *s, aps_call *c)
{
    pool *p = &s->pool;
    pthread_mutex_lock(&p->mu);
    if (p->len == p->cap || p->stop) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    p->q[(p->head + p->len) % p->cap] = c;
    p->len++;
    pthread_mutex_unlock(&p->mu);
    sem_post(&p->work);
    return 0;
}

/* ---- call context ---------------------------------------------------------------- */

static void
drop_queue_locked(aps_call *c)
{
    while (c->q_head != NULL) {
        out_msg *om = c->q_head;
        c->q_head = om->next;
        grpc_byte_buffer_destroy(om->bb);
        free(om);
    }
    c->q_tail = NULL;
    c->q_len = 0;
}

static void
call_free(aps_call *c)
{
    if (c->free_fn != NULL)
        c->free_fn(c->free_arg);
    drop_queue_locked(c);
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    if (c->status_bb)
        grpc_byte_buffer_destroy(c->status_bb);
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    if (c->has_status_slice)
        grpc_slice_unref(c->status_slice);
    free(c->fin_msg);
    grpc_metadata_array_destroy(&c->md);
    if (c->call)
        grpc_call_unref(c->call);
    aps_arena_free(c->arena);
    pthread_mutex_destroy(&c->mu);
    atomic_fetch_sub(&c->srv->live_calls, 1);
    free(c);
}

static void
call_unref(aps_call *c)
{
    pthread_mutex_lock(&c->mu);
    int r = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (r == 0)
        call_free(c);
}

/* Gives up the owner reference (once). */
static void
owner_release(aps_call *c)
{
    pthread_mutex_lock(&c->mu);
    int was = c->owner;
    c->owner = 0;
    pthread_mutex_unlock(&c->mu);
    if (was)
        call_unref(c);
}

static void
on_status_done(aps_tag *t, int ok)
{
    aps_call *c = ((call_tag *)t)->c;
    (void)ok;
    pthread_mutex_lock(&c->mu);
    if (c->status_bb) {
        grpc_byte_buffer_destroy(c->status_bb);
        c->status_bb = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

/* Starts the final batch: [initial metadata] [message] status. c->mu held. */
static void
start_status_locked(aps_call *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb)
{
    grpc_op ops[3];
    size_t n = 0;
    if (c->status_sent) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return;
    }
    c->status_sent = 1;
    c->finish_pending = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    if (bb != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        c->status_bb = bb;
        n++;
    }
    c->status_slice = grpc_slice_from_copied_string(msg ? msg : "");
    c->has_status_slice = 1;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details =
        code == GRPC_STATUS_OK && (!msg || !*msg) ? NULL : &c->status_slice;
    n++;
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_status, NULL);
    if (e != GRPC_CALL_OK) {
        aps_log(APS_LOG_ERROR, "start_batch(status) failed", "path=%s err=%s", c->path,
                grpc_call_error_to_string(e));
        c->refs--;
        if (c->status_bb) {
            grpc_byte_buffer_destroy(c->status_bb);
            c->status_bb = NULL;
        }
    }
}

static void start_write_locked(aps_call *c);

static void
on_send_done(aps_tag *t, int ok)
{
    aps_call *c = ((call_tag *)t)->c;
    pthread_mutex_lock(&c->mu);
    if (c->send_bb) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
    c->write_in_flight = 0;
    if (!ok) {
        c->broken = 1;
        drop_queue_locked(c);
    }
    if (!c->broken && c->q_head != NULL)
        start_write_locked(c);
    else if (c->finish_pending)
        start_status_locked(c, c->fin_code, c->fin_msg, NULL);
    if (c->watch)
        c->watch(c->watch_arg);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void
start_write_locked(aps_call *c)
{
    grpc_op ops[2];
    size_t n = 0;
    out_msg *om = c->q_head;
    c->q_head = om->next;
    if (c->q_head == NULL)
        c->q_tail = NULL;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = om->bb;
    n++;
    c->send_bb = om->bb;
    free(om);
    c->q_len--;
    c->write_in_flight = 1;
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL);
    if (e != GRPC_CALL_OK) {
        aps_log(APS_LOG_ERROR, "start_batch(write) failed", "path=%s err=%s", c->path,
                grpc_call_error_to_string(e));
        c->refs--;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        c->write_in_flight = 0;
        c->broken = 1;
        drop_queue_locked(c);
    }
}

static void
on_close_done(aps_tag *t, int ok)
{
    aps_call *c = ((call_tag *)t)->c;
    aps_server *s = c->srv;
    int release = 0;

    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    if (c->close_cancelled || !ok)
        atomic_store(&c->cancelled, 1);
    if (c->watch)
        c->watch(c->watch_arg);
    pthread_mutex_unlock(&c->mu);

    pthread_mutex_lock(&s->mu);
    if (c->held) {
        c->held = 0;
        s->n_held--;
        if (c->held_prev)
            c->held_prev->held_next = c->held_next;
        else
            s->held = c->held_next;
        if (c->held_next)
            c->held_next->held_prev = c->held_prev;
        release = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (release) {
        /* The held call ends here: its status batch fails harmlessly. */
        pthread_mutex_lock(&c->mu);
        start_status_locked(c, GRPC_STATUS_CANCELLED, "client went away", NULL);
        pthread_mutex_unlock(&c->mu);
        owner_release(c);
    }
    call_unref(c);
}

static void
on_recv_done(aps_tag *t, int ok)
{
    aps_call *c = ((call_tag *)t)->c;
    uint8_t *data = NULL;
    size_t len = 0;
    int good = ok;

    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    void (*fn)(aps_call *, const uint8_t *, size_t, int, void *) = c->read_fn;
    void *arg = c->read_arg;
    pthread_mutex_unlock(&c->mu);
    if (bb != NULL) {
        data = bb_read(bb, NULL, &len);
        if (data == NULL)
            good = 0;
        grpc_byte_buffer_destroy(bb);
    }
    if (fn)
        fn(c, data, len, good, arg);
    free(data);
    call_unref(c);
}

static aps_call *
call_new(aps_server *s, const aps_method *m, req_slot *slot)
{
    aps_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->arena = aps_arena_new(s->cfg.call_arena_limit);
    if (c->arena == NULL) {
        free(c);
        return NULL;
    }
    c->srv = s;
    c->m = m;
    c->call = slot->call;
    c->md = slot->md; /* moved: the slot re-initialises its own */
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 1;
    c->owner = 1;
    c->t_close = (call_tag){{on_close_done}, c};
    c->t_send = (call_tag){{on_send_done}, c};
    c->t_status = (call_tag){{on_status_done}, c};
    c->t_recv = (call_tag){{on_recv_done}, c};
    if (m != NULL) {
        snprintf(c->path, sizeof c->path, "%s", m->path);
    } else {
        size_t n = GRPC_SLICE_LENGTH(slot->details.method);
        if (n >= sizeof c->path)
            n = sizeof c->path - 1;
        memcpy(c->path, GRPC_SLICE_START_PTR(slot->details.method), n);
        c->path[n] = '\0';
    }
    atomic_fetch_add(&s->live_calls, 1);
    return c;
}

/* Starts the cancellation watch. 0 or -1. */
static int
start_close_watch(aps_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL);
    if (e != GRPC_CALL_OK) {
        c->refs--;
        pthread_mutex_unlock(&c->mu);
        aps_log(APS_LOG_ERROR, "start_batch(recv_close) failed", "path=%s err=%s", c->path,
                grpc_call_error_to_string(e));
        return -1;
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static const char *
find_authorization(aps_call *c, char *buf, size_t len)
{
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *md = &c->md.metadata[i];
        if (grpc_slice_str_cmp(md->key, "authorization") == 0) {
            size_t n = GRPC_SLICE_LENGTH(md->value);
            /* Too long to hold a token: refused whole. Cut short, its
             * prefix could be a valid token and pass. */
            if (n >= len)
                return "";
            memcpy(buf, GRPC_SLICE_START_PTR(md->value), n);
            buf[n] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* A new call of a registered method (CQ thread). */
static void
start_call(aps_server *s, const aps_method *m, aps_call *c, grpc_byte_buffer *payload)
{
    if (start_close_watch(c) != 0) {
        if (payload)
            grpc_byte_buffer_destroy(payload);
        owner_release(c);
        return;
    }
    if (m == NULL) {
        aps_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", c->path);
        return;
    }
    if (atomic_load(&s->shutting_down)) {
        if (payload)
            grpc_byte_buffer_destroy(payload);
        aps_call_fail(c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    if (s->cfg.authorize != NULL) {
        char buf[AUTHZ_MAX];
        int code =
            s->cfg.authorize(s->cfg.authorize_ud, find_authorization(c, buf, sizeof buf), m->write);
        if (code != 0) {
            if (payload)
                grpc_byte_buffer_destroy(payload);
            aps_call_fail(c, (grpc_status_code)code,
                          code == GRPC_STATUS_PERMISSION_DENIED
                              ? "%s: the token lacks the write role"
                              : "%s: a valid bearer token is required",
                          c->path);
            return;
        }
    }
    if (m->kind == APS_RPC_BIDI) {
        m->handler(c, NULL, m->app);
        return;
    }
    if (payload == NULL) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: missing request message", c->path);
        return;
    }
    size_t len = 0;
    uint8_t *bytes = bb_read(payload, c->arena, &len);
    grpc_byte_buffer_destroy(payload);
    if (bytes == NULL) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: cannot read the request", c->path);
        return;
    }
    c->req_len = len;
    if (m->input != NULL) {
        c->req = (const uint8_t *)aps_pb_unpack(c->arena, m->input, bytes, len, MAX_DECODE_DEPTH);
        if (c->req == NULL) {
            aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                          "%s: the request is not a valid %s message (or nested too deeply)",
                          c->path, m->input->name);
            return;
        }
        char why[192];
        if (aps_pb_check_request(m->input, bytes, len, why, sizeof why) != 0) {
            aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
            return;
        }
    } else {
        c->req = bytes;
    }
    if (m->run_on == APS_RUN_CQ) {
        m->handler(c, m->input ? (const ProtobufCMessage *)c->req : NULL, m->app);
        return;
    }
    if (pool_push(s, c) != 0)
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "%s: the server is busy (%zu requests queued), retry later", c->path,
                      s->pool.cap);
}

static void
on_new_call(aps_tag *t, int ok)
{
    req_slot *slot = (req_slot *)t;
    aps_server *s = slot->srv;

    if (!ok) {
        /* Shutdown: pending requests come back unmatched (not an error). */
        grpc_metadata_array_destroy(&slot->md);
        grpc_call_details_destroy(&slot->details);
        if (slot->payload)
            grpc_byte_buffer_destroy(slot->payload);
        free(slot);
        return;
    }
    const aps_method *m = slot->mi >= 0 ? s->reg[slot->mi].m : NULL;
    grpc_byte_buffer *payload = slot->payload;
    aps_call *c = call_new(s, m, slot);
    grpc_call *raw = slot->call;
    /* Re-post before handling (the C++ server's "prepare for the next request"). */
    grpc_call_details_destroy(&slot->details);
    grpc_call_details_init(&slot->details);
    grpc_metadata_array_init(&slot->md);
    slot->payload = NULL;
    slot->call = NULL;
    post_slot(slot);
    if (c == NULL) {
        aps_log(APS_LOG_ERROR, "out of memory for a call", NULL);
        grpc_call_cancel_with_status(raw, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        grpc_call_unref(raw);
        if (payload)
            grpc_byte_buffer_destroy(payload);
        return;
    }
    start_call(s, m, c, payload);
}

static void
post_slot(req_slot *slot)
{
    aps_server *s = slot->srv;
    grpc_call_error e;
    if (atomic_load(&s->shutting_down)) {
        grpc_metadata_array_destroy(&slot->md);
        grpc_call_details_destroy(&slot->details);
        free(slot);
        return;
    }
    if (slot->mi >= 0) {
        const reg_method *r = &s->reg[slot->mi];
        int payload = r->m->kind != APS_RPC_BIDI;
        e = grpc_server_request_registered_call(s->server, r->handle, &slot->call, &slot->deadline,
                                                &slot->md, payload ? &slot->payload : NULL, s->cq,
                                                s->cq, &slot->tag);
    } else {
        e = grpc_server_request_call(s->server, &slot->call, &slot->details, &slot->md, s->cq,
                                     s->cq, &slot->tag);
    }
    if (e != GRPC_CALL_OK) {
        if (!atomic_load(&s->shutting_down))
            aps_log(APS_LOG_ERROR, "request_call failed", "err=%s", grpc_call_error_to_string(e));
        grpc_metadata_array_destroy(&slot->md);
        grpc_call_details_destroy(&slot->details);
        free(slot);
    }
}

static int
new_slot(aps_server *s, int mi)
{
    req_slot *slot = calloc(1, sizeof(*slot));
    if (slot == NULL)
        return -1;
    slot->tag.done = on_new_call;
    slot->srv = s;
    slot->mi = mi;
    grpc_metadata_array_init(&slot->md);
    grpc_call_details_init(&slot->details);
    post_slot(slot);
    return 0;
}

/* ---- CQ threads ----------------------------------------------------------------- */

static void *
cq_main(void *arg)
{
    aps_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, inf_future(), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            aps_tag *t = ev.tag;
            t->done(t, ev.success);
        }
    }
    return NULL;
}

static void
on_shutdown_done(aps_tag *t, int ok)
{
    aps_server *s = (aps_server *)((char *)t - offsetof(aps_server, shutdown_tag));
    (void)ok;
    pthread_mutex_lock(&s->mu);
    s->shutdown_done = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- server lifecycle ------------------------------------------------------------ */

static int
is_unix(const char *addr)
{
    return strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0;
}

/* Debian builds abseil without NDEBUG, which leaves absl::Mutex's deadlock
 * detection on: a lock-order graph updated on every lock gRPC takes (4% of
 * the daemon's CPU under load). Release builds of abseil have it off; turn
 * it off the same way, through the C++ symbol when this abseil exports it
 * (absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore)). */
static void
absl_deadlock_detection_off(void)
{
    static const char *const names[] = {
        "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        if (sym != NULL) {
            void (*set_mode)(int);
            memcpy(&set_mode, &sym, sizeof set_mode);
            set_mode(0); /* kIgnore */
            return;
        }
    }
}

int
aps_server_create(const aps_server_config *cfg, const aps_method *methods, size_t n_methods,
                  aps_server **out, char *err, size_t errlen)
{
    absl_deadlock_detection_off();
    aps_server *s = calloc(1, sizeof(*s));
    grpc_server_credentials *tls = NULL;
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = *cfg;
    if (s->cfg.cq_threads <= 0)
        s->cfg.cq_threads = 1;
    /* Engine calls block on durable commits; the more of them in flight,
     * the more one group commit carries: threads are cheap next to fsync. */
    if (s->cfg.pool_threads <= 0)
        s->cfg.pool_threads = 64; /* concurrent adds share one group commit */
    if (s->cfg.pool_queue == 0)
        s->cfg.pool_queue = 1024;
    if (s->cfg.requests_per_method <= 0)
        s->cfg.requests_per_method = 16;
    if (s->cfg.max_message == 0)
        s->cfg.max_message = 4u << 20;
    if (s->cfg.call_arena_limit == 0)
        s->cfg.call_arena_limit = 64u << 20;
    s->max_held = s->cfg.max_held ? s->cfg.max_held : 1024;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->pool.mu, NULL);
    sem_init(&s->pool.work, 0, 0);
    pthread_cond_init(&s->pool.idle_cv, NULL);
    s->shutdown_tag.done = on_shutdown_done;

    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)s->cfg.max_message;
    /* A stale daemon on the same port must make bind fail, not share it. */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[1].value.integer = 0;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS;
    args[2].value.integer = 60 * 60 * 1000;
    grpc_channel_args cargs = {3, args};
    s->server = grpc_server_create(&cargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);

    s->reg = calloc(n_methods ? n_methods : 1, sizeof(*s->reg));
    if (s->reg == NULL)
        goto oom;
    for (size_t i = 0; i < n_methods; i++) {
        const aps_method *m = &methods[i];
        s->reg[i].m = m;
        s->reg[i].handle = grpc_server_register_method(
            s->server, m->path, NULL,
            m->kind == APS_RPC_BIDI ? GRPC_SRM_PAYLOAD_NONE
                                    : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
        if (s->reg[i].handle == NULL) {
            snprintf(err, errlen, "cannot register method %s (registered twice?)", m->path);
            goto fail;
        }
        s->n_reg++;
    }

    if (cfg->tls_cert_pem != NULL) {
        grpc_ssl_pem_key_cert_pair pair = {cfg->tls_key_pem, cfg->tls_cert_pem};
        tls = grpc_ssl_server_credentials_create_ex(
            cfg->tls_client_ca_pem, &pair, 1,
            cfg->tls_client_ca_pem ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        if (tls == NULL) {
            snprintf(err, errlen, "invalid TLS certificate or key");
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->n_listen; i++) {
        const char *addr = cfg->listen[i];
        /* A unix socket is local: plaintext even when TCP listeners use TLS. */
        grpc_server_credentials *cr =
            tls && !is_unix(addr) ? tls : grpc_insecure_server_credentials_create();
        int port = grpc_server_add_http2_port(s->server, addr, cr);
        if (cr != tls)
            grpc_server_credentials_release(cr);
        if (port == 0) {
            snprintf(err, errlen, "cannot listen on %s (address in use or invalid)", addr);
            goto fail;
        }
        aps_log(APS_LOG_INFO, "listening", "addr=%s port=%d tls=%s", addr, port,
                tls && !is_unix(addr) ? (cfg->tls_client_ca_pem ? "mtls" : "tls") : "off");
    }
    if (tls)
        grpc_server_credentials_release(tls);
    tls = NULL;

    s->pool.cap = s->cfg.pool_queue;
    s->pool.q = calloc(s->pool.cap, sizeof(*s->pool.q));
    s->pool.th = calloc((size_t)s->cfg.pool_threads, sizeof(pthread_t));
    s->cq_th = calloc((size_t)s->cfg.cq_threads, sizeof(pthread_t));
    if (s->pool.q == NULL || s->pool.th == NULL || s->cq_th == NULL)
        goto oom;
    *out = s;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (tls)
        grpc_server_credentials_release(tls);
    aps_server_destroy(s);
    return -1;
}

int
aps_server_start(aps_server *s)
{
    grpc_server_start(s->server);
    s->started = 1;
    for (int i = 0; i < s->cfg.cq_threads; i++) {
        if (pthread_create(&s->cq_th[i], NULL, cq_main, s) != 0)
            return -1;
        pthread_setname_np(s->cq_th[i], "apsd-cq");
        s->n_cq_th++;
    }
    for (int i = 0; i < s->cfg.pool_threads; i++) {
        if (pthread_create(&s->pool.th[i], NULL, pool_main, s) != 0)
            return -1;
        pthread_setname_np(s->pool.th[i], "apsd-pool");
        s->pool.n++;
    }
    for (size_t i = 0; i < s->n_reg; i++)
        for (int k = 0; k < s->cfg.requests_per_method; k++)
            if (new_slot(s, (int)i) != 0)
                return -1;
    for (int k = 0; k < s->cfg.requests_per_method; k++)
        if (new_slot(s, -1) != 0)
            return -1;
    return 0;
}

int
aps_server_shutting_down(aps_server *s)
{
    return atomic_load(&s->shutting_down);
}

void
aps_server_shutdown_begin(aps_server *s)
{
    if (atomic_exchange(&s->shutting_down, 1))
        return;
    if (s->started) {
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
        s->shutdown_posted = 1;
    }
}

static void
deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int
aps_server_drain_pool(aps_server *s, int64_t timeout_ms)
{
    struct timespec dl;
    int rc = 0;
    deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&s->pool.mu);
    while ((s->pool.len > 0 || s->pool.busy > 0) && rc == 0)
        if (pthread_cond_timedwait(&s->pool.idle_cv, &s->pool.mu, &dl) == ETIMEDOUT)
            rc = -1;
    pthread_mutex_unlock(&s->pool.mu);
    return rc;
}

void
aps_server_finish_held(aps_server *s)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        aps_call *c = s->held;
        if (c != NULL) {
            s->held = c->held_next;
            if (s->held)
                s->held->held_prev = NULL;
            c->held = 0;
            s->n_held--;
            c->held_next = c->held_prev = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        if (c == NULL)
            break;
        pthread_mutex_lock(&c->mu);
        start_status_locked(c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down", NULL);
        pthread_mutex_unlock(&c->mu);
        owner_release(c);
    }
}

static int
wait_shutdown_tag(aps_server *s, int64_t ms)
{
    struct timespec dl;
    int rc = 0;
    deadline_in(&dl, ms);
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done && rc == 0)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
            rc = -1;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int
aps_server_wait_calls(aps_server *s, int64_t grace_ms)
{
    if (!s->shutdown_posted)
        return 0;
    /* The shutdown also waits for connections to close: a client keeping an
     * idle channel open would hold it for the whole grace period. Once no
     * call is left, cancelling "all calls" cancels none and closes those
     * connections at once. */
    for (int64_t waited = 0; waited < grace_ms; waited += 20) {
        if (wait_shutdown_tag(s, 20) == 0)
            return 0;
        if (atomic_load(&s->live_calls) == 0) {
            grpc_server_cancel_all_calls(s->server);
            if (wait_shutdown_tag(s, grace_ms - waited) == 0)
                return 0;
            break;
        }
    }
    aps_log(APS_LOG_WARN, "calls still open after the grace period: cancelling them",
            "grace_ms=%lld", (long long)grace_ms);
    grpc_server_cancel_all_calls(s->server);
    if (wait_shutdown_tag(s, 10000) == 0)
        return 0;
    aps_log(APS_LOG_ERROR, "calls still open after cancelling them", NULL);
    return -1;
}

void
aps_server_destroy(aps_server *s)
{
    if (s == NULL)
        return;
    /* The pool first: its handlers may still start batches. */
    pthread_mutex_lock(&s->pool.mu);
    s->pool.stop = 1;
    pthread_mutex_unlock(&s->pool.mu);
    for (int i = 0; i < s->pool.n; i++)
        sem_post(&s->pool.work);
    for (int i = 0; i < s->pool.n; i++)
        pthread_join(s->pool.th[i], NULL);
    if (s->server != NULL) {
        if (s->started && !s->shutdown_posted) {
            atomic_store(&s->shutting_down, 1);
            grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
            s->shutdown_posted = 1;
            grpc_server_cancel_all_calls(s->server);
        }
        if (s->shutdown_posted && s->n_cq_th > 0 && wait_shutdown_tag(s, 15000) != 0)
            aps_log(APS_LOG_ERROR, "server shutdown did not complete", NULL);
        if (s->shutdown_done || !s->started)
            grpc_server_destroy(s->server);
    }
    if (s->cq != NULL) {
        grpc_completion_queue_shutdown(s->cq);
        if (s->n_cq_th > 0) {
            for (int i = 0; i < s->n_cq_th; i++)
                pthread_join(s->cq_th[i], NULL);
        } else {
            while (grpc_completion_queue_next(s->cq, inf_future(), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(s->cq);
    }
    free(s->pool.q);
    free(s->pool.th);
    free(s->cq_th);
    free(s->reg);
    pthread_mutex_destroy(&s->pool.mu);
    sem_destroy(&s->pool.work);
    pthread_cond_destroy(&s->pool.idle_cv);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* ---- call API ---------------------------------------------------------------------- */

aps_arena *
aps_call_arena(aps_call *c)
{
    return c->arena;
}

const char *
aps_call_path(aps_call *c)
{
    return c->path;
}

const uint8_t *
aps_call_request_bytes(aps_call *c, size_t *len)
{
    *len = c->req_len;
    return c->req;
}

int
aps_call_cancelled(aps_call *c)
{
    return atomic_load(&c->cancelled);
}

aps_server *
aps_call_server(aps_call *c)
{
    return c->srv;
}

static void
reply_bb(aps_call *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb)
{
    pthread_mutex_lock(&c->mu);
    c->watch = NULL;
    if (bb == NULL && (c->write_in_flight || c->q_head != NULL) && !c->broken) {
        /* A stream with messages still to write: the status follows them. */
        c->finish_pending = 1;
        c->fin_code = code;
        free(c->fin_msg);
        c->fin_msg = strdup(msg ? msg : "");
    } else {
        start_status_locked(c, code, msg, bb);
    }
    pthread_mutex_unlock(&c->mu);
    owner_release(c);
}

void
aps_call_reply(aps_call *c, const ProtobufCMessage *msg)
{
    reply_bb(c, GRPC_STATUS_OK, NULL, bb_pack(msg));
}

void
aps_call_reply_bytes(aps_call *c, const uint8_t *data, size_t len)
{
    reply_bb(c, GRPC_STATUS_OK, NULL, bb_from(data, len));
}

void
aps_call_fail(aps_call *c, grpc_status_code code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code != GRPC_STATUS_OK)
        aps_log(code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_DATA_LOSS ? APS_LOG_WARN
                                                                              : APS_LOG_DEBUG,
                "call failed", "path=%s code=%s", c->path, aps_status_name(code));
    reply_bb(c, code, msg, NULL);
}

static int
send_bb(aps_call *c, grpc_byte_buffer *bb)
{
    out_msg *om = malloc(sizeof(*om));
    if (om == NULL) {
        grpc_byte_buffer_destroy(bb);
        return -1;
    }
    om->bb = bb;
    om->next = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->broken || c->status_sent || c->finish_pending || atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        free(om);
        return -1;
    }
    if (c->q_tail)
        c->q_tail->next = om;
    else
        c->q_head = om;
    c->q_tail = om;
    c->q_len++;
    if (!c->write_in_flight)
        start_write_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int
aps_call_send(aps_call *c, const ProtobufCMessage *msg)
{
    return send_bb(c, bb_pack(msg));
}

int
aps_call_send_bytes(aps_call *c, const uint8_t *data, size_t len)
{
    return send_bb(c, bb_from(data, len));
}

size_t
aps_call_queued(aps_call *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->q_len + (size_t)c->write_in_flight;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void
aps_call_finish(aps_call *c, grpc_status_code code, const char *msg)
{
    reply_bb(c, code, msg, NULL);
}

void
aps_call_cancel(aps_call *c, grpc_status_code code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    c->watch = NULL;
    drop_queue_locked(c);
    if (!c->status_sent) {
        c->status_sent = 1;
        c->broken = 1;
        grpc_call_cancel_with_status(c->call, code, msg, NULL);
    }
    pthread_mutex_unlock(&c->mu);
    owner_release(c);
}

int
aps_call_hold(aps_call *c)
{
    aps_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->shutting_down) || atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&s->mu);
        aps_call_finish(c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return 0;
    }
    /* Each held call keeps its memory and a stream until the client goes:
     * without a bound, clients could hold the daemon's memory. */
    if (s->n_held >= s->max_held) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    s->n_held++;
    c->held = 1;
    c->held_prev = NULL;
    c->held_next = s->held;
    if (s->held)
        s->held->held_prev = c;
    s->held = c;
    pthread_mutex_unlock(&s->mu);
    /* The owner reference now belongs to the held list. */
    return 0;
}

void
aps_call_watch(aps_call *c, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&c->mu);
    c->watch = fn;
    c->watch_arg = arg;
    int closed = c->closed;
    if (closed && fn)
        fn(arg);
    pthread_mutex_unlock(&c->mu);
}

void
aps_call_read(aps_call *c,
              void (*fn)(aps_call *c, const uint8_t *data, size_t len, int ok, void *arg),
              void *arg)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    pthread_mutex_lock(&c->mu);
    c->read_fn = fn;
    c->read_arg = arg;
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL);
    if (e != GRPC_CALL_OK) {
        c->refs--;
        pthread_mutex_unlock(&c->mu);
        aps_log(APS_LOG_ERROR, "start_batch(recv) failed", "path=%s err=%s", c->path,
                grpc_call_error_to_string(e));
        fn(c, NULL, 0, 0, arg);
        return;
    }
    pthread_mutex_unlock(&c->mu);
}

void
aps_call_on_free(aps_call *c, void (*fn)(void *arg), void *arg)
{
    c->free_fn = fn;
    c->free_arg = arg;
}
