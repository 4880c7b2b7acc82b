/* gRPC's own services: grpc.health.v1.Health and server reflection (v1 and
 * v1alpha), gluing the pure handlers of health.c and reflection.c to the
 * server. Both run on the CQ thread: they only touch memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/health.h"
#include "service/log.h"
#include "service/reflection.h"
#include "service/rpc.h"

/* HealthCheckResponse{status: SERVICE_UNKNOWN (3)}: Watch's answer for an
 * unknown service (health.proto), hand-encoded: field 1, varint 3. */
static const uint8_t health_unknown[] = {0x08, 0x03};

static void
h_health_check(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    aps_app *app = ud;
    size_t len = 0, out_len = 0;
    uint8_t *out = NULL;
    const uint8_t *req = aps_call_request_bytes(c, &len);
    (void)m;
    int rc = aps_health_check(req, len, !aps_server_shutting_down(app->server), &out, &out_len);
    if (rc == 0)
        aps_call_reply_bytes(c, out, out_len);
    else if (rc == APS_ENOENT)
        aps_call_fail(c, GRPC_STATUS_NOT_FOUND, "unknown service");
    else if (rc == APS_EINVAL)
        aps_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "not a HealthCheckRequest");
    else
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    free(out);
}

/* Watch: the current status, then the stream stays open until the daemon
 * stops (UNAVAILABLE) or the client leaves. */
static void
h_health_watch(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    aps_app *app = ud;
    size_t len = 0, out_len = 0;
    uint8_t *out = NULL;
    const uint8_t *req = aps_call_request_bytes(c, &len);
    (void)m;
    int rc = aps_health_check(req, len, !aps_server_shutting_down(app->server), &out, &out_len);
    if (rc == 0)
        aps_call_send_bytes(c, out, out_len);
    else if (rc == APS_ENOENT)
        aps_call_send_bytes(c, health_unknown, sizeof health_unknown);
    free(out);
    if (rc != 0 && rc != APS_ENOENT) {
        aps_call_fail(
            c, rc == APS_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
            "not a HealthCheckRequest");
        return;
    }
    if (aps_call_hold(c) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "%zu Health.Watch streams are open, the most [limits] max_health_watches "
                 "allows: close one, or raise it",
                 app->max_health_watches);
        aps_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
    }
}

/* Replies a reflection stream may have queued, unread by its client. */
#define REFL_QUEUE_MAX 16

static void
refl_free(void *arg)
{
    aps_refl_stream_free(arg);
}

static void
refl_on_msg(aps_call *c, const uint8_t *data, size_t len, int ok, void *arg)
{
    aps_refl_stream *st = arg;
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (data == NULL) {
        /* Half-close: the client is done. A failed read: the call is gone. */
        aps_call_finish(c, ok ? GRPC_STATUS_OK : GRPC_STATUS_CANCELLED, ok ? "" : "read failed");
        return;
    }
    int rc = aps_refl_handle(st, data, len, &out, &out_len);
    if (rc != 0) {
        free(out);
        aps_call_finish(
            c, rc == APS_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
            rc == APS_EINVAL ? "not a ServerReflectionRequest" : "out of memory");
        return;
    }
    int sent = aps_call_send_bytes(c, out, out_len);
    free(out);
    if (sent != 0) {
        aps_call_finish(c, GRPC_STATUS_CANCELLED, "client went away");
        return;
    }
    /* A reply can be 2,000 times its request: a client that sends without
     * reading would have the daemon queue replies without bound. */
    if (aps_call_queued(c) > REFL_QUEUE_MAX) {
        aps_call_cancel(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "reflection: more than 16 replies unread (read them as you ask)");
        return;
    }
    aps_call_read(c, refl_on_msg, st);
}

static void
h_reflection(aps_call *c, const ProtobufCMessage *m, void *ud)
{
    aps_refl_stream *st = NULL;
    (void)m;
    if (ud == NULL) {
        aps_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, "reflection is not available");
        return;
    }
    if (aps_refl_stream_new(ud, &st) != 0) {
        aps_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    aps_call_on_free(c, refl_free, st);
    aps_call_read(c, refl_on_msg, st);
}

int
aps_builtin_methods(aps_app *app, void *refl, aps_method *out, size_t cap)
{
    const aps_method tab[] = {
        {"/grpc.health.v1.Health/Check", APS_RPC_UNARY, NULL, 0, APS_RUN_CQ, h_health_check, app},
        {"/grpc.health.v1.Health/Watch", APS_RPC_SERVER_STREAM, NULL, 0, APS_RUN_CQ, h_health_watch,
         app},
        {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", APS_RPC_BIDI, NULL, 0,
         APS_RUN_CQ, h_reflection, refl},
        {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", APS_RPC_BIDI, NULL, 0,
         APS_RUN_CQ, h_reflection, refl},
    };
    size_t n = sizeof tab / sizeof tab[0];
    if (cap < n)
        return -1;
    memcpy(out, tab, sizeof tab);
    return (int)n;
}
