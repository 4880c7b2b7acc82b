/*
 * apsc: the connection, the unary RPCs and the two server streams.
 *
 * Every unary call runs on its own pluck completion queue (one batch of six
 * ops, plucked by its tag), so one client serves any number of threads
 * without a shared poller. A stream has one "next" completion queue for its
 * whole life, reused across reconnections; its batches are the start
 * (metadata, request, half-close, initial metadata), the status (posted at
 * once, completes last) and one RECV_MESSAGE at a time, posted by
 * apsc_*_next() (grpc-core.md, point 6). The call is only unref'd once every
 * posted batch has completed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "grpc_status.h"
#include "internal.h"

#define DEFAULT_TARGET "127.0.0.1:50051"
#define DEFAULT_TIMEOUT_MS 30000
/* Responses larger than gRPC's 4 MiB default: a ListJobs page of 1000 big
 * jobs. The daemon bounds what it sends anyway. */
#define MAX_RECV_BYTES (64 << 20)

/* ---- Errors ------------------------------------------------------------ */

void
apsc_error_init(apsc_error *e)
{
    e->code = GRPC_STATUS_OK;
    e->message = NULL;
}

void
apsc_error_dispose(apsc_error *e)
{
    if (e == NULL)
        return;
    free(e->message);
    apsc_error_init(e);
}

const char *
apsc_status_name(grpc_status_code code)
{
    const char *name = apsc__grpc_status_name((int)code);

    return name ? name : "UNKNOWN";
}

int
apsc_status_from_name(const char *name)
{
    char norm[32];
    size_t n = 0;

    if (name == NULL)
        return -1;
    /* `NotFound` -> NOT_FOUND, `not_found` -> NOT_FOUND. */
    for (const char *p = name; *p != '\0'; p++) {
        if (n + 2 >= sizeof norm)
            return -1;
        if (*p >= 'A' && *p <= 'Z' && p != name && p[-1] >= 'a' && p[-1] <= 'z')
            norm[n++] = '_';
        norm[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    }
    norm[n] = '\0';
    for (int i = 0; apsc__grpc_status_name(i) != NULL; i++)
        if (strcmp(norm, apsc__grpc_status_name(i)) == 0)
            return i;
    return -1;
}

const char *
apsc_strerror(int rc)
{
    switch (rc) {
    case APSC_OK:
        return "success";
    case APSC_ERPC:
        return "the call failed (see its gRPC status)";
    case APSC_EINVAL:
        return "invalid argument";
    case APSC_ENOMEM:
        return "out of memory";
    case APSC_EPROTO:
        return "undecodable data";
    case APSC_ETIMEDOUT:
        return "nothing arrived in time";
    case APSC_EOF:
        return "end of stream";
    default:
        return "unknown error";
    }
}

void
apsc__set_status(apsc_error *err, grpc_status_code code, const char *msg, size_t len)
{
    if (err == NULL)
        return;
    apsc_error_dispose(err);
    err->code = code;
    if (msg != NULL) {
        err->message = malloc(len + 1);
        if (err->message != NULL) {
            memcpy(err->message, msg, len);
            err->message[len] = '\0';
        }
    }
}

int
apsc__fail(apsc_error *err, int rc, grpc_status_code code, const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1;
    apsc__set_status(err, code, buf, (size_t)n);
    return rc;
}

void
apsc_free(void *msg)
{
    if (msg != NULL)
        protobuf_c_message_free_unpacked((ProtobufCMessage *)msg, NULL);
}

/* ---- The method table ------------------------------------------------------- */

enum {
    M_ADD_JOB,
    M_GET_JOB,
    M_LIST_JOBS,
    M_MODIFY_JOB,
    M_RESCHEDULE_JOB,
    M_PAUSE_JOB,
    M_RESUME_JOB,
    M_RUN_JOB_NOW,
    M_REMOVE_JOB,
    M_REMOVE_ALL_JOBS,
    M_PREVIEW_TRIGGER,
    M_GET_SCHEDULER,
    M_PAUSE_SCHEDULER,
    M_RESUME_SCHEDULER,
    M_BACKFILL,
    M_SUBSCRIBE_EVENTS,
    M_ACQUIRE,
    M_COMPLETE,
    M_EXTEND_LEASE,
    N_METHODS
};

typedef struct method {
    const char *path;
    const ProtobufCMessageDescriptor *in, *out;
} method;

#define S(name) "/apsd.v1.Scheduler/" name
#define W(name) "/apsd.v1.Workers/" name
static const method methods[N_METHODS] = {
    [M_ADD_JOB] = {S("AddJob"), &apsd__v1__add_job_request__descriptor,
                   &apsd__v1__job__descriptor},
    [M_GET_JOB] = {S("GetJob"), &apsd__v1__get_job_request__descriptor,
                   &apsd__v1__job__descriptor},
    [M_LIST_JOBS] = {S("ListJobs"), &apsd__v1__list_jobs_request__descriptor,
                     &apsd__v1__list_jobs_response__descriptor},
    [M_MODIFY_JOB] = {S("ModifyJob"), &apsd__v1__modify_job_request__descriptor,
                      &apsd__v1__job__descriptor},
    [M_RESCHEDULE_JOB] = {S("RescheduleJob"), &apsd__v1__reschedule_job_request__descriptor,
                          &apsd__v1__job__descriptor},
    [M_PAUSE_JOB] = {S("PauseJob"), &apsd__v1__pause_job_request__descriptor,
                     &apsd__v1__job__descriptor},
    [M_RESUME_JOB] = {S("ResumeJob"), &apsd__v1__resume_job_request__descriptor,
                      &apsd__v1__job__descriptor},
    [M_RUN_JOB_NOW] = {S("RunJobNow"), &apsd__v1__run_job_now_request__descriptor,
                       &apsd__v1__run_job_now_response__descriptor},
    [M_REMOVE_JOB] = {S("RemoveJob"), &apsd__v1__remove_job_request__descriptor,
                      &apsd__v1__remove_job_response__descriptor},
    [M_REMOVE_ALL_JOBS] = {S("RemoveAllJobs"), &apsd__v1__remove_all_jobs_request__descriptor,
                           &apsd__v1__remove_all_jobs_response__descriptor},
    [M_PREVIEW_TRIGGER] = {S("PreviewTrigger"), &apsd__v1__preview_trigger_request__descriptor,
                           &apsd__v1__preview_trigger_response__descriptor},
    [M_GET_SCHEDULER] = {S("GetScheduler"), &apsd__v1__get_scheduler_request__descriptor,
                         &apsd__v1__scheduler_info__descriptor},
    [M_PAUSE_SCHEDULER] = {S("PauseScheduler"), &apsd__v1__pause_scheduler_request__descriptor,
                           &apsd__v1__scheduler_info__descriptor},
    [M_RESUME_SCHEDULER] = {S("ResumeScheduler"),
                            &apsd__v1__resume_scheduler_request__descriptor,
                            &apsd__v1__scheduler_info__descriptor},
    [M_BACKFILL] = {S("Backfill"), &apsd__v1__backfill_request__descriptor,
                    &apsd__v1__backfill_response__descriptor},
    [M_SUBSCRIBE_EVENTS] = {S("SubscribeEvents"), &apsd__v1__subscribe_events_request__descriptor,
                            &apsd__v1__subscribe_events_response__descriptor},
    [M_ACQUIRE] = {W("Acquire"), &apsd__v1__acquire_request__descriptor,
                   &apsd__v1__acquire_response__descriptor},
    [M_COMPLETE] = {W("Complete"), &apsd__v1__complete_request__descriptor,
                    &apsd__v1__complete_response__descriptor},
    [M_EXTEND_LEASE] = {W("ExtendLease"), &apsd__v1__extend_lease_request__descriptor,
                        &apsd__v1__extend_lease_response__descriptor},
};
#undef S
#undef W

/* ---- The client ---------------------------------------------------------------- */

struct apsc_client {
    grpc_channel *ch;
    char *target;
    char *auth; /* "Bearer TOKEN", or NULL */
    int64_t timeout_ms;
    int wait_for_ready;
    void *handles[N_METHODS];
};

static int
read_file(const char *path, char **out, apsc_error *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;

    *out = NULL;
    if (f == NULL)
        return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s", path,
                          strerror(errno));
    for (;;) {
        if (cap - len < 4096) {
            if (cap >= (16u << 20)) {
                free(buf);
                fclose(f);
                return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INVALID_ARGUMENT,
                                  "%s: larger than 16 MiB", path);
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                  "out of memory");
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INVALID_ARGUMENT, "%s: read error",
                          path);
    }
    buf[len] = '\0';
    *out = buf;
    return APSC_OK;
}

static char *
dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

int
apsc_client_create(const apsc_options *opts, apsc_client **out, apsc_error *err)
{
    static const apsc_options defaults = APSC_OPTIONS_INIT;
    apsc_client *c = NULL;
    grpc_channel_credentials *creds = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    int rc = APSC_OK, inited = 0;

    if (err != NULL)
        apsc_error_dispose(err);
    if (out == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "out: NULL");
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    const char *target = opts->target != NULL ? opts->target : DEFAULT_TARGET;
    if (target[0] == '\0')
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                          "target: must not be empty");
    if ((opts->tls_cert_file == NULL) != (opts->tls_key_file == NULL))
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                          "tls_cert_file and tls_key_file: give both or neither");
    if (opts->token != NULL && (opts->token[0] == '\0' || strpbrk(opts->token, "\r\n") != NULL))
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                          "token: must be one non-empty line");
    int tls = opts->tls || opts->tls_ca_file || opts->tls_cert_file || opts->tls_server_name;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto nomem;
    c->target = dupstr(target);
    if (c->target == NULL)
        goto nomem;
    if (opts->token != NULL) {
        size_t n = strlen(opts->token) + sizeof "Bearer ";
        c->auth = malloc(n);
        if (c->auth == NULL)
            goto nomem;
        snprintf(c->auth, n, "Bearer %s", opts->token);
    }
    c->timeout_ms = opts->timeout_ms == 0 ? DEFAULT_TIMEOUT_MS : opts->timeout_ms;
    c->wait_for_ready = opts->wait_for_ready;

    if (tls) {
        if (opts->tls_ca_file != NULL && (rc = read_file(opts->tls_ca_file, &ca, err)) != 0)
            goto fail;
        if (opts->tls_cert_file != NULL) {
            if ((rc = read_file(opts->tls_cert_file, &cert, err)) != 0 ||
                (rc = read_file(opts->tls_key_file, &key, err)) != 0)
                goto fail;
        }
    }
    grpc_init();
    inited = 1;
    if (tls) {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        creds = grpc_ssl_credentials_create(ca, cert != NULL ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    if (creds == NULL) {
        rc = apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                        "cannot create the channel credentials");
        goto fail;
    }

    /* Reconnect quickly after the daemon restarts: gRPC's default first
     * backoff is 1 s, growing to 120 s, during which fail-fast calls are
     * refused at once. An event stream resumes on its own schedule. */
    grpc_arg args[6];
    size_t nargs = 0;
    memset(args, 0, sizeof args);
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[nargs++].value.integer = MAX_RECV_BYTES;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[nargs++].value.integer = 100;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[nargs++].value.integer = 100;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[nargs++].value.integer = 2000;
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
    args[nargs++].value.string = (char *)"apsc/0.1";
    if (tls && opts->tls_server_name != NULL) {
        args[nargs].type = GRPC_ARG_STRING;
        args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[nargs++].value.string = (char *)opts->tls_server_name;
    }
    grpc_channel_args cargs = {nargs, args};
    c->ch = grpc_channel_create(c->target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    creds = NULL;
    if (c->ch == NULL) {
        rc = apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                        "cannot create a channel to %s", c->target);
        goto fail;
    }
    for (int m = 0; m < N_METHODS; m++)
        c->handles[m] = grpc_channel_register_call(c->ch, methods[m].path, NULL, NULL);
    free(ca);
    free(cert);
    if (key != NULL) {
        /* A private key: do not leave it in freed memory (the credentials
         * keep their own copy). */
        memset(key, 0, strlen(key));
        free(key);
    }
    *out = c;
    return APSC_OK;

nomem:
    rc = apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
    free(ca);
    free(cert);
    if (key != NULL) {
        /* A private key: do not leave it in freed memory. */
        memset(key, 0, strlen(key));
        free(key);
    }
    if (c != NULL) {
        if (c->ch != NULL)
            grpc_channel_destroy(c->ch);
        free(c->target);
        free(c->auth);
        free(c);
    }
    if (inited)
        grpc_shutdown();
    return rc;
}

void
apsc_client_destroy(apsc_client *c)
{
    if (c == NULL)
        return;
    grpc_channel_destroy(c->ch);
    free(c->target);
    free(c->auth);
    free(c);
    grpc_shutdown();
}

const char *
apsc_client_target(const apsc_client *c)
{
    return c->target;
}

/* ---- Messages <-> byte buffers ---------------------------------------------- */

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

/* Decodes a received message: 0 and *out, or an APSC_E* code. */
static int
bb_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc, void **out,
          apsc_error *err)
{
    grpc_byte_buffer_reader r;

    *out = NULL;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INTERNAL,
                          "cannot read the response (decompression failed)");
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (m == NULL)
        return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INTERNAL, "cannot decode a %s",
                          desc->name);
    *out = m;
    return APSC_OK;
}

static gpr_timespec
deadline_after_ms(int64_t ms)
{
    if (ms < 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* The metadata every call sends: the bearer token, if any. */
static size_t
auth_metadata(const apsc_client *c, grpc_metadata *md)
{
    if (c->auth == NULL)
        return 0;
    memset(md, 0, sizeof(*md));
    md->key = grpc_slice_from_static_string("authorization");
    md->value = grpc_slice_from_copied_string(c->auth);
    return 1;
}

static void
status_to_err(apsc_error *err, grpc_status_code st, grpc_slice details)
{
    apsc__set_status(err, st, (const char *)GRPC_SLICE_START_PTR(details),
                     GRPC_SLICE_LENGTH(details));
}

/* ---- Unary calls ------------------------------------------------------------ */

static int
unary(apsc_client *c, int m, const void *req, void **out, apsc_error *err)
{
    grpc_op ops[6];
    grpc_metadata md;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
    int rc = APSC_OK;

    if (err != NULL)
        apsc_error_dispose(err);
    if (out == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "out: NULL");
    *out = NULL;
    if (c == NULL || req == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "%s: NULL argument",
                          methods[m].path);
    if (((const ProtobufCMessage *)req)->descriptor != methods[m].in)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                          "%s: the request is a %s, not a %s", methods[m].path,
                          ((const ProtobufCMessage *)req)->descriptor->name, methods[m].in->name);

    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_registered_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS,
                                                          cq, c->handles[m],
                                                          deadline_after_ms(c->timeout_ms), NULL);
    size_t nmd = auth_metadata(c, &md);
    send_bb = bb_pack(req);
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = nmd ? &md : NULL;
    if (c->wait_for_ready)
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    void *tag = &ops; /* any unique address */
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, tag, NULL);
    if (e != GRPC_CALL_OK) {
        rc = apsc__fail(err, APSC_ERPC, GRPC_STATUS_INTERNAL, "%s: grpc_call_start_batch: %d",
                        methods[m].path, (int)e);
        goto out;
    }
    /* The call has a deadline (or the caller asked for none), so this wait
     * ends: a batch with RECV_STATUS_ON_CLIENT always completes. */
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        rc = apsc__fail(err, APSC_ERPC, GRPC_STATUS_INTERNAL, "%s: completion queue: %d",
                        methods[m].path, (int)ev.type);
        goto out;
    }
    if (status != GRPC_STATUS_OK) {
        status_to_err(err, status, details);
        rc = APSC_ERPC;
        goto out;
    }
    if (recv_bb == NULL) {
        rc = apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INTERNAL, "%s: no response message",
                        methods[m].path);
        goto out;
    }
    rc = bb_unpack(recv_bb, methods[m].out, out, err);

out:
    if (recv_bb != NULL)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_byte_buffer_destroy(send_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    if (nmd)
        grpc_slice_unref(md.value);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return rc;
}

#define UNARY(fn, m, Req, Resp)                                                                 \
    int fn(apsc_client *c, const Req *req, Resp **out, apsc_error *err)                        \
    {                                                                                          \
        return unary(c, m, req, (void **)out, err);                                            \
    }

UNARY(apsc_add_job, M_ADD_JOB, Apsd__V1__AddJobRequest, Apsd__V1__Job)
UNARY(apsc_get_job, M_GET_JOB, Apsd__V1__GetJobRequest, Apsd__V1__Job)
UNARY(apsc_list_jobs, M_LIST_JOBS, Apsd__V1__ListJobsRequest, Apsd__V1__ListJobsResponse)
UNARY(apsc_modify_job, M_MODIFY_JOB, Apsd__V1__ModifyJobRequest, Apsd__V1__Job)
UNARY(apsc_reschedule_job, M_RESCHEDULE_JOB, Apsd__V1__RescheduleJobRequest, Apsd__V1__Job)
UNARY(apsc_pause_job, M_PAUSE_JOB, Apsd__V1__PauseJobRequest, Apsd__V1__Job)
UNARY(apsc_resume_job, M_RESUME_JOB, Apsd__V1__ResumeJobRequest, Apsd__V1__Job)
UNARY(apsc_run_job_now, M_RUN_JOB_NOW, Apsd__V1__RunJobNowRequest, Apsd__V1__RunJobNowResponse)
UNARY(apsc_remove_job, M_REMOVE_JOB, Apsd__V1__RemoveJobRequest, Apsd__V1__RemoveJobResponse)
UNARY(apsc_remove_all_jobs, M_REMOVE_ALL_JOBS, Apsd__V1__RemoveAllJobsRequest,
      Apsd__V1__RemoveAllJobsResponse)
UNARY(apsc_preview_trigger, M_PREVIEW_TRIGGER, Apsd__V1__PreviewTriggerRequest,
      Apsd__V1__PreviewTriggerResponse)
UNARY(apsc_get_scheduler, M_GET_SCHEDULER, Apsd__V1__GetSchedulerRequest, Apsd__V1__SchedulerInfo)
UNARY(apsc_pause_scheduler, M_PAUSE_SCHEDULER, Apsd__V1__PauseSchedulerRequest,
      Apsd__V1__SchedulerInfo)
UNARY(apsc_resume_scheduler, M_RESUME_SCHEDULER, Apsd__V1__ResumeSchedulerRequest,
      Apsd__V1__SchedulerInfo)
UNARY(apsc_backfill, M_BACKFILL, Apsd__V1__BackfillRequest, Apsd__V1__BackfillResponse)
UNARY(apsc_complete, M_COMPLETE, Apsd__V1__CompleteRequest, Apsd__V1__CompleteResponse)
UNARY(apsc_extend_lease, M_EXTEND_LEASE, Apsd__V1__ExtendLeaseRequest,
      Apsd__V1__ExtendLeaseResponse)

int
apsc_list_all_jobs(apsc_client *c, const Apsd__V1__ListJobsRequest *req, size_t max_jobs,
                   Apsd__V1__ListJobsResponse **out, apsc_error *err)
{
    Apsd__V1__ListJobsResponse *all = NULL, *page = NULL;
    Apsd__V1__ListJobsRequest r;
    char *token = NULL;
    int rc;

    if (out == NULL || req == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    if (max_jobs == 0)
        max_jobs = 1000000;
    r = *req;
    r.page_token = (char *)protobuf_c_empty_string;
    for (;;) {
        rc = apsc_list_jobs(c, &r, &page, err);
        if (rc != 0)
            goto fail;
        if (all == NULL) {
            all = page; /* the first page becomes the result */
        } else {
            size_t n = all->n_jobs + page->n_jobs;
            Apsd__V1__Job **jobs = realloc(all->jobs, (n ? n : 1) * sizeof(*jobs));
            if (jobs == NULL)
                goto nomem;
            all->jobs = jobs;
            /* Move the jobs over; the emptied page frees only itself. */
            memcpy(all->jobs + all->n_jobs, page->jobs, page->n_jobs * sizeof(*jobs));
            all->n_jobs = n;
            page->n_jobs = 0;
            free(all->next_page_token);
            all->next_page_token = page->next_page_token;
            page->next_page_token = (char *)protobuf_c_empty_string;
            apsc_free(page);
        }
        page = NULL;
        if (all->next_page_token[0] == '\0' || all->n_jobs >= max_jobs)
            break;
        free(token);
        token = dupstr(all->next_page_token);
        if (token == NULL)
            goto nomem;
        r.page_token = token;
    }
    free(token);
    *out = all;
    return APSC_OK;

nomem:
    rc = apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
    apsc_free(page);
    apsc_free(all);
    free(token);
    return rc;
}

/* ---- Streams ------------------------------------------------------------------ */

struct apsc_stream {
    apsc_client *c;
    int m;                 /* M_SUBSCRIBE_EVENTS or M_ACQUIRE */
    ProtobufCMessage *req; /* our copy; after_sequence is rewritten on resume */
    grpc_completion_queue *cq;

    /* Resumption (events only). */
    int resume, max_retries, initial_backoff_ms, max_backoff_ms;
    int user_bookmarks; /* the caller asked for bookmarks: hand them over */
    int have_seq;
    uint64_t last_seq;
    int attempts;   /* failed reconnections in a row */
    int reconnects; /* total */
    struct timespec reconnect_at; /* CLOCK_MONOTONIC; valid while call == NULL */

    /* The current call; NULL between a failed call and its reconnection. */
    grpc_call *call;
    int pending;     /* posted batches not completed yet */
    int recv_posted; /* a RECV_MESSAGE is in flight */
    int recv_ended;  /* a RECV_MESSAGE returned no message */
    int status_done;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata md;
    size_t nmd;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    char tag_start, tag_recv, tag_status; /* their addresses are the tags */

    /* The end: once `over`, next() returns over_rc (with over_code/msg). */
    int over, over_rc;
    grpc_status_code over_code;
    char *over_msg;

    pthread_mutex_t mu; /* guards `call` against stop() and `stop` */
    pthread_cond_t cv;  /* stop() wakes a backoff wait */
    atomic_int stop;
};

static void
mono_now(struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
}

static int64_t
ms_until(const struct timespec *t)
{
    struct timespec now;
    mono_now(&now);
    return (int64_t)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

static void
add_ms(struct timespec *t, int64_t ms)
{
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* Starts a call for s->req. On failure nothing is left posted. */
static int
stream_start(apsc_stream *s, apsc_error *err)
{
    grpc_op ops[4];
    grpc_call_error e;

    s->send_bb = bb_pack(s->req);
    s->nmd = auth_metadata(s->c, &s->md);
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trail_md);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_UNKNOWN;
    s->recv_posted = s->recv_ended = s->status_done = 0;
    s->recv_bb = NULL;

    grpc_call *call = grpc_channel_create_registered_call(
        s->c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, s->c->handles[s->m],
        gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = s->nmd;
    ops[0].data.send_initial_metadata.metadata = s->nmd ? &s->md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
    e = grpc_call_start_batch(call, ops, 4, &s->tag_start, NULL);
    if (e != GRPC_CALL_OK)
        goto fail;
    s->pending = 1;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trail_md;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    e = grpc_call_start_batch(call, ops, 1, &s->tag_status, NULL);
    if (e != GRPC_CALL_OK) {
        /* The start batch is posted: cancel and wait for it before the
         * buffers it uses go away. */
        grpc_call_cancel(call, NULL);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE || ev.tag == &s->tag_start)
                break;
        }
        goto fail;
    }
    s->pending = 2;
    pthread_mutex_lock(&s->mu);
    s->call = call;
    if (atomic_load(&s->stop))
        grpc_call_cancel(call, NULL);
    pthread_mutex_unlock(&s->mu);
    return APSC_OK;

fail:
    s->pending = 0;
    grpc_call_unref(call);
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    if (s->nmd)
        grpc_slice_unref(s->md.value);
    s->nmd = 0;
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    return apsc__fail(err, APSC_ERPC, GRPC_STATUS_INTERNAL, "%s: grpc_call_start_batch: %d",
                      methods[s->m].path, (int)e);
}

/* Frees the finished call (every batch has completed). */
static void
stream_release_call(apsc_stream *s)
{
    pthread_mutex_lock(&s->mu);
    grpc_call *call = s->call;
    s->call = NULL;
    pthread_mutex_unlock(&s->mu);
    if (call == NULL)
        return;
    grpc_call_unref(call);
    if (s->recv_bb != NULL)
        grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    if (s->nmd)
        grpc_slice_unref(s->md.value);
    s->nmd = 0;
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    grpc_slice_unref(s->details);
    s->details = grpc_empty_slice();
}

static int
stream_over(apsc_stream *s, int rc, grpc_status_code code, const char *msg, size_t len)
{
    s->over = 1;
    s->over_rc = rc;
    s->over_code = code;
    free(s->over_msg);
    s->over_msg = NULL;
    if (msg != NULL) {
        s->over_msg = malloc(len + 1);
        if (s->over_msg != NULL) {
            memcpy(s->over_msg, msg, len);
            s->over_msg[len] = '\0';
        }
    }
    return rc;
}

static int
stream_result(const apsc_stream *s, apsc_error *err)
{
    if (s->over_rc != APSC_EOF)
        apsc__set_status(err, s->over_code, s->over_msg,
                         s->over_msg != NULL ? strlen(s->over_msg) : 0);
    return s->over_rc;
}

/* The request to (re)connect with: resume after the last sequence seen. */
static void
events_prepare(apsc_stream *s)
{
    Apsd__V1__SubscribeEventsRequest *r = (Apsd__V1__SubscribeEventsRequest *)s->req;
    if (s->have_seq) {
        r->optional_after_sequence_case =
            APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
        r->after_sequence = s->last_seq;
    }
}

/* Notes the sequence of an item; returns 1 to hand it to the caller. */
static int
events_track(apsc_stream *s, const Apsd__V1__SubscribeEventsResponse *r)
{
    uint64_t seq = 0;
    int has = 0, deliver = 1;

    switch (r->item_case) {
    case APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT:
        has = r->event != NULL;
        seq = has ? r->event->sequence : 0;
        break;
    case APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_BOOKMARK:
        has = r->bookmark != NULL;
        seq = has ? r->bookmark->sequence : 0;
        deliver = s->user_bookmarks;
        break;
    case APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_GAP:
        /* The stream goes on (continue_after_gap) from the oldest retained
         * event, or ends with OUT_OF_RANGE (not resumed). */
        has = r->gap != NULL && r->gap->first_available_sequence > 0;
        seq = has ? r->gap->first_available_sequence - 1 : 0;
        break;
    default:
        break;
    }
    if (has && (!s->have_seq || seq > s->last_seq)) {
        s->last_seq = seq;
        s->have_seq = 1;
    }
    return deliver;
}

static int
stream_open(apsc_client *c, int m, const ProtobufCMessage *req, const apsc_stream_options *opts,
            apsc_stream **out, apsc_error *err)
{
    static const apsc_stream_options defaults = APSC_STREAM_OPTIONS_INIT;
    apsc_stream *s = NULL;
    uint8_t *buf = NULL;
    int rc;

    if (err != NULL)
        apsc_error_dispose(err);
    if (out == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "out: NULL");
    *out = NULL;
    if (c == NULL || req == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "%s: NULL argument",
                          methods[m].path);
    if (req->descriptor != methods[m].in)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                          "%s: the request is a %s, not a %s", methods[m].path,
                          req->descriptor->name, methods[m].in->name);
    if (opts == NULL)
        opts = &defaults;

    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto nomem;
    /* Our own copy of the request: pack and unpack. */
    size_t n = protobuf_c_message_get_packed_size(req);
    buf = malloc(n ? n : 1);
    if (buf == NULL)
        goto nomem;
    protobuf_c_message_pack(req, buf);
    s->req = protobuf_c_message_unpack(req->descriptor, NULL, n, buf);
    free(buf);
    buf = NULL;
    if (s->req == NULL)
        goto nomem;
    s->c = c;
    s->m = m;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    atomic_init(&s->stop, 0);
    s->details = grpc_empty_slice();
    if (m == M_SUBSCRIBE_EVENTS) {
        Apsd__V1__SubscribeEventsRequest *r = (Apsd__V1__SubscribeEventsRequest *)s->req;
        s->resume = opts->resume;
        s->max_retries = opts->max_retries > 0 ? opts->max_retries : 10;
        s->initial_backoff_ms = opts->initial_backoff_ms > 0 ? opts->initial_backoff_ms : 100;
        s->max_backoff_ms = opts->max_backoff_ms > 0 ? opts->max_backoff_ms : 5000;
        s->user_bookmarks = r->send_bookmarks;
        if (r->optional_after_sequence_case ==
            APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE) {
            s->have_seq = 1;
            s->last_seq = r->after_sequence;
        }
        /* Bookmarks tell a live or filtered stream where it is, so that a
         * resumption neither repeats nor skips events. */
        if (s->resume)
            r->send_bookmarks = 1;
    }
    s->cq = grpc_completion_queue_create_for_next(NULL);
    rc = stream_start(s, err);
    if (rc != 0)
        goto fail;
    *out = s;
    return APSC_OK;

nomem:
    rc = apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
    free(buf);
    if (s != NULL) {
        if (s->cq != NULL) {
            grpc_completion_queue_shutdown(s->cq);
            while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN)
                ;
            grpc_completion_queue_destroy(s->cq);
            pthread_mutex_destroy(&s->mu);
            pthread_cond_destroy(&s->cv);
        }
        apsc_free(s->req);
        free(s);
    }
    return rc;
}

int
apsc_subscribe_events(apsc_client *c, const Apsd__V1__SubscribeEventsRequest *req,
                      const apsc_stream_options *opts, apsc_stream **out, apsc_error *err)
{
    return stream_open(c, M_SUBSCRIBE_EVENTS, (const ProtobufCMessage *)req, opts, out, err);
}

int
apsc_acquire(apsc_client *c, const Apsd__V1__AcquireRequest *req, apsc_stream **out,
             apsc_error *err)
{
    apsc_stream_options o = APSC_STREAM_OPTIONS_INIT;
    o.resume = 0;
    return stream_open(c, M_ACQUIRE, (const ProtobufCMessage *)req, &o, out, err);
}

/* Waits for the reconnection time (or the caller's deadline, or stop).
 * Returns 1 when it is time to reconnect, 0 when the caller's wait ran out. */
static int
backoff_wait(apsc_stream *s, const struct timespec *caller_deadline, int has_deadline)
{
    struct timespec until = s->reconnect_at;
    int capped = 0;

    if (has_deadline && (caller_deadline->tv_sec < until.tv_sec ||
                         (caller_deadline->tv_sec == until.tv_sec &&
                          caller_deadline->tv_nsec < until.tv_nsec))) {
        until = *caller_deadline;
        capped = 1;
    }
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stop) && ms_until(&until) > 0) {
        /* pthread_cond_timedwait uses the realtime clock unless told
         * otherwise; convert the monotonic deadline to a relative one. */
        struct timespec abs;
        clock_gettime(CLOCK_REALTIME, &abs);
        add_ms(&abs, ms_until(&until) + 1);
        pthread_cond_timedwait(&s->cv, &s->mu, &abs);
    }
    pthread_mutex_unlock(&s->mu);
    if (atomic_load(&s->stop))
        return 1; /* the caller's loop notices the stop */
    return capped && ms_until(&s->reconnect_at) > 0 ? 0 : 1;
}

int
apsc__resumable(grpc_status_code code, const char *details)
{
    switch (code) {
    case GRPC_STATUS_UNAVAILABLE: /* the daemon restarting, a dropped connection */
    case GRPC_STATUS_CANCELLED:   /* not ours (stop is checked first): a call the
                                   * daemon refused as it began to shut down */
    case GRPC_STATUS_INTERNAL:    /* a connection broken mid-frame, a proxy's reset */
    case GRPC_STATUS_UNKNOWN:
        return 1;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: /* cut as a slow subscriber */
        return details != NULL && strstr(details, "after_sequence") != NULL;
    default:
        return 0;
    }
}

/* The call finished (every batch completed): decide between the end and a
 * reconnection. Returns 0 to continue reading, else the final code. */
static int
stream_finished(apsc_stream *s, apsc_error *err)
{
    grpc_status_code st = s->status;
    int stopped = atomic_load(&s->stop);
    size_t dlen = GRPC_SLICE_LENGTH(s->details);
    char *dmsg = malloc(dlen + 1);
    int rc;

    if (dmsg != NULL) {
        memcpy(dmsg, GRPC_SLICE_START_PTR(s->details), dlen);
        dmsg[dlen] = '\0';
    }
    stream_release_call(s);
    if (stopped || st == GRPC_STATUS_OK) {
        rc = stream_over(s, APSC_EOF, GRPC_STATUS_OK, NULL, 0);
    } else if (s->m == M_SUBSCRIBE_EVENTS && s->resume && apsc__resumable(st, dmsg) &&
               s->attempts < s->max_retries) {
        /* Resume: wait, then reconnect after the last sequence seen. */
        int64_t backoff = s->initial_backoff_ms;
        for (int i = 0; i < s->attempts && backoff < s->max_backoff_ms; i++)
            backoff *= 2;
        if (backoff > s->max_backoff_ms)
            backoff = s->max_backoff_ms;
        s->attempts++;
        mono_now(&s->reconnect_at);
        add_ms(&s->reconnect_at, backoff);
        rc = 0;
    } else {
        rc = stream_over(s, APSC_ERPC, st, dmsg, dmsg ? dlen : 0);
    }
    free(dmsg);
    if (rc != 0)
        return stream_result(s, err);
    return 0;
}

static int
stream_next(apsc_stream *s, int m, int64_t timeout_ms, void **out, apsc_error *err)
{
    struct timespec deadline;
    int rc;

    if (err != NULL)
        apsc_error_dispose(err);
    if (out == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "out: NULL");
    *out = NULL;
    if (s == NULL || s->m != m)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT,
                          "not a stream of %s", methods[m].path);
    mono_now(&deadline);
    if (timeout_ms > 0)
        add_ms(&deadline, timeout_ms);

    for (;;) {
        if (s->over)
            return stream_result(s, err);
        if (s->call == NULL) {
            /* Between calls: a resumption is due. */
            if (atomic_load(&s->stop))
                return stream_over(s, APSC_EOF, GRPC_STATUS_OK, NULL, 0);
            if (!backoff_wait(s, &deadline, timeout_ms >= 0))
                return APSC_ETIMEDOUT;
            if (atomic_load(&s->stop))
                continue;
            events_prepare(s);
            s->reconnects++;
            rc = stream_start(s, err);
            if (rc != 0) {
                stream_over(s, rc, err ? err->code : GRPC_STATUS_INTERNAL,
                            err ? err->message : NULL,
                            err && err->message ? strlen(err->message) : 0);
                return rc;
            }
        }
        if (!s->recv_posted && !s->recv_ended) {
            grpc_op op;
            memset(&op, 0, sizeof op);
            op.op = GRPC_OP_RECV_MESSAGE;
            op.data.recv_message.recv_message = &s->recv_bb;
            grpc_call_error e = grpc_call_start_batch(s->call, &op, 1, &s->tag_recv, NULL);
            if (e != GRPC_CALL_OK) {
                s->recv_ended = 1; /* e.g. after the status: nothing more to read */
            } else {
                s->recv_posted = 1;
                s->pending++;
            }
        }
        if (s->status_done && s->recv_ended && s->pending == 0) {
            rc = stream_finished(s, err);
            if (rc != 0)
                return rc;
            continue;
        }
        gpr_timespec wait;
        if (timeout_ms < 0) {
            wait = gpr_inf_future(GPR_CLOCK_REALTIME);
        } else {
            int64_t left = ms_until(&deadline);
            wait = deadline_after_ms(left > 0 ? left : 0);
        }
        grpc_event ev = grpc_completion_queue_next(s->cq, wait, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            if (atomic_load(&s->stop))
                continue; /* the cancel's completions are on their way */
            return APSC_ETIMEDOUT;
        }
        if (ev.type != GRPC_OP_COMPLETE)
            return stream_over(s, apsc__fail(err, APSC_ERPC, GRPC_STATUS_INTERNAL,
                                             "completion queue: %d", (int)ev.type),
                               GRPC_STATUS_INTERNAL, "completion queue failed", 23);
        s->pending--;
        if (ev.tag == &s->tag_status) {
            s->status_done = 1;
        } else if (ev.tag == &s->tag_recv) {
            s->recv_posted = 0;
            grpc_byte_buffer *bb = s->recv_bb;
            s->recv_bb = NULL;
            if (!ev.success || bb == NULL) {
                s->recv_ended = 1;
                if (bb != NULL)
                    grpc_byte_buffer_destroy(bb);
                continue;
            }
            void *msg = NULL;
            rc = bb_unpack(bb, methods[m].out, &msg, err);
            grpc_byte_buffer_destroy(bb);
            if (rc != 0) {
                /* An undecodable item: end the stream rather than skip it. */
                apsc_stream_stop(s);
                stream_over(s, rc, GRPC_STATUS_INTERNAL, err && err->message ? err->message : "",
                            err && err->message ? strlen(err->message) : 0);
                /* Drain the cancelled call before reporting. */
                while (s->pending > 0) {
                    ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                    NULL);
                    if (ev.type == GRPC_OP_COMPLETE)
                        s->pending--;
                    if (ev.tag == &s->tag_recv && s->recv_bb != NULL) {
                        grpc_byte_buffer_destroy(s->recv_bb);
                        s->recv_bb = NULL;
                    }
                }
                stream_release_call(s);
                return rc;
            }
            s->attempts = 0; /* the connection works again */
            if (m == M_SUBSCRIBE_EVENTS && !events_track(s, msg)) {
                apsc_free(msg);
                continue;
            }
            *out = msg;
            return APSC_OK;
        }
        /* tag_start: nothing to do; its failure shows in the status. */
    }
}

int
apsc_events_next(apsc_stream *s, int64_t timeout_ms, Apsd__V1__SubscribeEventsResponse **out,
                 apsc_error *err)
{
    return stream_next(s, M_SUBSCRIBE_EVENTS, timeout_ms, (void **)out, err);
}

int
apsc_acquire_next(apsc_stream *s, int64_t timeout_ms, Apsd__V1__AcquireResponse **out,
                  apsc_error *err)
{
    return stream_next(s, M_ACQUIRE, timeout_ms, (void **)out, err);
}

uint64_t
apsc_stream_last_sequence(const apsc_stream *s)
{
    return s->have_seq ? s->last_seq : 0;
}

int
apsc_stream_reconnects(const apsc_stream *s)
{
    return s->reconnects;
}

void
apsc_stream_stop(apsc_stream *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stop, 1);
    if (s->call != NULL)
        grpc_call_cancel(s->call, NULL);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void
apsc_stream_close(apsc_stream *s)
{
    if (s == NULL)
        return;
    apsc_stream_stop(s);
    /* Every posted batch must complete before the call goes away. */
    while (s->pending > 0) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        s->pending--;
        if (ev.tag == &s->tag_recv && s->recv_bb != NULL) {
            grpc_byte_buffer_destroy(s->recv_bb);
            s->recv_bb = NULL;
        }
    }
    stream_release_call(s);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s->cq);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    apsc_free(s->req);
    free(s->over_msg);
    free(s);
}
