/*
 * health.c: grpc.health.v1.Health/Check.
 */
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "grpc/health/v1/health.pb-c.h"
#include "health.h"
#include "pbcheck.h"

/* The names Check answers for; "" is the server as a whole. */
static const char *const known[] = {"", "apsd.v1.Scheduler", "apsd.v1.Workers"};

int
aps_health_check(const uint8_t *req, size_t len, int serving, uint8_t **resp, size_t *resp_len)
{
    Grpc__Health__V1__HealthCheckRequest *rq;
    Grpc__Health__V1__HealthCheckResponse rs = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int found = 0;
    uint8_t *buf;
    size_t n;

    *resp = NULL;
    *resp_len = 0;
    if (!req && len)
        return APS_EINVAL;
    rq = grpc__health__v1__health_check_request__unpack(NULL, len, req);
    if (!rq)
        return APS_EINVAL;
    /* What protobuf-c lets through but a parser must not (pbcheck.h). */
    if (aps__pb_has_field_zero(&rq->base) || !aps__pb_utf8_ok(rq->service)) {
        grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
        return APS_EINVAL;
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        found |= strcmp(rq->service, known[i]) == 0;
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    if (!found)
        return APS_ENOENT;

    rs.status = serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    n = grpc__health__v1__health_check_response__get_packed_size(&rs);
    buf = malloc(n ? n : 1);
    if (!buf)
        return APS_ENOMEM;
    grpc__health__v1__health_check_response__pack(&rs, buf);
    *resp = buf;
    *resp_len = n;
    return 0;
}
