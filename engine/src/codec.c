/*
 * codec.c: the binary formats of job records and events in the store.
 *
 * Layout: a format byte (APS__JOBREC_FORMAT_V4, APS__EVENT_FORMAT_V3), then
 * fields in a fixed order. Events up to V2 and job records up to V3: integers
 * little-endian, strings and blobs as a u32 length (APS__CODEC_NULL =
 * absent) and the bytes, arrays as a u32 count and the elements. Job
 * records V4 and events V3 (the writer's and reader's `varint`): the same
 * fields, each integer a base-128 varint, low group first, in its shortest form; signed
 * ones zigzag-mapped plus one (mod 2^64), so that 0, small values of either
 * sign and APS_TIME_NONE (INT64_MIN) take one byte; a length or count as
 * such a varint, a string's length plus one (0 = absent); a required
 * string with its usual value (a name that is the job's id, an executor or
 * store "default") absent; a run id of 32 lowercase hex digits packed into
 * 16 bytes (RUN_ID_PACKED; w_run_id_str in events). A record's lateness
 * samples are zigzag varints (V3 on). No field tags: a new field means a
 * new format byte, and the decoder of the old one stays (V1 to V3 records,
 * V1 and V2 events decode).
 *
 * Why not protobuf: the engine has no protobuf dependency (DESIGN.md), and
 * a record holds engine-only state (running and pending runs, the lateness
 * ring) that the API never shows.
 *
 * The decoder trusts nothing: every read is bounds-checked, counts are
 * capped by the bytes left (so a forged count cannot make it allocate more
 * than the input justifies), trigger nesting by APS__CODEC_MAX_DEPTH,
 * enums by their ranges, and the record must end exactly at the last byte.
 */
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "codec.h"
#include "job.h"

/* ------------------------------------------------------------------ */
/* Writer                                                               */
/* ------------------------------------------------------------------ */

void
aps__w_fail(aps__wbuf *w, int rc)
{
    if (!w->rc)
        w->rc = rc;
}

/* Reserves n bytes at the end when they do not fit; NULL after an error. */
static unsigned char *
w_grow_slow(aps__wbuf *w, size_t n)
{
    unsigned char *p;
    size_t cap;

    if (w->rc)
        return NULL;
    if (n > SIZE_MAX / 2 - w->len) {
        aps__w_fail(w, APS_ENOMEM);
        return NULL;
    }
    cap = w->cap ? w->cap : 256;
    while (cap < w->len + n)
        cap *= 2;
    p = aps__jrealloc(w->p, cap);
    if (!p) {
        aps__w_fail(w, APS_ENOMEM);
        return NULL;
    }
    w->p = p;
    w->cap = cap;
    p = w->p + w->len;
    w->len += n;
    return p;
}

/* Reserves n bytes at the end; NULL after an error. Inline: the encoders
 * call it once per field (a record has hundreds), and a call per byte
 * written was a tenth of the scheduler loop. */
static inline unsigned char *
w_grow(aps__wbuf *w, size_t n)
{
    unsigned char *p;

    if (w->rc == 0 && w->p && w->cap - w->len >= n) {
        p = w->p + w->len;
        w->len += n;
        return p;
    }
    return w_grow_slow(w, n);
}

static inline void
put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void
put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

/* v zigzag-mapped (small magnitudes of either sign give small numbers),
 * then as a base-128 varint, low group first: 1 to 5 bytes at p. */
static inline size_t
put_zigzag32(unsigned char *p, int32_t v)
{
    uint32_t u = ((uint32_t)v << 1) ^ (v < 0 ? UINT32_MAX : 0);
    size_t n = 0;

    while (u >= 0x80) {
        p[n++] = (unsigned char)(u | 0x80);
        u >>= 7;
    }
    p[n++] = (unsigned char)u;
    return n;
}

/* u as a varint (V4 records). */
static inline void
w_varint(aps__wbuf *w, uint64_t u)
{
    unsigned char *p = w_grow(w, 10);
    size_t n = 0;

    if (!p)
        return;
    while (u >= 0x80) {
        p[n++] = (unsigned char)(u | 0x80);
        u >>= 7;
    }
    p[n++] = (unsigned char)u;
    w->len -= 10 - n;
}

/* A signed value for w_varint: zigzag, plus one (INT64_MIN wraps to 0). */
static inline uint64_t
zigzag64(int64_t v)
{
    uint64_t u;

    memcpy(&u, &v, sizeof u);
    return ((u << 1) ^ (v < 0 ? UINT64_MAX : 0)) + 1;
}

static inline void
w_u8(aps__wbuf *w, uint8_t v)
{
    unsigned char *p = w_grow(w, 1);

    if (p)
        p[0] = v;
}

static inline void
w_u32(aps__wbuf *w, uint32_t v)
{
    if (w->varint) {
        w_varint(w, v);
        return;
    }
    unsigned char *p = w_grow(w, 4);

    if (p)
        put_u32(p, v);
}

static inline void
w_u64(aps__wbuf *w, uint64_t v)
{
    if (w->varint) {
        w_varint(w, v);
        return;
    }
    unsigned char *p = w_grow(w, 8);

    if (p)
        put_u64(p, v);
}

static inline void
w_i64(aps__wbuf *w, int64_t v)
{
    if (w->varint)
        w_varint(w, zigzag64(v));
    else
        w_u64(w, (uint64_t)v);
}

static inline void
w_i32(aps__wbuf *w, int32_t v)
{
    if (w->varint)
        w_varint(w, zigzag64(v));
    else
        w_u32(w, (uint32_t)v);
}

void
aps__w_u8(aps__wbuf *w, uint8_t v)
{
    w_u8(w, v);
}

void
aps__w_u32(aps__wbuf *w, uint32_t v)
{
    w_u32(w, v);
}

void
aps__w_u64(aps__wbuf *w, uint64_t v)
{
    w_u64(w, v);
}

void
aps__w_i64(aps__wbuf *w, int64_t v)
{
    w_i64(w, v);
}

void
aps__w_i32(aps__wbuf *w, int32_t v)
{
    w_i32(w, v);
}

/* Length-prefixed bytes; p NULL = the NULL marker. */
static void
w_bytes(aps__wbuf *w, const void *p, size_t n)
{
    unsigned char *d;

    if (!p) {
        if (n)
            aps__w_fail(w, APS_EINVAL);
        w_u32(w, w->varint ? 0 : APS__CODEC_NULL);
        return;
    }
    if (n >= APS__CODEC_NULL) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    if (w->varint) {
        w_varint(w, (uint64_t)n + 1);
        d = w_grow(w, n);
        if (d && n)
            memcpy(d, p, n);
        return;
    }
    d = w_grow(w, 4 + n);
    if (d) {
        put_u32(d, (uint32_t)n);
        if (n)
            memcpy(d + 4, p, n);
    }
}

void
aps__w_blob(aps__wbuf *w, const void *p, size_t n)
{
    /* One encoding per value: an empty blob is written as absent. */
    w_bytes(w, n ? p : NULL, n);
}

void
aps__w_raw(aps__wbuf *w, const void *p, size_t n)
{
    unsigned char *d = n > 0 ? w_grow(w, n) : NULL;

    if (d)
        memcpy(d, p, n);
}

void
aps__w_str(aps__wbuf *w, const char *s)
{
    w_bytes(w, s, s ? strlen(s) : 0);
}

void
aps__w_str_req(aps__wbuf *w, const char *s)
{
    if (!s)
        aps__w_fail(w, APS_EINVAL);
    aps__w_str(w, s);
}

/* A fixed-size char array: bounded by its size even if unterminated. */
static void
w_str_fixed(aps__wbuf *w, const char *s, size_t cap)
{
    w_bytes(w, s, strnlen(s, cap - 1));
}

/* Ends a one-shot encode (aps__*_encode): the bytes go to the caller, or
 * are freed on error; the out-parameters are NULL/0 unless it succeeded. */
static int
w_take(aps__wbuf *w, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (w->rc) {
        free(w->p);
        return w->rc;
    }
    *buf = w->p;
    *len = w->len;
    return 0;
}

/* Starts an encode into a reused writer (aps__*_encode_into): its bytes
 * and error go, its buffer stays. */
static inline void
w_reset(aps__wbuf *w)
{
    w->len = 0;
    w->rc = 0;
    w->varint = 0;
}

/* An array's count. A count without its array, or one the format cannot
 * hold, fails the writer (which then writes nothing more, so the elements
 * are not reached). */
static inline void
w_count(aps__wbuf *w, const void *v, size_t n)
{
    if ((n && !v) || n > UINT32_MAX)
        aps__w_fail(w, APS_EINVAL);
    w_u32(w, (uint32_t)n);
}

/* ------------------------------------------------------------------ */
/* Reader                                                               */
/* ------------------------------------------------------------------ */

void
aps__r_fail(aps__rbuf *r, int rc)
{
    if (!r->rc)
        r->rc = rc;
}

/* The next n bytes, or NULL (and corrupt) if fewer remain. */
static inline const unsigned char *
r_take(aps__rbuf *r, size_t n)
{
    const unsigned char *p;

    if (r->rc)
        return NULL;
    if (n > r->len - r->pos) {
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    p = r->p + r->pos;
    r->pos += n;
    return p;
}

static inline uint32_t
get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Two's complement on every platform apsd targets; memcpy avoids the
 * implementation-defined conversion of values above INT64_MAX. */
static inline int64_t
as_i64(uint64_t u)
{
    int64_t v;

    memcpy(&v, &u, sizeof v);
    return v;
}

/* Inline readers for the decoders below (one call per field). */
static inline uint8_t
r_u8(aps__rbuf *r)
{
    const unsigned char *p = r_take(r, 1);

    return p ? p[0] : 0;
}

/* A w_varint value. Corrupt: cut short, more than 64 bits, or not the
 * shortest form (a last group of 0 after the first), which the writer never
 * makes: a record's bytes stay the one encoding of what it holds. */
static uint64_t
r_varint(aps__rbuf *r)
{
    const unsigned char *p;
    uint64_t u = 0;
    size_t n;

    for (n = 0; n < 10; n++) {
        if ((p = r_take(r, 1)) == NULL)
            return 0;
        if (n == 9 && *p > 0x01)
            break;
        u |= (uint64_t)(*p & 0x7f) << (7 * n);
        if (!(*p & 0x80)) {
            if (n > 0 && *p == 0)
                break;
            return u;
        }
    }
    aps__r_fail(r, APS_ECORRUPT);
    return 0;
}

/* The inverse of zigzag64. */
static inline int64_t
unzigzag64(uint64_t u)
{
    u -= 1;
    return as_i64((u >> 1) ^ (0 - (u & 1)));
}

static inline uint32_t
r_u32(aps__rbuf *r)
{
    if (r->varint) {
        uint64_t u = r_varint(r);
        if (u > UINT32_MAX) {
            aps__r_fail(r, APS_ECORRUPT);
            return 0;
        }
        return (uint32_t)u;
    }
    const unsigned char *p = r_take(r, 4);

    return p ? get_u32(p) : 0;
}

/* A put_zigzag32 value: a varint (r_varint's rules) of at most 32 bits. */
static int32_t
r_zigzag32(aps__rbuf *r)
{
    uint64_t u = r_varint(r);
    uint32_t x;
    int32_t v;

    if (r->rc)
        return 0;
    if (u > UINT32_MAX) {
        aps__r_fail(r, APS_ECORRUPT);
        return 0;
    }
    x = (uint32_t)u;
    x = (x >> 1) ^ (0u - (x & 1));
    memcpy(&v, &x, sizeof v);
    return v;
}

static inline uint64_t
r_u64(aps__rbuf *r)
{
    if (r->varint)
        return r_varint(r);
    const unsigned char *p = r_take(r, 8);

    return p ? get_u64(p) : 0;
}

static inline int64_t
r_i64(aps__rbuf *r)
{
    if (r->varint) {
        uint64_t u = r_varint(r);
        return r->rc ? 0 : unzigzag64(u);
    }
    return as_i64(r_u64(r));
}

static inline int32_t
r_i32(aps__rbuf *r)
{
    if (r->varint) {
        int64_t v = r_i64(r);
        if (v < INT32_MIN || v > INT32_MAX) {
            aps__r_fail(r, APS_ECORRUPT);
            return 0;
        }
        return (int32_t)v;
    }
    uint32_t u = r_u32(r);
    int32_t v;

    memcpy(&v, &u, sizeof v);
    return v;
}

/* The exported readers are the inline ones (one definition of each
 * layout). */
uint8_t
aps__r_u8(aps__rbuf *r)
{
    return r_u8(r);
}

int
aps__r_bool(aps__rbuf *r)
{
    uint8_t v = r_u8(r);

    if (v > 1) {
        aps__r_fail(r, APS_ECORRUPT);
        return 0;
    }
    return v;
}

uint32_t
aps__r_u32(aps__rbuf *r)
{
    return r_u32(r);
}

uint64_t
aps__r_u64(aps__rbuf *r)
{
    return r_u64(r);
}

int64_t
aps__r_i64(aps__rbuf *r)
{
    return r_i64(r);
}

int32_t
aps__r_i32(aps__rbuf *r)
{
    return r_i32(r);
}

size_t
aps__r_count(aps__rbuf *r, size_t min_size)
{
    uint32_t n = r_u32(r);

    if (r->rc)
        return 0;
    if (min_size == 0)
        min_size = 1;
    if (n > (r->len - r->pos) / min_size) {
        aps__r_fail(r, APS_ECORRUPT);
        return 0;
    }
    return n;
}

/* A blob's bytes in place: *p NULL for the NULL marker. 0 or -1. */
static int
r_span(aps__rbuf *r, const unsigned char **p, size_t *n)
{
    uint32_t len = r_u32(r);

    *p = NULL;
    *n = 0;
    if (r->rc)
        return -1;
    if (r->varint) {
        if (len == 0)
            return 0;
        len--;
    } else if (len == APS__CODEC_NULL) {
        return 0;
    }
    *p = r_take(r, len);
    if (!*p)
        return -1;
    *n = len;
    return 0;
}

/* A record decoder: the reader, and the record's block that its strings
 * and structs are carved from while they fit (see aps__jobrec_decode). */
typedef struct rdec {
    aps__rbuf r;
    unsigned char *arena; /* NULL: everything allocated on its own */
    size_t cap, used;
} rdec;

/* n bytes for the decoder, aligned to `align` (a power of two), zeroed
 * when asked: from the arena of d (may be NULL) while they fit, else
 * allocated. */
static void *
r_alloc(rdec *d, size_t n, size_t align, int zero)
{
    if (d && d->arena) {
        size_t at = (d->used + align - 1) & ~(align - 1);

        if (at <= d->cap && n <= d->cap - at) {
            d->used = at + n;
            if (zero)
                memset(d->arena + at, 0, n);
            return d->arena + at;
        }
    }
    return zero ? aps__jcalloc(1, n) : aps__jmalloc(n);
}

/*
 * Reads an array's count (elements of at least `min_size` encoded bytes)
 * and allocates the elements zeroed, `size` bytes each: in the record's
 * block when `in_block`, else on their own (running and pending: job.h).
 * NULL and *n = 0 for an empty array or an error. *n is set only once the
 * array exists, so a record that fails while its elements are read frees
 * cleanly.
 */
static inline void *
r_array(rdec *d, const size_t min_size[2], size_t size, int in_block, size_t *n)
{
    size_t count = aps__r_count(&d->r, min_size[d->r.varint ? 1 : 0]);
    void *v = NULL;

    *n = 0;
    if (d->r.rc || count == 0)
        return NULL;
    if (count <= SIZE_MAX / size)
        v = in_block ? r_alloc(d, count * size, 8, 1) : aps__jcalloc(count, size);
    if (!v) {
        aps__r_fail(&d->r, APS_ENOMEM);
        return NULL;
    }
    *n = count;
    return v;
}

/* The n bytes at p as a string, into d's block (d may be NULL). */
static char *
r_str_copy(aps__rbuf *r, rdec *d, const unsigned char *p, size_t n)
{
    char *s;

    if (memchr(p, '\0', n)) {
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    s = r_alloc(d, n + 1, 1, 0);
    if (!s) {
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static char *
r_str_in(aps__rbuf *r, rdec *d)
{
    const unsigned char *p;
    size_t n;

    if (r_span(r, &p, &n) || !p)
        return NULL;
    return r_str_copy(r, d, p, n);
}

/* A string that must be there: the NULL marker is corrupt. */
static char *
r_str_req_in(aps__rbuf *r, rdec *d)
{
    char *s = r_str_in(r, d);

    if (!s)
        aps__r_fail(r, APS_ECORRUPT);
    return s;
}

char *
aps__r_str(aps__rbuf *r)
{
    return r_str_in(r, NULL);
}

char *
aps__r_str_req(aps__rbuf *r)
{
    return r_str_req_in(r, NULL);
}

/* Record strings: into the record's block. */
static char *
d_str(rdec *d)
{
    return r_str_in(&d->r, d);
}

static char *
d_str_req(rdec *d)
{
    return r_str_req_in(&d->r, d);
}

/* V4 records leave out a required string that has its usual value (a
 * job's name that is its id, an executor or store named "default"): the
 * absent marker stands for it, and the value itself written out is not the
 * one encoding (corrupt). Fixed widths: as d_str_req. */
#define USUAL_NAME "default"

static void
w_str_usual(aps__wbuf *w, const char *s, const char *usual)
{
    if (w->varint && s && usual && strcmp(s, usual) == 0)
        w_bytes(w, NULL, 0);
    else
        aps__w_str_req(w, s);
}

/* r_span, where `usual` (if not NULL) stands for an absent value, and is
 * corrupt written out. */
static int
r_span_usual(aps__rbuf *r, const char *usual, const unsigned char **p, size_t *n)
{
    if (r_span(r, p, n))
        return -1;
    if (!usual)
        return 0;
    size_t un = strlen(usual);
    if (!*p) {
        *p = (const unsigned char *)usual;
        *n = un;
    } else if (*n == un && memcmp(*p, usual, un) == 0) {
        aps__r_fail(r, APS_ECORRUPT);
        return -1;
    }
    return 0;
}

static char *
d_str_usual(rdec *d, const char *usual)
{
    const unsigned char *p;
    size_t n;

    /* No usual: fixed widths, or the id it stands for did not decode. */
    if (!d->r.varint || !usual)
        return d_str_req(d);
    if (r_span_usual(&d->r, usual, &p, &n))
        return NULL;
    return r_str_copy(&d->r, d, p, n);
}

/* A fixed char array's counterpart (running runs' executors). */
static void
w_str_fixed_usual(aps__wbuf *w, const char *s, size_t cap, const char *usual)
{
    if (w->varint && strcmp(s, usual) == 0)
        w_bytes(w, NULL, 0);
    else
        w_str_fixed(w, s, cap);
}

/* A fixed char array (aps__r_str_fixed), `usual` as in r_span_usual. */
static void
r_str_fixed_in(aps__rbuf *r, char *dst, size_t cap, const char *usual)
{
    const unsigned char *p;
    size_t n;

    dst[0] = '\0';
    if (r_span_usual(r, usual, &p, &n))
        return;
    if (!p || n >= cap || memchr(p, '\0', n)) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
}

static void
r_str_fixed_usual(aps__rbuf *r, char *dst, size_t cap, const char *usual)
{
    r_str_fixed_in(r, dst, cap, r->varint ? usual : NULL);
}

/* V4: a run id of 32 lowercase hex digits (as the engine makes them) is
 * this length code, then its 16 bytes; any other run id is a string (its
 * length code at most 33: run ids fit 33 bytes with their NUL). */
#define RUN_ID_PACKED 34
#define RUN_ID_HEX 32

static int
is_hex32(const char *s)
{
    for (size_t i = 0; i < RUN_ID_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[RUN_ID_HEX] == '\0';
}

static int
hex_val(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

/* The 16 bytes of an is_hex32 run id, after its code. */
static void
w_hex_packed(aps__wbuf *w, uint64_t code, const char *s)
{
    unsigned char *p;

    w_varint(w, code);
    if ((p = w_grow(w, RUN_ID_HEX / 2)) == NULL)
        return;
    for (size_t i = 0; i < RUN_ID_HEX / 2; i++)
        p[i] = (unsigned char)(hex_val(s[2 * i]) << 4 | hex_val(s[2 * i + 1]));
}

/* Reads w_hex_packed's bytes (after the code) into dst[33]. */
static void
r_hex_packed(aps__rbuf *r, char *dst)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p;

    if ((p = r_take(r, RUN_ID_HEX / 2)) == NULL)
        return;
    for (size_t i = 0; i < RUN_ID_HEX / 2; i++) {
        dst[2 * i] = digits[p[i] >> 4];
        dst[2 * i + 1] = digits[p[i] & 0x0f];
    }
    dst[RUN_ID_HEX] = '\0';
}

static void
w_run_id(aps__wbuf *w, const char *s, size_t cap)
{
    if (!w->varint || cap <= RUN_ID_HEX || !is_hex32(s))
        w_str_fixed(w, s, cap);
    else
        w_hex_packed(w, RUN_ID_PACKED, s);
}

static void
r_run_id(aps__rbuf *r, char *dst, size_t cap)
{
    size_t pos = r->pos;

    if (!r->varint || cap <= RUN_ID_HEX) {
        aps__r_str_fixed(r, dst, cap);
        return;
    }
    dst[0] = '\0';
    if (r_u32(r) != RUN_ID_PACKED) {
        if (r->rc)
            return;
        r->pos = pos; /* a string: read again, as one */
        aps__r_str_fixed(r, dst, cap);
        if (!r->rc && is_hex32(dst)) /* the packed form's */
            aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    r_hex_packed(r, dst);
}

void
aps__r_str_fixed(aps__rbuf *r, char *dst, size_t cap)
{
    r_str_fixed_in(r, dst, cap, NULL);
}

void *
aps__r_blob(aps__rbuf *r, size_t *n)
{
    const unsigned char *p;
    void *b;

    *n = 0;
    if (r_span(r, &p, n) || !p)
        return NULL;
    if (*n == 0) {
        /* The encoder writes an empty blob as absent; accepting both would
         * give one value two encodings. */
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    b = aps__jmalloc(*n);
    if (!b) {
        *n = 0;
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    memcpy(b, p, *n);
    return b;
}

/* ------------------------------------------------------------------ */
/* Shared pieces                                                        */
/* ------------------------------------------------------------------ */

static void
w_times(aps__wbuf *w, const aps_time *t, size_t n)
{
    size_t i;

    if (n && !t) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    if (n > UINT32_MAX) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    if (w->varint) {
        w_u32(w, (uint32_t)n);
        for (i = 0; i < n; i++)
            w_i64(w, t[i]);
        return;
    }
    unsigned char *p = w_grow(w, 4 + 8 * n);
    if (!p)
        return;
    put_u32(p, (uint32_t)n);
    for (i = 0; i < n; i++)
        put_u64(p + 4 + 8 * i, (uint64_t)t[i]);
}

static aps_time *
r_times(aps__rbuf *r, size_t *n)
{
    size_t count = aps__r_count(r, r->varint ? 1 : 8), i;
    aps_time *t;

    *n = 0;
    if (r->rc || count == 0)
        return NULL;
    t = aps__jmalloc(count * sizeof *t);
    if (!t) {
        aps__r_fail(r, APS_ENOMEM);
        return NULL;
    }
    if (r->varint) {
        for (i = 0; i < count; i++)
            t[i] = r_i64(r);
        if (r->rc) {
            free(t);
            return NULL;
        }
        *n = count;
        return t;
    }
    /* count * 8 bytes are there: aps__r_count checked. */
    const unsigned char *p = r_take(r, count * 8);
    if (!p) {
        free(t);
        return NULL;
    }
    for (i = 0; i < count; i++)
        t[i] = as_i64(get_u64(p + 8 * i));
    *n = count;
    return t;
}

/* Sizes of the smallest encodings, for aps__r_count: with fixed widths,
 * and with varints (V4 records). */
static const size_t MIN_TRIGGER[2] = {9, 2}; /* kind + jitter; a combo adds a count */
static const size_t MIN_STR[2] = {4, 1};
static const size_t MIN_LABEL[2] = {8, 2};
static const size_t MIN_RUN[2] = {4 + 4 + 8 + 4, 4};
static const size_t MIN_PENDING[2] = {4 + 1, 2};

/* ------------------------------------------------------------------ */
/* Triggers                                                             */
/* ------------------------------------------------------------------ */

static void
w_trigger(aps__wbuf *w, const aps_trigger_spec *t, int depth)
{
    size_t i;

    if (depth > APS__CODEC_MAX_DEPTH) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    w_u8(w, (uint8_t)t->kind);
    w_i64(w, t->jitter_us);
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        aps__w_str(w, t->u.cron.year);
        aps__w_str(w, t->u.cron.month);
        aps__w_str(w, t->u.cron.day);
        aps__w_str(w, t->u.cron.week);
        aps__w_str(w, t->u.cron.day_of_week);
        aps__w_str(w, t->u.cron.hour);
        aps__w_str(w, t->u.cron.minute);
        aps__w_str(w, t->u.cron.second);
        aps__w_str(w, t->u.cron.crontab);
        w_i64(w, t->u.cron.start_date);
        w_i64(w, t->u.cron.end_date);
        aps__w_str(w, t->u.cron.timezone);
        break;
    case APS_TRIGGER_INTERVAL:
        w_i64(w, t->u.interval.weeks);
        w_i64(w, t->u.interval.days);
        w_i64(w, t->u.interval.hours);
        w_i64(w, t->u.interval.minutes);
        w_i64(w, t->u.interval.seconds);
        w_i64(w, t->u.interval.microseconds);
        w_i64(w, t->u.interval.start_date);
        w_i64(w, t->u.interval.end_date);
        aps__w_str(w, t->u.interval.timezone);
        break;
    case APS_TRIGGER_DATE:
        w_i64(w, t->u.date.run_date);
        aps__w_str(w, t->u.date.timezone);
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        w_i32(w, t->u.calendar_interval.years);
        w_i32(w, t->u.calendar_interval.months);
        w_i32(w, t->u.calendar_interval.weeks);
        w_i32(w, t->u.calendar_interval.days);
        w_i32(w, t->u.calendar_interval.hour);
        w_i32(w, t->u.calendar_interval.minute);
        w_i32(w, t->u.calendar_interval.second);
        w_i64(w, t->u.calendar_interval.start_date);
        w_i64(w, t->u.calendar_interval.end_date);
        aps__w_str(w, t->u.calendar_interval.timezone);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (t->u.combo.count == 0 || !t->u.combo.triggers || t->u.combo.count > UINT32_MAX) {
            aps__w_fail(w, APS_EINVAL);
            return;
        }
        w_u32(w, (uint32_t)t->u.combo.count);
        for (i = 0; i < t->u.combo.count && !w->rc; i++)
            w_trigger(w, &t->u.combo.triggers[i], depth + 1);
        break;
    default:
        aps__w_fail(w, APS_EINVAL);
        break;
    }
}

/*
 * Decodes one trigger into *t (zeroed by the caller). On error *t holds
 * what was decoded so far, which aps__trigger_spec_free-style clearing
 * handles: the kind is set before any owned field.
 */
static void
r_trigger(rdec *d, aps_trigger_spec *t, int depth)
{
    aps__rbuf *r = &d->r;
    aps_trigger_spec *kids;
    size_t i, n;
    uint8_t kind;

    if (depth > APS__CODEC_MAX_DEPTH) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    kind = r_u8(r);
    t->jitter_us = r_i64(r);
    if (r->rc)
        return;
    if (kind < APS_TRIGGER_CRON || kind > APS_TRIGGER_ANY_OF) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    t->kind = (aps_trigger_kind)kind;
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        t->u.cron.year = d_str(d);
        t->u.cron.month = d_str(d);
        t->u.cron.day = d_str(d);
        t->u.cron.week = d_str(d);
        t->u.cron.day_of_week = d_str(d);
        t->u.cron.hour = d_str(d);
        t->u.cron.minute = d_str(d);
        t->u.cron.second = d_str(d);
        t->u.cron.crontab = d_str(d);
        t->u.cron.start_date = r_i64(r);
        t->u.cron.end_date = r_i64(r);
        t->u.cron.timezone = d_str(d);
        break;
    case APS_TRIGGER_INTERVAL:
        t->u.interval.weeks = r_i64(r);
        t->u.interval.days = r_i64(r);
        t->u.interval.hours = r_i64(r);
        t->u.interval.minutes = r_i64(r);
        t->u.interval.seconds = r_i64(r);
        t->u.interval.microseconds = r_i64(r);
        t->u.interval.start_date = r_i64(r);
        t->u.interval.end_date = r_i64(r);
        t->u.interval.timezone = d_str(d);
        break;
    case APS_TRIGGER_DATE:
        t->u.date.run_date = r_i64(r);
        t->u.date.timezone = d_str(d);
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        t->u.calendar_interval.years = r_i32(r);
        t->u.calendar_interval.months = r_i32(r);
        t->u.calendar_interval.weeks = r_i32(r);
        t->u.calendar_interval.days = r_i32(r);
        t->u.calendar_interval.hour = r_i32(r);
        t->u.calendar_interval.minute = r_i32(r);
        t->u.calendar_interval.second = r_i32(r);
        t->u.calendar_interval.start_date = r_i64(r);
        t->u.calendar_interval.end_date = r_i64(r);
        t->u.calendar_interval.timezone = d_str(d);
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        kids = r_array(d, MIN_TRIGGER, sizeof *kids, 1, &n);
        if (!r->rc && n == 0)
            aps__r_fail(r, APS_ECORRUPT); /* a combination of nothing */
        if (r->rc)
            return;
        t->u.combo.triggers = kids;
        t->u.combo.count = n;
        for (i = 0; i < n && !r->rc; i++)
            r_trigger(d, &kids[i], depth + 1);
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Job records                                                          */
/* ------------------------------------------------------------------ */

static void
w_strv(aps__wbuf *w, char *const *v, size_t n)
{
    size_t i;

    w_count(w, v, n);
    for (i = 0; i < n && !w->rc; i++)
        aps__w_str_req(w, v[i]);
}

static char **
r_strv(rdec *d, size_t *n)
{
    char **v = r_array(d, MIN_STR, sizeof *v, 1, n);
    size_t i;

    for (i = 0; i < *n && !d->r.rc; i++)
        v[i] = d_str_req(d);
    return v;
}

static void
w_target(aps__wbuf *w, const aps_target *t)
{
    w_u8(w, (uint8_t)t->kind);
    switch (t->kind) {
    case APS_TARGET_COMMAND:
        w_strv(w, t->u.command.argv, t->u.command.argc);
        w_strv(w, t->u.command.env, t->u.command.envc);
        aps__w_str(w, t->u.command.cwd);
        w_i64(w, t->u.command.timeout_us);
        w_u32(w, t->u.command.max_output);
        break;
    case APS_TARGET_REMOTE:
        aps__w_str(w, t->u.remote.task);
        aps__w_str(w, t->u.remote.args_json);
        aps__w_str(w, t->u.remote.kwargs_json);
        aps__w_str(w, t->u.remote.queue);
        break;
    case APS_TARGET_FUNCTION:
        aps__w_str(w, t->u.function.name);
        aps__w_str(w, t->u.function.arg);
        break;
    case APS_TARGET_NONE:
        break;
    default:
        aps__w_fail(w, APS_EINVAL);
        break;
    }
}

static void
r_target(rdec *d, aps_target *t)
{
    aps__rbuf *r = &d->r;
    uint8_t kind = r_u8(r);

    if (r->rc)
        return;
    if (kind > APS_TARGET_FUNCTION) {
        aps__r_fail(r, APS_ECORRUPT);
        return;
    }
    t->kind = (aps_target_kind)kind;
    switch (t->kind) {
    case APS_TARGET_COMMAND:
        t->u.command.argv = r_strv(d, &t->u.command.argc);
        t->u.command.env = r_strv(d, &t->u.command.envc);
        t->u.command.cwd = d_str(d);
        t->u.command.timeout_us = r_i64(r);
        t->u.command.max_output = r_u32(r);
        break;
    case APS_TARGET_REMOTE:
        t->u.remote.task = d_str(d);
        t->u.remote.args_json = d_str(d);
        t->u.remote.kwargs_json = d_str(d);
        t->u.remote.queue = d_str(d);
        break;
    case APS_TARGET_FUNCTION:
        t->u.function.name = d_str(d);
        t->u.function.arg = d_str(d);
        break;
    case APS_TARGET_NONE:
        break;
    }
}

/* Writes the record into w (after what w holds), in `format` (V3, V4). */
static void
jobrec_write(const aps__jobrec *rec, uint8_t format, aps__wbuf *w)
{
    const aps_job *j = &rec->job;
    size_t i;

    w_u8(w, format);
    w->varint = format == APS__JOBREC_FORMAT_V4;
    aps__w_str_req(w, j->id);
    w_str_usual(w, j->name, j->id);
    if (!j->trigger)
        aps__w_fail(w, APS_EINVAL);
    else
        w_trigger(w, j->trigger, 0);
    w_target(w, &j->target);
    w_str_usual(w, j->executor, USUAL_NAME);
    w_str_usual(w, j->jobstore, USUAL_NAME);
    w_u8(w, (uint8_t)j->misfire);
    w_i64(w, j->misfire_grace_us);
    w_i32(w, j->coalesce);
    w_i32(w, j->max_instances);
    w_u8(w, (uint8_t)j->overlap);
    w_count(w, j->labels, j->n_labels);
    for (i = 0; i < j->n_labels && !w->rc; i++) {
        aps__w_str_req(w, j->labels[i].key);
        aps__w_str_req(w, j->labels[i].value);
    }
    w_i64(w, j->next_run_time);
    w_u8(w, j->paused ? 1 : 0);
    w_i64(w, j->create_time);
    w_i64(w, j->update_time);
    w_u64(w, j->stats.runs);
    w_u64(w, j->stats.failures);
    w_u64(w, j->stats.misses);
    w_u64(w, j->stats.max_instance_skips);
    w_u64(w, j->stats.coalesced);
    w_run_id(w, j->stats.last_run_id, sizeof j->stats.last_run_id);
    w_i64(w, j->stats.last_run_time);
    w_i32(w, j->stats.last_status);
    w_i32(w, j->stats.last_exit_code);
    w_str_fixed(w, j->stats.last_error, sizeof j->stats.last_error);
    /* Engine-only state. */
    w_count(w, rec->running, rec->n_running);
    for (i = 0; i < rec->n_running && !w->rc; i++) {
        w_run_id(w, rec->running[i].run_id, sizeof rec->running[i].run_id);
        w_str_fixed_usual(w, rec->running[i].executor, sizeof rec->running[i].executor, USUAL_NAME);
        w_i64(w, rec->running[i].started);
        w_times(w, rec->running[i].run_times, rec->running[i].n_run_times);
    }
    w_count(w, rec->pending, rec->n_pending);
    for (i = 0; i < rec->n_pending && !w->rc; i++) {
        w_times(w, rec->pending[i].run_times, rec->pending[i].n_run_times);
        w_u8(w, rec->pending[i].backfill ? 1 : 0);
    }
    if (rec->n_lateness > APS__LATENESS_WINDOW || rec->lateness_pos >= APS__LATENESS_WINDOW ||
        (rec->n_lateness < APS__LATENESS_WINDOW && rec->lateness_pos != rec->n_lateness))
        aps__w_fail(w, APS_EINVAL);
    w_u32(w, rec->n_lateness);
    w_u32(w, rec->lateness_pos);
    if (rec->n_lateness > 0 && !rec->lateness)
        aps__w_fail(w, APS_EINVAL);
    /* V3: each sample as a zigzag varint. A full ring was 512 of a usual
     * record's ~800 bytes in V2 (4 bytes a sample), and the record is
     * written twice per run; on-time samples (under 8 ms) take 2 bytes. */
    if (rec->lateness && rec->n_lateness > 0 && rec->n_lateness <= APS__LATENESS_WINDOW) {
        unsigned char *p = w_grow(w, 5 * (size_t)rec->n_lateness);
        size_t n = 0;
        for (i = 0; p && i < rec->n_lateness; i++)
            n += put_zigzag32(p + n, rec->lateness[i]);
        if (p)
            w->len -= 5 * (size_t)rec->n_lateness - n;
    }
    w->varint = 0;
}

int
aps__jobrec_encode(const aps__jobrec *rec, void **buf, size_t *len)
{
    return aps__jobrec_encode_format(rec, APS__JOBREC_FORMAT_V4, buf, len);
}

int
aps__jobrec_encode_format(const aps__jobrec *rec, uint8_t format, void **buf, size_t *len)
{
    aps__wbuf w = {0};

    *buf = NULL;
    *len = 0;
    if (format != APS__JOBREC_FORMAT_V3 && format != APS__JOBREC_FORMAT_V4)
        return APS_EINVAL;
    jobrec_write(rec, format, &w);
    return w_take(&w, buf, len);
}

int
aps__jobrec_encode_into(const aps__jobrec *rec, aps__wbuf *w)
{
    w_reset(w);
    jobrec_write(rec, APS__JOBREC_FORMAT_V4, w);
    return w->rc;
}

int
aps__jobrec_decode(const void *buf, size_t len, aps__jobrec **out)
{
    rdec d = {{buf, len, 0, 0, 0}, NULL, 0, 0};
    aps__jobrec *rec;
    aps_job *j;
    size_t i;
    uint8_t u;

    *out = NULL;
    if (!buf)
        d.r.len = 0;
    uint8_t version = r_u8(&d.r);
    if (version != APS__JOBREC_FORMAT_V1 && version != APS__JOBREC_FORMAT_V2 &&
        version != APS__JOBREC_FORMAT_V3 && version != APS__JOBREC_FORMAT_V4)
        return APS_ECORRUPT;
    d.r.varint = version == APS__JOBREC_FORMAT_V4;
    /* One block for the record, its trigger, labels and strings where they
     * fit (most records: strings are a small part of `len`). Kept under
     * 1 KB: glibc's malloc consolidates its free lists on every larger
     * allocation. */
    _Static_assert(sizeof(aps__jobrec) + sizeof(aps_trigger_spec) < 900,
                   "a decoded record's block leaves room for its strings under 1000 bytes");
    size_t room = 1000 - sizeof *rec - sizeof(aps_trigger_spec); /* 1000: malloc's small bins */
    size_t cap = sizeof *rec + sizeof(aps_trigger_spec) + (d.r.len < room ? d.r.len : room);
    rec = aps__jmalloc(cap);
    if (!rec)
        return APS_ENOMEM;
    memset(rec, 0, sizeof *rec);
    rec->arena = rec;
    rec->arena_len = cap;
    d.arena = (unsigned char *)rec;
    d.cap = cap;
    d.used = sizeof *rec;
    j = &rec->job;
    j->id = d_str_req(&d);
    j->name = d_str_usual(&d, j->id);
    if (!d.r.rc) {
        j->trigger = r_alloc(&d, sizeof *j->trigger, 8, 1);
        if (!j->trigger)
            aps__r_fail(&d.r, APS_ENOMEM);
        else
            r_trigger(&d, j->trigger, 0);
    }
    r_target(&d, &j->target);
    j->executor = d_str_usual(&d, USUAL_NAME);
    j->jobstore = d_str_usual(&d, USUAL_NAME);
    u = r_u8(&d.r);
    if (u > APS_MISFIRE_UNLIMITED)
        aps__r_fail(&d.r, APS_ECORRUPT);
    j->misfire = (aps_misfire_kind)u;
    j->misfire_grace_us = r_i64(&d.r);
    j->coalesce = r_i32(&d.r);
    if (j->coalesce < -1 || j->coalesce > 1)
        aps__r_fail(&d.r, APS_ECORRUPT);
    j->max_instances = r_i32(&d.r);
    if (j->max_instances < 0)
        aps__r_fail(&d.r, APS_ECORRUPT);
    u = r_u8(&d.r);
    if (u > APS_OVERLAP_CANCEL_RUNNING)
        aps__r_fail(&d.r, APS_ECORRUPT);
    j->overlap = (aps_overlap)u;
    j->labels = r_array(&d, MIN_LABEL, sizeof *j->labels, 1, &j->n_labels);
    for (i = 0; i < j->n_labels && !d.r.rc; i++) {
        j->labels[i].key = d_str_req(&d);
        j->labels[i].value = d_str_req(&d);
    }
    j->next_run_time = r_i64(&d.r);
    j->paused = aps__r_bool(&d.r);
    j->create_time = r_i64(&d.r);
    j->update_time = r_i64(&d.r);
    j->stats.runs = r_u64(&d.r);
    j->stats.failures = r_u64(&d.r);
    j->stats.misses = r_u64(&d.r);
    j->stats.max_instance_skips = r_u64(&d.r);
    j->stats.coalesced = r_u64(&d.r);
    r_run_id(&d.r, j->stats.last_run_id, sizeof j->stats.last_run_id);
    j->stats.last_run_time = r_i64(&d.r);
    j->stats.last_status = r_i32(&d.r);
    j->stats.last_exit_code = r_i32(&d.r);
    aps__r_str_fixed(&d.r, j->stats.last_error, sizeof j->stats.last_error);
    rec->running = r_array(&d, MIN_RUN, sizeof *rec->running, 0, &rec->n_running);
    for (i = 0; i < rec->n_running && !d.r.rc; i++) {
        r_run_id(&d.r, rec->running[i].run_id, sizeof rec->running[i].run_id);
        r_str_fixed_usual(&d.r, rec->running[i].executor, sizeof rec->running[i].executor,
                          USUAL_NAME);
        rec->running[i].started = r_i64(&d.r);
        rec->running[i].run_times = r_times(&d.r, &rec->running[i].n_run_times);
    }
    rec->pending = r_array(&d, MIN_PENDING, sizeof *rec->pending, 0, &rec->n_pending);
    for (i = 0; i < rec->n_pending && !d.r.rc; i++) {
        rec->pending[i].run_times = r_times(&d.r, &rec->pending[i].n_run_times);
        rec->pending[i].backfill = aps__r_bool(&d.r);
    }
    rec->n_lateness = r_u32(&d.r);
    rec->lateness_pos = r_u32(&d.r);
    if (!d.r.rc &&
        (rec->n_lateness > APS__LATENESS_WINDOW || rec->lateness_pos >= APS__LATENESS_WINDOW ||
         (rec->n_lateness < APS__LATENESS_WINDOW && rec->lateness_pos != rec->n_lateness)))
        aps__r_fail(&d.r, APS_ECORRUPT);
    if (rec->n_lateness > 0 && !d.r.rc &&
        (rec->lateness = aps__jcalloc(APS__LATENESS_WINDOW, sizeof *rec->lateness)) == NULL)
        aps__r_fail(&d.r, APS_ENOMEM);
    if (rec->n_lateness > 0 && !d.r.rc && version >= APS__JOBREC_FORMAT_V3) {
        for (i = 0; i < rec->n_lateness && !d.r.rc; i++)
            rec->lateness[i] = r_zigzag32(&d.r);
    } else if (rec->n_lateness > 0 && !d.r.rc && version == APS__JOBREC_FORMAT_V2) {
        const unsigned char *p = r_take(&d.r, 4 * (size_t)rec->n_lateness);
        for (i = 0; p && i < rec->n_lateness; i++) {
            uint32_t u = get_u32(p + 4 * i);
            memcpy(&rec->lateness[i], &u, sizeof(u));
        }
    } else if (rec->n_lateness > 0 && !d.r.rc) {
        const unsigned char *p = r_take(&d.r, 8 * (size_t)rec->n_lateness);
        for (i = 0; p && i < rec->n_lateness; i++) {
            int64_t v = as_i64(get_u64(p + 8 * i));
            if (v != aps__clamp_lateness(v)) { /* never written: samples are int32 */
                aps__r_fail(&d.r, APS_ECORRUPT);
                break;
            }
            rec->lateness[i] = (int32_t)v;
        }
    }
    if (!d.r.rc && d.r.pos != d.r.len)
        aps__r_fail(&d.r, APS_ECORRUPT);
    if (d.r.rc) {
        int rc = d.r.rc;

        /* A half-read record frees cleanly: every count was set only
         * once its (zeroed) array existed. */
        aps__jobrec_free(rec);
        return rc;
    }
    j->running_instances = (uint32_t)rec->n_running;
    j->queued_runs = (uint32_t)rec->n_pending;
    *out = rec;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Events                                                               */
/* ------------------------------------------------------------------ */

/* V3 events: a run id absent (code 0), is_hex32 and packed (code 1, then
 * 16 bytes), or any other string (its length plus 2, then the bytes: an
 * event's run id is not a fixed array, so its length has no bound below
 * RUN_ID_PACKED). */
#define EVENT_RUN_ID_PACKED 1

static void
w_run_id_str(aps__wbuf *w, const char *s)
{
    size_t n;
    unsigned char *d;

    if (!w->varint) {
        aps__w_str(w, s);
        return;
    }
    if (!s) {
        w_varint(w, 0);
        return;
    }
    if (is_hex32(s)) {
        w_hex_packed(w, EVENT_RUN_ID_PACKED, s);
        return;
    }
    n = strlen(s);
    if (n >= APS__CODEC_NULL - 1) {
        aps__w_fail(w, APS_EINVAL);
        return;
    }
    w_varint(w, (uint64_t)n + 2);
    if ((d = w_grow(w, n)) != NULL && n)
        memcpy(d, s, n);
}

static char *
r_run_id_str(aps__rbuf *r)
{
    const unsigned char *p;
    uint32_t code;
    char *s;

    if (!r->varint)
        return aps__r_str(r);
    code = r_u32(r);
    if (r->rc || code == 0)
        return NULL;
    if (code == EVENT_RUN_ID_PACKED) {
        if ((s = aps__jmalloc(RUN_ID_HEX + 1)) == NULL) {
            aps__r_fail(r, APS_ENOMEM);
            return NULL;
        }
        r_hex_packed(r, s);
        if (r->rc) {
            free(s);
            return NULL;
        }
        return s;
    }
    if ((p = r_take(r, code - 2)) == NULL)
        return NULL;
    s = r_str_copy(r, NULL, p, code - 2);
    if (s && is_hex32(s)) { /* the packed form's */
        free(s);
        aps__r_fail(r, APS_ECORRUPT);
        return NULL;
    }
    return s;
}

/* Writes the event into w (after what w holds), in `format` (V2, V3). */
static void
event_write(const aps_event *ev, uint8_t format, aps__wbuf *w)
{
    const aps_outcome *o = ev->outcome;

    w_u8(w, format);
    w->varint = format == APS__EVENT_FORMAT_V3;
    w_u64(w, ev->sequence);
    w_u8(w, (uint8_t)ev->type);
    if (ev->type < APS_EVENT_SCHEDULER_STARTED || ev->type > APS_EVENT_JOB_MAX_INSTANCES)
        aps__w_fail(w, APS_EINVAL);
    w_i64(w, ev->time);
    aps__w_str(w, ev->job_id);
    aps__w_str(w, ev->jobstore);
    aps__w_str(w, ev->executor);
    w_times(w, ev->run_times, ev->n_run_times);
    w_run_id_str(w, ev->run_id);
    w_u8(w, o ? 1 : 0);
    if (o) {
        if (o->status < APS_RUN_NONE || o->status > APS_RUN_INTERRUPTED)
            aps__w_fail(w, APS_EINVAL);
        w_u8(w, (uint8_t)o->status);
        w_u8(w, o->has_exit_code ? 1 : 0);
        w_i32(w, o->exit_code);
        w_i32(w, o->signal);
        aps__w_blob(w, o->stdout_tail, o->stdout_len);
        aps__w_blob(w, o->stderr_tail, o->stderr_len);
        w_u8(w, o->stdout_truncated ? 1 : 0);
        w_u8(w, o->stderr_truncated ? 1 : 0);
        w_i64(w, o->start_time);
        w_i64(w, o->end_time);
        aps__w_str(w, o->error);
        aps__w_str(w, o->traceback);
        aps__w_str(w, o->return_json);
    }
    aps__w_str(w, ev->message);
    if (o) { /* V2 */
        aps__w_str(w, o->error_type);
        aps__w_str(w, o->worker_id);
    }
    w->varint = 0;
}

int
aps__event_encode(const aps_event *ev, void **buf, size_t *len)
{
    return aps__event_encode_format(ev, APS__EVENT_FORMAT_V3, buf, len);
}

int
aps__event_encode_format(const aps_event *ev, uint8_t format, void **buf, size_t *len)
{
    aps__wbuf w = {0};

    *buf = NULL;
    *len = 0;
    if (format != APS__EVENT_FORMAT_V2 && format != APS__EVENT_FORMAT_V3)
        return APS_EINVAL;
    event_write(ev, format, &w);
    return w_take(&w, buf, len);
}

int
aps__event_encode_into(const aps_event *ev, aps__wbuf *w)
{
    w_reset(w);
    event_write(ev, APS__EVENT_FORMAT_V3, w);
    return w->rc;
}

int
aps__event_encode_append(const aps_event *ev, aps__wbuf *w)
{
    event_write(ev, APS__EVENT_FORMAT_V3, w);
    return w->rc;
}

int
aps__event_decode(const void *buf, size_t len, aps_event **out)
{
    aps__rbuf r = {buf, len, 0, 0, 0};
    aps_event *ev;
    aps_outcome *o;
    uint8_t u;
    int rc;

    *out = NULL;
    if (!buf)
        r.len = 0;
    uint8_t version = r_u8(&r);
    if (version != APS__EVENT_FORMAT_V1 && version != APS__EVENT_FORMAT_V2 &&
        version != APS__EVENT_FORMAT_V3)
        return APS_ECORRUPT;
    r.varint = version == APS__EVENT_FORMAT_V3;
    ev = aps__jcalloc(1, sizeof *ev);
    if (!ev)
        return APS_ENOMEM;
    ev->sequence = r_u64(&r);
    u = r_u8(&r);
    if (u < APS_EVENT_SCHEDULER_STARTED || u > APS_EVENT_JOB_MAX_INSTANCES)
        aps__r_fail(&r, APS_ECORRUPT);
    ev->type = (aps_event_type)u;
    ev->time = r_i64(&r);
    ev->job_id = aps__r_str(&r);
    ev->jobstore = aps__r_str(&r);
    ev->executor = aps__r_str(&r);
    ev->run_times = r_times(&r, &ev->n_run_times);
    ev->run_id = r_run_id_str(&r);
    if (aps__r_bool(&r) && !r.rc) {
        o = ev->outcome = aps__jcalloc(1, sizeof *o);
        if (!o) {
            aps__r_fail(&r, APS_ENOMEM);
        } else {
            u = r_u8(&r);
            if (u > APS_RUN_INTERRUPTED)
                aps__r_fail(&r, APS_ECORRUPT);
            o->status = (aps_run_status)u;
            o->has_exit_code = aps__r_bool(&r);
            o->exit_code = r_i32(&r);
            o->signal = r_i32(&r);
            o->stdout_tail = aps__r_blob(&r, &o->stdout_len);
            o->stderr_tail = aps__r_blob(&r, &o->stderr_len);
            o->stdout_truncated = aps__r_bool(&r);
            o->stderr_truncated = aps__r_bool(&r);
            o->start_time = r_i64(&r);
            o->end_time = r_i64(&r);
            o->error = aps__r_str(&r);
            o->traceback = aps__r_str(&r);
            o->return_json = aps__r_str(&r);
        }
    }
    ev->message = aps__r_str(&r);
    if (version >= APS__EVENT_FORMAT_V2 && ev->outcome) {
        ev->outcome->error_type = aps__r_str(&r);
        ev->outcome->worker_id = aps__r_str(&r);
    }
    if (!r.rc && r.pos != r.len)
        aps__r_fail(&r, APS_ECORRUPT);
    if (r.rc) {
        rc = r.rc;
        aps_event_free(ev);
        return rc;
    }
    *out = ev;
    return 0;
}

int
aps__event_peek(const void *buf, size_t len, aps_event_type *type, const char **job_id,
                size_t *job_id_len)
{
    /* The fields before the job id are read in place, so a filter can skip
     * a record without decoding (allocating) it. */
    aps__rbuf r = {buf, buf ? len : 0, 0, 0, 0};
    const unsigned char *p;
    size_t n;

    *job_id = NULL;
    *job_id_len = 0;
    uint8_t version = aps__r_u8(&r);
    if (version != APS__EVENT_FORMAT_V1 && version != APS__EVENT_FORMAT_V2 &&
        version != APS__EVENT_FORMAT_V3)
        return APS_ECORRUPT;
    r.varint = version == APS__EVENT_FORMAT_V3;
    (void)aps__r_u64(&r); /* sequence */
    uint8_t u = aps__r_u8(&r);
    (void)aps__r_i64(&r); /* time */
    if (r_span(&r, &p, &n) != 0 || r.rc || u < APS_EVENT_SCHEDULER_STARTED ||
        u > APS_EVENT_JOB_MAX_INSTANCES)
        return APS_ECORRUPT;
    *type = (aps_event_type)u;
    *job_id = (const char *)p;
    *job_id_len = n;
    return 0;
}
