/**
 * @file codec.h
 * @brief A little-endian byte writer and a bounds-checked reader (internal),
 *        used by the record and event codec, and the allocation wrappers of
 *        the job module.
 *
 * Both keep a sticky error: after the first failure every call is a no-op
 * and the caller checks once at the end. Why: the encoders and decoders are
 * long straight-line sequences; a check after each field would hide them.
 */
#ifndef APSD_ENGINE_CODEC_H
#define APSD_ENGINE_CODEC_H

#include <stddef.h>
#include <stdint.h>

/** Length prefix that marks a NULL string or blob. */
#define APS__CODEC_NULL UINT32_MAX

/** A growable output buffer. Zero-initialize, then write. */
typedef struct aps__wbuf {
    unsigned char *p;
    size_t len, cap;
    int rc; /**< 0, or the first error (APS_ENOMEM, APS_EINVAL) */
    /** Nonzero: integers, counts and lengths as varints (job records V4,
     *  codec.c); zero-initialized: fixed little-endian widths. */
    int varint;
} aps__wbuf;

/** A bounded input cursor. */
typedef struct aps__rbuf {
    const unsigned char *p;
    size_t len, pos;
    int rc; /**< 0, or the first error (APS_ECORRUPT, APS_ENOMEM) */
    /** As aps__wbuf's: the layout being read. */
    int varint;
} aps__rbuf;

/** Appends one byte. */
void aps__w_u8(aps__wbuf *w, uint8_t v);
/** Appends a little-endian 32-bit value. */
void aps__w_u32(aps__wbuf *w, uint32_t v);
/** Appends a little-endian 64-bit value. */
void aps__w_u64(aps__wbuf *w, uint64_t v);
/** Appends a signed 64-bit value (two's complement). */
void aps__w_i64(aps__wbuf *w, int64_t v);
/** Appends a signed 32-bit value (two's complement). */
void aps__w_i32(aps__wbuf *w, int32_t v);
/** Appends a blob: u32 length then the bytes; NULL or empty is written as
 * APS__CODEC_NULL (one encoding per value). NULL with n > 0 fails (APS_EINVAL). */
void aps__w_blob(aps__wbuf *w, const void *p, size_t n);
/** Appends n bytes as they are, no length before them (an arena of
 *  records whose offsets the caller keeps). */
void aps__w_raw(aps__wbuf *w, const void *p, size_t n);
/** Appends a string that may be NULL. */
void aps__w_str(aps__wbuf *w, const char *s);
/** Appends a string that must not be NULL (else the writer fails, APS_EINVAL). */
void aps__w_str_req(aps__wbuf *w, const char *s);
/** Marks the writer failed with `rc` (keeps an earlier error). */
void aps__w_fail(aps__wbuf *w, int rc);

/** Reads one byte (0 after an error). */
uint8_t aps__r_u8(aps__rbuf *r);
/** Reads a byte that must be 0 or 1. */
int aps__r_bool(aps__rbuf *r);
/** Reads a little-endian 32-bit value. */
uint32_t aps__r_u32(aps__rbuf *r);
/** Reads a little-endian 64-bit value. */
uint64_t aps__r_u64(aps__rbuf *r);
/** Reads a signed 64-bit value. */
int64_t aps__r_i64(aps__rbuf *r);
/** Reads a signed 32-bit value. */
int32_t aps__r_i32(aps__rbuf *r);
/**
 * Reads a count of elements that each take at least `min_size` encoded
 * bytes; a count the remaining input cannot hold is corrupt. Why: a forged
 * count must never make the decoder allocate more than the input justifies.
 */
size_t aps__r_count(aps__rbuf *r, size_t min_size);
/**
 * Reads a string: malloc'd and NUL-terminated, NULL for the NULL marker
 * (check r->rc to tell it from an error). Embedded NULs are corrupt.
 */
char *aps__r_str(aps__rbuf *r);
/** Reads a string that must not be the NULL marker. */
char *aps__r_str_req(aps__rbuf *r);
/** Reads a string into a fixed buffer of `cap` bytes (NUL included); NULL marker is corrupt. */
void aps__r_str_fixed(aps__rbuf *r, char *dst, size_t cap);
/** Reads a blob: malloc'd, NULL for the NULL marker; an empty one is corrupt
 * (the writer of this codec stores empty blobs as NULL). */
void *aps__r_blob(aps__rbuf *r, size_t *n);
/** Marks the reader failed with `rc` (keeps an earlier error). */
void aps__r_fail(aps__rbuf *r, int rc);

/* Allocation wrappers of job.c and codec.c (see aps__job_alloc_fail_at). */
void *aps__jmalloc(size_t n);
void *aps__jcalloc(size_t n, size_t size);
void *aps__jrealloc(void *p, size_t n);
/** strdup through the hook; NULL stays NULL (check the source to tell). */
char *aps__jstrdup(const char *s);

#endif /* APSD_ENGINE_CODEC_H */
