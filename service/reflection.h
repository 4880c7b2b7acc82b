/**
 * @file reflection.h
 * @brief gRPC server reflection (grpc.reflection.v1 and v1alpha) over an
 *        embedded FileDescriptorSet, as pure bytes-in / bytes-out handlers.
 *
 * The server registers both method paths
 *   /grpc.reflection.v1.ServerReflection/ServerReflectionInfo
 *   /grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo
 * (bidi streaming, GRPC_SRM_PAYLOAD_NONE), creates one aps_refl_stream per
 * call, passes every received message to aps_refl_handle() and sends the
 * bytes it returns. The two versions are wire-identical, so one code path
 * serves both. When the client half-closes, the server sends status OK.
 *
 * Answers follow grpc's doc/server-reflection.md and the reference servers
 * (C++ proto_server_reflection.cc, Go reflection/internal):
 * - file_by_filename, file_containing_symbol, file_containing_extension:
 *   file_descriptor_response with the requested file first (even if it was
 *   sent before on this stream), then its transitive imports not yet sent
 *   on this stream, breadth-first; each file at most once per response.
 *   The bytes are exactly protoc's serialization of each file.
 * - all_extension_numbers_of_type: the numbers of the extensions of that
 *   message type in the set, ascending (empty for proto3 types).
 * - list_services: every service in the set, sorted by full name.
 * - unknown file, symbol, extension or type: error_response NOT_FOUND (5)
 *   with a message; a request with no (or an unknown) kind: error_response
 *   UNIMPLEMENTED (12), as C++ does. The stream continues after both.
 * - valid_host echoes `host`, original_request echoes the request.
 *
 * Symbols indexed: messages and enums (top-level and nested), services,
 * methods (`apsd.v1.Scheduler.AddJob`), fields and extensions
 * (`apsd.v1.Job.id`). Enum values are not. A leading '.' is accepted.
 *
 * Thread safety: an aps_refl is immutable after aps_refl_create() and may
 * be shared by any number of threads and streams. An aps_refl_stream is
 * owned by one call; calls on one stream must not run concurrently (gRPC's
 * one-read-outstanding rule already serialises them).
 *
 * Errors are negative APS_E* codes from apsd/engine.h.
 */
#ifndef APSD_SERVICE_REFLECTION_H
#define APSD_SERVICE_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** gRPC status codes used in error_response (grpc/status.h values). */
#define APS_REFL_NOT_FOUND 5
#define APS_REFL_UNIMPLEMENTED 12

/** The index of one FileDescriptorSet; immutable, shareable. */
typedef struct aps_refl aps_refl;

/**
 * Indexes a serialized google.protobuf.FileDescriptorSet (e.g. aps_fdset
 * from apsd_fdset.h). The bytes are copied: `fdset` may be freed after the
 * call. Files repeated by name (concatenated sets) are kept once, the first.
 *
 * @param fdset the set; each `file` (field 1) must parse as a
 *              FileDescriptorProto with a name.
 * @param out   receives the index; NULL on failure.
 * @return 0; APS_EINVAL (fdset does not parse, a file has no name, or a
 *         file or symbol name is not UTF-8);
 *         APS_ENOENT (a file imports a file that is not in the set, so
 *         reflection could not answer for it); APS_ENOMEM.
 */
int aps_refl_create(const unsigned char *fdset, size_t len, aps_refl **out);

/** Frees the index (NULL is fine). All its streams must be freed first. */
void aps_refl_destroy(aps_refl *r);

/** One reflection call's state: which files it has sent already. */
typedef struct aps_refl_stream aps_refl_stream;

/**
 * Starts a stream on `r` (which must outlive it).
 * @return 0, or APS_ENOMEM (*out is then NULL).
 */
int aps_refl_stream_new(const aps_refl *r, aps_refl_stream **out);

/** Frees a stream (NULL is fine). */
void aps_refl_stream_free(aps_refl_stream *st);

/**
 * Answers one serialized ServerReflectionRequest (v1 or v1alpha) with one
 * serialized ServerReflectionResponse.
 *
 * @param resp     receives a malloc'd buffer the caller frees (free());
 *                 non-NULL even when *resp_len is 0. NULL on failure.
 * @return 0 (also for in-band errors: NOT_FOUND, UNIMPLEMENTED);
 *         APS_EINVAL if `req` does not decode (the server then ends the
 *         call with INVALID_ARGUMENT); APS_ENOMEM. On failure the stream's
 *         state is unchanged.
 */
int aps_refl_handle(aps_refl_stream *st, const uint8_t *req, size_t req_len, uint8_t **resp,
                    size_t *resp_len);

/** Number of distinct files in the index (for logs and tests). */
size_t aps_refl_file_count(const aps_refl *r);

#ifdef __cplusplus
}
#endif

#endif /* APSD_SERVICE_REFLECTION_H */
