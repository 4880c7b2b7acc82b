/* apsd.v1.Workers: Acquire (a stream of leased dispatches), Complete,
 * ExtendLease, on the engine's remote-worker API (aps_worker_*). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/v1/workers.pb-c.h"
#include "service/convert.h"
#include "service/log.h"
#include "service/rpc.h"

#define LEASE_MIN_US (1LL * 1000000)
#define LEASE_MAX_US (3600LL * 1000000)
#define TAKE_BATCH 16

typedef struct acq_stream acq_stream;

typedef struct workers_state {
    pthread_mutex_t mu;
    acq_stream *list; /* open Acquire streams, for the same-worker_id rule */
} workers_state;

struct acq_stream {
    aps_pump_src src; /* first */
    aps_app *app;
    aps_call *c;
    aps_worker *w;
    char worker_id[APS_WORKER_ID_MAX + 1];
    atomic_int aborted; /* replaced by a newer stream of the same worker_id */
    int done;
    acq_stream *next, *prev; /* in workers_state.list (its mu) */
};

static int64_t
clamp_lease(int64_t us)
{
    return us < LEASE_MIN_US ? LEASE_MIN_US : us > LEASE_MAX_US ? LEASE_MAX_US : us;
}

static void
acq_wake(void *arg)
{
    aps_pump_wake(&((acq_stream *)arg)->src);
}

static int
acq_end(acq_stream *st, grpc_status_code code, const char *msg)
{
    st->done = 1;
    aps_call_finish(st->c, code, msg);
    return 0;
}

static int
send_dispatch(acq_stream *st, const aps_dispatch *d)
{
    aps_arena *a = aps_arena_new(64u << 20);
    Apsd__V1__Dispatch *pb = a ? APS_PB_NEW(a, Apsd__V1__Dispatch, APSD__V1__DISPATCH__INIT) : NULL;
    Apsd__V1__AcquireResponse r = APSD__V1__ACQUIRE_RESPONSE__INIT;
    Google__Protobuf__Value *v = NULL;
    aps_job *job = NULL;
    int rc = -1;

    if (pb == NULL)
        goto out;
    pb->run_id = aps_arena_strdup(a, d->run_id);
    pb->job_id = aps_arena_strdup(a, d->job_id);
    /* The name is for the worker's logs: a store read, never a wait. */
    if (aps_job_get(st->app->sched, d->job_id, &job) == 0 && job->name != NULL)
        pb->job_name = aps_arena_strdup(a, job->name);
    else
        pb->job_name = pb->job_id;
    pb->task = aps_arena_strdup(a, d->task);
    if (aps_json_to_value(a, d->args_json ? d->args_json : "[]", &v) == 0 &&
        v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE)
        pb->args = v->list_value;
    if (aps_json_to_value(a, d->kwargs_json ? d->kwargs_json : "{}", &v) == 0 &&
        v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
        pb->kwargs = v->struct_value;
    pb->scheduled_run_times = aps_arena_alloc(a, (d->n_run_times + 1) * sizeof(void *));
    if (pb->scheduled_run_times == NULL)
        goto out;
    for (size_t i = 0; i < d->n_run_times; i++) {
        Google__Protobuf__Timestamp *ts = aps_ts_from_time(a, d->run_times[i]);
        if (ts)
            pb->scheduled_run_times[pb->n_scheduled_run_times++] = ts;
    }
    pb->queue = aps_arena_strdup(a, d->queue);
    pb->lease_token = aps_arena_strdup(a, d->lease_token);
    pb->lease_deadline = aps_ts_from_time(a, d->lease_deadline);
    pb->lease_duration = aps_dur_from_us(a, d->lease_us);
    if (pb->run_id == NULL || pb->job_id == NULL || pb->task == NULL || pb->queue == NULL ||
        pb->lease_token == NULL)
        goto out;
    r.item_case = APSD__V1__ACQUIRE_RESPONSE__ITEM_DISPATCH;
    r.dispatch = pb;
    rc = aps_call_send(st->c, &r.base);
out:
    aps_job_free(job);
    aps_arena_free(a);
    return rc;
}

static int
acq_service(aps_pump_src *src, int tick)
{
    acq_stream *st = (acq_stream *)src;
    (void)tick;
    if (aps_call_cancelled(st->c))
        return acq_end(st, GRPC_STATUS_CANCELLED, "client went away");
    if (atomic_load(&st->aborted)) {
        st->done = 1;
        aps_call_finish(st->c, GRPC_STATUS_ABORTED,
                        "a newer Acquire stream with the same worker_id replaced this one");
        return 0;
    }
    /* Cancels first: a worker should stop a run before taking new ones. */
    char(*ids)[33] = NULL;
    size_t n = 0;
    if (aps_worker_cancels(st->w, &ids, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            Apsd__V1__CancelRun cr = APSD__V1__CANCEL_RUN__INIT;
            Apsd__V1__AcquireResponse r = APSD__V1__ACQUIRE_RESPONSE__INIT;
            cr.run_id = ids[i];
            cr.reason = (char *)"the run was ended by the scheduler (cancelled by its overlap "
                                "policy, lease expired, or the daemon is stopping)";
            r.item_case = APSD__V1__ACQUIRE_RESPONSE__ITEM_CANCEL;
            r.cancel = &cr;
            if (aps_call_send(st->c, &r.base) != 0) {
                free(ids);
                return acq_end(st, GRPC_STATUS_CANCELLED, "client went away");
            }
        }
        free(ids);
    }
    for (int rounds = 0; rounds < 64; rounds++) {
        aps_dispatch *d = NULL;
        size_t k = 0;
        int rc = aps_worker_take(st->w, TAKE_BATCH, 0, &d, &k);
        if (rc == APS_ESTATE)
            return acq_end(st, GRPC_STATUS_UNAVAILABLE, "the workers executors shut down");
        if (rc != 0)
            break;
        int bad = 0;
        for (size_t i = 0; i < k && !bad; i++)
            bad = send_dispatch(st, &d[i]) != 0;
        aps_dispatch_free(d, k);
        if (bad)
            return acq_end(st, GRPC_STATUS_CANCELLED, "client went away");
        if (k < TAKE_BATCH)
            break;
    }
    return 1;
}

static void
acq_stop(aps_pump_src *src)
{
    acq_stream *st = (acq_stream *)src;
    if (!st->done) {
        st->done = 1;
        aps_call_finish(st->c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
    }
}

static void
acq_release(aps_pump_src *src)
{
    acq_stream *st = (acq_stream *)src;
    workers_state *ws = st->app->workers;
    pthread_mutex_lock(&ws->mu);
    if (st->prev)
        st->prev->next = st->next;
    else if (ws->list == st)
        ws->list = st->next;
    if (st->next)
        st->next->prev = st->prev;
    pthread_mutex_unlock(&ws->mu);
    aps_worker_detach(st->w); /* notify is not running after this */
    free(st);
}

static void
h_acquire(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__AcquireRequest *req = (const Apsd__V1__AcquireRequest *)m;
    aps_app *app = ud;
    workers_state *ws = app->workers;
    aps_error err = {0};
    int64_t lease = 0;

    size_t idlen = strlen(req->worker_id);
    if (idlen == 0 || idlen > APS_WORKER_ID_MAX) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "worker_id: 1-%d bytes required",
                      APS_WORKER_ID_MAX);
        return;
    }
    if (req->max_in_flight < 0 || req->max_in_flight > APS_WORKER_IN_FLIGHT_MAX) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "max_in_flight: must be 1-%d (%d given)",
                      APS_WORKER_IN_FLIGHT_MAX, (int)req->max_in_flight);
        return;
    }
    if (aps_dur_to_us(req->lease_duration, "lease_duration", &lease, &err) != 0 || lease < 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s",
                      err.msg[0] ? err.msg : "lease_duration: must not be negative");
        return;
    }
    acq_stream *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    st->app = app;
    st->c = c;
    snprintf(st->worker_id, sizeof st->worker_id, "%s", req->worker_id);
    st->src.pump = app->pump; /* notify may fire before the pump takes it */
    st->src.fd = -1;
    st->src.service = acq_service;
    st->src.stop = acq_stop;
    st->src.release = acq_release;
    aps_worker_options o = {
        .queue = req->queue[0] ? req->queue : NULL,
        .worker_id = req->worker_id,
        .max_in_flight = (uint32_t)req->max_in_flight,
        .tasks = (const char *const *)req->tasks,
        .n_tasks = req->n_tasks,
        /* Unset: the executor's own lease ([executor NAME] lease). */
        .lease_us = lease ? clamp_lease(lease) : 0,
        .notify = acq_wake,
        .userdata = st,
    };
    int rc = aps_worker_attach(app->sched, &o, &st->w, &err);
    if (rc != 0) {
        free(st);
        if (rc == APS_ENOENT)
            aps_call_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
                          "the daemon has no executor of type \"workers\"");
        else if (rc == APS_ESTATE)
            aps_call_fail(c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        else
            aps_rpc_fail_engine(c, rc, &err, NULL);
        return;
    }
    /* A second Acquire with the same worker_id ends the older stream. */
    pthread_mutex_lock(&ws->mu);
    for (acq_stream *o2 = ws->list; o2 != NULL; o2 = o2->next)
        if (strcmp(o2->worker_id, st->worker_id) == 0 && !atomic_exchange(&o2->aborted, 1))
            aps_pump_wake(&o2->src);
    st->next = ws->list;
    if (ws->list)
        ws->list->prev = st;
    ws->list = st;
    pthread_mutex_unlock(&ws->mu);
    aps_log(APS_LOG_INFO, "worker attached", "worker_id=%.200s queue=%s", st->worker_id,
            req->queue[0] ? req->queue : "default");
    /* The watch first: once added, the stream may end at any time. */
    aps_call_watch(c, acq_wake, st);
    if (aps_pump_add(app->pump, &st->src) != 0) {
        aps_call_watch(c, NULL, NULL);
        acq_release(&st->src);
        aps_call_fail(c, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
    }
}

static void
fail_lease(aps_call *c, int rc, const aps_error *err, const char *run_id)
{
    switch (rc) {
    case APS_ENOENT:
        aps_call_fail(c, GRPC_STATUS_NOT_FOUND, "run_id: no run with id \"%.64s\"", run_id);
        break;
    case APS_EINVAL: /* ids non-empty, result valid: a wrong token */
        aps_call_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
                      "lease_token: does not match the run's lease");
        break;
    case APS_ESTATE:
        aps_call_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
                      "run_id: the run already ended (completed, lease expired or cancelled)");
        break;
    default:
        aps_rpc_fail_engine(c, rc, err, NULL);
    }
}

static void
h_complete(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__CompleteRequest *req = (const Apsd__V1__CompleteRequest *)m;
    aps_app *app = ud;
    aps_error err = {0};
    aps_task_result r = {.ok = 1};

    if (req->run_id[0] == '\0' || req->lease_token[0] == '\0') {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: required",
                      req->run_id[0] == '\0' ? "run_id" : "lease_token");
        return;
    }
    if (req->result_case == APSD__V1__COMPLETE_REQUEST__RESULT_RETURN_VALUE) {
        char *json = NULL;
        int rc =
            aps_json_from_value(aps_call_arena(c), req->return_value, "return_value", &json, &err);
        if (rc != 0) {
            aps_call_fail(
                c, rc == APS_ELIMIT ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT,
                "%s", err.msg);
            return;
        }
        r.return_json = json;
    } else if (req->result_case == APSD__V1__COMPLETE_REQUEST__RESULT_ERROR) {
        r.ok = 0;
        r.error = req->error->message;
        r.error_type = req->error->type[0] ? req->error->type : NULL;
        r.traceback = req->error->traceback[0] ? req->error->traceback : NULL;
    }
    int rc = aps_worker_complete(app->sched, req->run_id, req->lease_token, &r);
    if (rc != 0) {
        fail_lease(c, rc, NULL, req->run_id);
        return;
    }
    Apsd__V1__CompleteResponse resp = APSD__V1__COMPLETE_RESPONSE__INIT;
    aps_call_reply(c, &resp.base);
}

static void
h_extend_lease(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    const Apsd__V1__ExtendLeaseRequest *req = (const Apsd__V1__ExtendLeaseRequest *)m;
    aps_app *app = ud;
    aps_error err = {0};
    int64_t us = 0, granted = 0;
    aps_time deadline = APS_TIME_NONE;

    if (req->run_id[0] == '\0' || req->lease_token[0] == '\0') {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: required",
                      req->run_id[0] == '\0' ? "run_id" : "lease_token");
        return;
    }
    if (aps_dur_to_us(req->lease_duration, "lease_duration", &us, &err) != 0 || us < 0) {
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s",
                      err.msg[0] ? err.msg : "lease_duration: must not be negative");
        return;
    }
    int rc = aps_worker_extend(app->sched, req->run_id, req->lease_token, us ? clamp_lease(us) : 0,
                               &deadline, &granted);
    if (rc != 0) {
        fail_lease(c, rc, NULL, req->run_id);
        return;
    }
    Apsd__V1__ExtendLeaseResponse resp = APSD__V1__EXTEND_LEASE_RESPONSE__INIT;
    resp.lease_deadline = aps_ts_from_time(aps_call_arena(c), deadline);
    resp.lease_duration = aps_dur_from_us(aps_call_arena(c), granted);
    aps_call_reply(c, &resp.base);
}

int
aps_workers_init(aps_app *app)
{
    workers_state *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return -1;
    pthread_mutex_init(&ws->mu, NULL);
    app->workers = ws;
    return 0;
}

void
aps_workers_fini(aps_app *app)
{
    workers_state *ws = app->workers;
    if (ws == NULL)
        return;
    pthread_mutex_destroy(&ws->mu);
    free(ws);
    app->workers = NULL;
}

int
aps_workers_methods(aps_app *app, aps_method *out, size_t cap)
{
    static const struct {
        const char *name;
        aps_handler_fn fn;
        aps_rpc_kind kind;
    } handlers[] = {
        {"Acquire", h_acquire, APS_RPC_SERVER_STREAM},
        {"Complete", h_complete, APS_RPC_UNARY},
        {"ExtendLease", h_extend_lease, APS_RPC_UNARY},
    };
    static char paths[8][96];
    const ProtobufCServiceDescriptor *sd = &apsd__v1__workers__descriptor;
    if (cap < sd->n_methods || sd->n_methods > 8)
        return -1;
    for (unsigned i = 0; i < sd->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &sd->methods[i];
        aps_method *m = &out[i];
        memset(m, 0, sizeof(*m));
        snprintf(paths[i], sizeof paths[i], "/%s/%s", sd->name, md->name);
        m->path = paths[i];
        m->input = md->input;
        m->write = 1;
        m->run_on = APS_RUN_POOL;
        m->app = app;
        for (size_t k = 0; k < sizeof handlers / sizeof handlers[0]; k++)
            if (strcmp(handlers[k].name, md->name) == 0) {
                m->handler = handlers[k].fn;
                m->kind = handlers[k].kind;
            }
        if (m->handler == NULL)
            return -1;
    }
    return (int)sd->n_methods;
}
