/**
 * @file apsd_fdset.h
 * @brief The API's serialized FileDescriptorSet, embedded at build time.
 *
 * Holds apsd/v1/{scheduler,workers}.proto, grpc/health/v1/health.proto,
 * grpc/reflection/{v1,v1alpha}/reflection.proto and every file they import
 * (protoc --include_imports --include_source_info), for the reflection
 * service.
 */
#ifndef APSD_FDSET_H
#define APSD_FDSET_H

#include <stddef.h>

/** The serialized google.protobuf.FileDescriptorSet; static storage. */
extern const unsigned char aps_fdset[];
/** Its length in bytes. */
extern const size_t aps_fdset_len;

#endif /* APSD_FDSET_H */
