/**
 * @file health.h
 * @brief grpc.health.v1.Health/Check as a pure bytes-in / bytes-out handler.
 *
 * Services known: "" (the server as a whole), "apsd.v1.Scheduler",
 * "apsd.v1.Workers". All share one status: SERVING while the daemon serves,
 * NOT_SERVING otherwise (e.g. while draining for shutdown). Any other name
 * is unknown: the server answers the call with NOT_FOUND, as health.proto
 * says. Watch (server streaming) is not handled here.
 *
 * Errors are negative APS_E* codes from apsd/engine.h. Thread-safe.
 */
#ifndef APSD_SERVICE_HEALTH_H
#define APSD_SERVICE_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Answers one serialized HealthCheckRequest with a serialized
 * HealthCheckResponse {status: SERVING (serving != 0) or NOT_SERVING}.
 *
 * @param resp receives a malloc'd buffer the caller frees (non-NULL even
 *             when *resp_len is 0); NULL on failure.
 * @return 0; APS_ENOENT for an unknown service name (-> NOT_FOUND);
 *         APS_EINVAL if `req` does not decode (-> INVALID_ARGUMENT);
 *         APS_ENOMEM.
 */
int aps_health_check(const uint8_t *req, size_t len, int serving, uint8_t **resp, size_t *resp_len);

#ifdef __cplusplus
}
#endif

#endif /* APSD_SERVICE_HEALTH_H */
