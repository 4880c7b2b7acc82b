/* protobuf-c <-> engine conversions, JSON <-> google.protobuf.Value, status table. */
#include "service/convert.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/c/src/grpc_status.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "service/pbcheck.h"

#define US_PER_SEC 1000000LL
/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, as google.protobuf.Timestamp allows. */
#define TS_MIN_SECONDS (-62135596800LL)
#define TS_MAX_SECONDS 253402300799LL
/* google.protobuf.Duration's range: +-10000 years. */
#define DUR_MAX_SECONDS 315576000000LL
#define JSON_MAX_DEPTH 64
#define JSON_MAX_BYTES (1u << 20)
#define COMBO_MAX_CHILDREN 64
#define COMBO_MAX_DEPTH 8

/* ---- arena ------------------------------------------------------------------ */

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} chunk;

struct aps_arena {
    chunk *head;
    size_t total, limit;
    ProtobufCAllocator pa;
};

static void *
pa_alloc(void *data, size_t size)
{
    return aps_arena_alloc(data, size ? size : 1);
}

static void
pa_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

aps_arena *
aps_arena_new(size_t limit)
{
    aps_arena *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->limit = limit;
    a->pa.alloc = pa_alloc;
    a->pa.free = pa_free;
    a->pa.allocator_data = a;
    return a;
}

void
aps_arena_free(aps_arena *a)
{
    if (a == NULL)
        return;
    for (chunk *c = a->head, *n; c != NULL; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

void *
aps_arena_alloc(aps_arena *a, size_t n)
{
    if (a == NULL || n > a->limit)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    chunk *c = a->head;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > 8192 ? n : 16384;
        if (a->total + size > a->limit)
            return NULL;
        c = malloc(sizeof(*c) + size);
        if (c == NULL)
            return NULL;
        c->size = size;
        c->used = 0;
        a->total += size;
        if (n > 8192 && a->head != NULL) {
            /* A big block gets a chunk of its own behind the current one, so
             * the current chunk's free space stays usable. */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *
aps_arena_strndup(aps_arena *a, const char *s, size_t n)
{
    if (s == NULL)
        return NULL;
    char *d = aps_arena_alloc(a, n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *
aps_arena_strdup(aps_arena *a, const char *s)
{
    return s == NULL ? NULL : aps_arena_strndup(a, s, strlen(s));
}

char *
aps_arena_printf(aps_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *d = aps_arena_alloc(a, (size_t)n + 1);
    if (d == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

ProtobufCAllocator *
aps_arena_allocator(aps_arena *a)
{
    return &a->pa;
}

/* ---- decoding --------------------------------------------------------------- */

static int
read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* Reads the key of the field at *p and steps over a varint or fixed-size
 * payload; for a length-delimited one (wire type 2) sets *n and leaves *p
 * at its first byte. 0, or -1 when the input ends early or holds a group
 * (not proto3). *key is set as soon as it was read. */
static int
next_field(const uint8_t **p, const uint8_t *end, uint64_t *key, uint64_t *n)
{
    if (read_varint(p, end, key) != 0)
        return -1;
    switch (*key & 7) {
    case 0:
        return read_varint(p, end, n);
    case 1:
    case 5: {
        size_t w = (*key & 7) == 1 ? 8 : 4;
        if ((size_t)(end - *p) < w)
            return -1;
        *p += w;
        *n = 0;
        return 0;
    }
    case 2:
        return read_varint(p, end, n) != 0 || *n > (uint64_t)(end - *p) ? -1 : 0;
    default:
        return -1;
    }
}

/* The descriptor of field `key` of `d` when it is length-delimited, or NULL. */
static const ProtobufCFieldDescriptor *
delimited_field(const ProtobufCMessageDescriptor *d, uint64_t key)
{
    if ((key & 7) != 2 || key >> 3 > UINT32_MAX)
        return NULL;
    return protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
}

/* 1 if every nested message is at most `left` levels deep. Malformed input
 * passes: protobuf-c's unpack rejects it without recursing into it. */
static int
depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, int left)
{
    const uint8_t *end = p + len;
    if (left <= 0)
        return 0;
    while (p < end) {
        uint64_t key, n;
        if (next_field(&p, end, &key, &n) != 0)
            return 1;
        const ProtobufCFieldDescriptor *f = delimited_field(d, key);
        if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE &&
            !depth_ok(f->descriptor, p, (size_t)n, left - 1))
            return 0;
        if ((key & 7) == 2)
            p += n;
    }
    return 1;
}

ProtobufCMessage *
aps_pb_unpack(aps_arena *a, const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
              int max_depth)
{
    if (!depth_ok(desc, data, len, max_depth))
        return NULL;
    return protobuf_c_message_unpack(desc, aps_arena_allocator(a), len, data);
}

/* Walks the wire form like depth_ok (the message already unpacked, so it is
 * well-formed and its depth bounded). Returns 0, or BAD_STRING / BAD_FIELD0
 * with `path` extended by the names down to the offending field. */
enum { BAD_STRING = 1, BAD_FIELD0 = 2 };

static int
wire_check(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, char *path,
           size_t cap)
{
    const uint8_t *end = p + len;
    size_t base = strlen(path);
    while (p < end) {
        uint64_t key = UINT64_MAX, n;
        int rc = next_field(&p, end, &key, &n);
        if (key >> 3 == 0)
            return BAD_FIELD0;
        if (rc != 0)
            return 0;
        const ProtobufCFieldDescriptor *f = delimited_field(d, key);
        if (f != NULL &&
            (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            snprintf(path + base, cap - base, "%s%s", base ? "." : "", f->name);
            rc = f->type == PROTOBUF_C_TYPE_STRING
                     ? (aps__pb_utf8_ok_n(p, (size_t)n) ? 0 : BAD_STRING)
                     : wire_check(f->descriptor, p, (size_t)n, path, cap);
            if (rc != 0)
                return rc;
            path[base] = '\0';
        }
        if ((key & 7) == 2)
            p += n;
    }
    return 0;
}

int
aps_pb_check_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                     char *msg, size_t msglen)
{
    char path[128] = "";
    switch (wire_check(desc, data, len, path, sizeof path)) {
    case 0:
        return 0;
    case BAD_STRING:
        snprintf(msg, msglen, "%s: not valid UTF-8, or holds a NUL byte", path);
        return APS_EINVAL;
    default:
        snprintf(msg, msglen, "%s%sfield number 0 (not valid protobuf)", path, path[0] ? ": " : "");
        return APS_EINVAL;
    }
}

/* ---- status ------------------------------------------------------------------ */

static const struct {
    int rc;
    grpc_status_code code;
} status_table[] = {
    {APS_OK, GRPC_STATUS_OK},
    {APS_EINVAL, GRPC_STATUS_INVALID_ARGUMENT},
    {APS_ENOENT, GRPC_STATUS_NOT_FOUND},
    {APS_EEXIST, GRPC_STATUS_ALREADY_EXISTS},
    {APS_ESTATE, GRPC_STATUS_FAILED_PRECONDITION},
    {APS_ELIMIT, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {APS_ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {APS_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {APS_ERANGE, GRPC_STATUS_OUT_OF_RANGE},
    {APS_EIO, GRPC_STATUS_UNAVAILABLE},
    {APS_EBUSY, GRPC_STATUS_UNAVAILABLE},
    {APS_ECORRUPT, GRPC_STATUS_DATA_LOSS},
};

grpc_status_code
aps_status_of(int rc)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].rc == rc)
            return status_table[i].code;
    return GRPC_STATUS_INTERNAL;
}

const char *
aps_status_name(grpc_status_code code)
{
    const char *name = apsc__grpc_status_name((int)code);

    return name ? name : "UNKNOWN";
}

int
aps_cv_fail(aps_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- time -------------------------------------------------------------------- */

int
aps_ts_to_time(const Google__Protobuf__Timestamp *ts, const char *path, aps_time *out,
               aps_error *err)
{
    if (ts == NULL) {
        *out = APS_TIME_NONE;
        return 0;
    }
    if (ts->seconds < TS_MIN_SECONDS || ts->seconds > TS_MAX_SECONDS)
        return aps_cv_fail(err, APS_EINVAL, "%s: %lld seconds is outside 0001-01-01..9999-12-31",
                           path, (long long)ts->seconds);
    if (ts->nanos < 0 || ts->nanos > 999999999)
        return aps_cv_fail(err, APS_EINVAL, "%s: nanos %d is out of range 0-999999999", path,
                           (int)ts->nanos);
    *out = (aps_time)ts->seconds * US_PER_SEC + ts->nanos / 1000;
    return 0;
}

Google__Protobuf__Timestamp *
aps_ts_from_time(aps_arena *a, aps_time t)
{
    if (t == APS_TIME_NONE)
        return NULL;
    Google__Protobuf__Timestamp *ts =
        APS_PB_NEW(a, Google__Protobuf__Timestamp, GOOGLE__PROTOBUF__TIMESTAMP__INIT);
    if (ts == NULL)
        return NULL;
    int64_t s = t / US_PER_SEC, us = t % US_PER_SEC;
    if (us < 0) {
        s -= 1;
        us += US_PER_SEC;
    }
    ts->seconds = s;
    ts->nanos = (int32_t)(us * 1000);
    return ts;
}

int
aps_dur_to_us(const Google__Protobuf__Duration *d, const char *path, int64_t *out, aps_error *err)
{
    if (d == NULL) {
        *out = 0;
        return 0;
    }
    if (d->seconds < -DUR_MAX_SECONDS || d->seconds > DUR_MAX_SECONDS)
        return aps_cv_fail(err, APS_EINVAL, "%s: %lld seconds is out of range", path,
                           (long long)d->seconds);
    if (d->nanos <= -1000000000 || d->nanos >= 1000000000 || (d->seconds > 0 && d->nanos < 0) ||
        (d->seconds < 0 && d->nanos > 0))
        return aps_cv_fail(err, APS_EINVAL, "%s: nanos %d is invalid", path, (int)d->nanos);
    *out = d->seconds * US_PER_SEC + d->nanos / 1000;
    return 0;
}

Google__Protobuf__Duration *
aps_dur_from_us(aps_arena *a, int64_t us)
{
    Google__Protobuf__Duration *d =
        APS_PB_NEW(a, Google__Protobuf__Duration, GOOGLE__PROTOBUF__DURATION__INIT);
    if (d == NULL)
        return NULL;
    d->seconds = us / US_PER_SEC;
    d->nanos = (int32_t)((us % US_PER_SEC) * 1000); /* same sign as seconds */
    return d;
}

/* ---- JSON out ------------------------------------------------------------------ */

typedef struct jbuf {
    char *p;
    size_t n, cap;
    int rc;
    aps_error *err;
    const char *path;
} jbuf;

static void
jput(jbuf *b, const char *s, size_t n)
{
    if (b->rc != 0)
        return;
    if (b->n + n + 1 > JSON_MAX_BYTES) {
        b->rc = aps_cv_fail(b->err, APS_ELIMIT, "%s: more than %u bytes as JSON", b->path,
                            JSON_MAX_BYTES);
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->rc = aps_cv_fail(b->err, APS_ENOMEM, "%s: out of memory", b->path);
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void
jputs(jbuf *b, const char *s)
{
    jput(b, s, strlen(s));
}

static void
jstr(jbuf *b, const char *s)
{
    jputs(b, "\"");
    const char *run = s;
    for (const char *p = s; p && *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        jput(b, run, (size_t)(p - run));
        char esc[8];
        switch (ch) {
        case '"':
            jputs(b, "\\\"");
            break;
        case '\\':
            jputs(b, "\\\\");
            break;
        case '\n':
            jputs(b, "\\n");
            break;
        case '\r':
            jputs(b, "\\r");
            break;
        case '\t':
            jputs(b, "\\t");
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            jputs(b, esc);
        }
        run = p + 1;
    }
    if (s)
        jputs(b, run);
    jputs(b, "\"");
}

static void jvalue(jbuf *b, const Google__Protobuf__Value *v, int depth);

static void
jlist(jbuf *b, const Google__Protobuf__ListValue *l, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        if (b->rc == 0)
            b->rc = aps_cv_fail(b->err, APS_EINVAL, "%s: nested more than %d levels deep", b->path,
                                JSON_MAX_DEPTH);
        return;
    }
    jputs(b, "[");
    for (size_t i = 0; l != NULL && i < l->n_values; i++) {
        if (i)
            jputs(b, ",");
        jvalue(b, l->values[i], depth + 1);
    }
    jputs(b, "]");
}

static void
jstruct(jbuf *b, const Google__Protobuf__Struct *s, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        if (b->rc == 0)
            b->rc = aps_cv_fail(b->err, APS_EINVAL, "%s: nested more than %d levels deep", b->path,
                                JSON_MAX_DEPTH);
        return;
    }
    jputs(b, "{");
    for (size_t i = 0; s != NULL && i < s->n_fields; i++) {
        if (i)
            jputs(b, ",");
        jstr(b, s->fields[i]->key);
        jputs(b, ":");
        jvalue(b, s->fields[i]->value, depth + 1);
    }
    jputs(b, "}");
}

static void
jvalue(jbuf *b, const Google__Protobuf__Value *v, int depth)
{
    char num[64];
    if (v == NULL) {
        jputs(b, "null");
        return;
    }
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        if (!isfinite(v->number_value)) {
            if (b->rc == 0)
                b->rc = aps_cv_fail(b->err, APS_EINVAL,
                                    "%s: NaN and Infinity are not representable in JSON", b->path);
            return;
        }
        if (v->number_value == floor(v->number_value) && fabs(v->number_value) < 9007199254740992.0)
            snprintf(num, sizeof num, "%.0f", v->number_value);
        else
            snprintf(num, sizeof num, "%.17g", v->number_value);
        jputs(b, num);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        jstr(b, v->string_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        jputs(b, v->bool_value ? "true" : "false");
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        jstruct(b, v->struct_value, depth);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        jlist(b, v->list_value, depth);
        break;
    default:
        jputs(b, "null");
    }
}

static int
jfinish(aps_arena *a, jbuf *b, char **out)
{
    if (b->rc == 0) {
        *out = aps_arena_strndup(a, b->p ? b->p : "", b->n);
        if (*out == NULL)
            b->rc = aps_cv_fail(b->err, APS_ELIMIT, "%s: request too large", b->path);
    }
    free(b->p);
    return b->rc;
}

int
aps_json_from_value(aps_arena *a, const Google__Protobuf__Value *v, const char *path, char **out,
                    aps_error *err)
{
    jbuf b = {.err = err, .path = path};
    jvalue(&b, v, 0);
    return jfinish(a, &b, out);
}

int
aps_json_from_list(aps_arena *a, const Google__Protobuf__ListValue *v, const char *path, char **out,
                   aps_error *err)
{
    jbuf b = {.err = err, .path = path};
    jlist(&b, v, 0);
    return jfinish(a, &b, out);
}

int
aps_json_from_struct(aps_arena *a, const Google__Protobuf__Struct *v, const char *path, char **out,
                     aps_error *err)
{
    jbuf b = {.err = err, .path = path};
    jstruct(&b, v, 0);
    return jfinish(a, &b, out);
}

/* ---- JSON in ------------------------------------------------------------------- */

typedef struct jparse {
    aps_arena *a;
    const char *p;
    int bad;
} jparse;

static void
jws(jparse *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
        j->p++;
}

static void
utf8_put(char *out, size_t *o, unsigned cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xe0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xf0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static int
hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

/* A JSON string at j->p (the opening quote), decoded into the arena. */
static char *
jparse_str(jparse *j)
{
    const char *s = ++j->p, *e = s;
    while (*e && *e != '"') {
        if (*e == '\\' && e[1])
            e++;
        e++;
    }
    if (*e != '"') {
        j->bad = 1;
        return NULL;
    }
    /* Decoded text is never longer than its escaped form. */
    char *out = aps_arena_alloc(j->a, (size_t)(e - s) + 1);
    size_t o = 0;
    if (out == NULL) {
        j->bad = 1;
        return NULL;
    }
    for (const char *p = s; p < e; p++) {
        if (*p != '\\') {
            out[o++] = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'n':
            out[o++] = '\n';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'u': {
            unsigned cp, lo;
            if (e - p < 5 || hex4(p + 1, &cp) != 0) {
                j->bad = 1;
                return NULL;
            }
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && e - p >= 7 && p[1] == '\\' && p[2] == 'u' &&
                hex4(p + 3, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd;
            }
            /* \uXXXX (6 bytes) gives at most 3; a pair (12) at most 4. */
            utf8_put(out, &o, cp);
            break;
        }
        default:
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    j->p = e + 1;
    return out;
}

static Google__Protobuf__Value *jparse_value(jparse *j, int depth);

typedef struct pvec {
    void **v;
    size_t n, cap;
} pvec;

static int
pvec_push(pvec *pv, void *x)
{
    if (pv->n == pv->cap) {
        size_t cap = pv->cap ? pv->cap * 2 : 8;
        void **nv = realloc(pv->v, cap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        pv->v = nv;
        pv->cap = cap;
    }
    pv->v[pv->n++] = x;
    return 0;
}

static void **
pvec_to_arena(aps_arena *a, pvec *pv)
{
    void **out = aps_arena_alloc(a, (pv->n ? pv->n : 1) * sizeof(void *));
    if (out != NULL && pv->n)
        memcpy(out, pv->v, pv->n * sizeof(void *));
    free(pv->v);
    pv->v = NULL;
    return out;
}

/* Past the opening bracket of an object or array closed by `close`: 1 when
 * an element follows, 0 when it is empty (the close consumed). */
static int
jopen(jparse *j, char close)
{
    j->p++;
    jws(j);
    if (*j->p != close)
        return 1;
    j->p++;
    return 0;
}

/* After an element: 1 on a comma (another element follows), 0 on `close`
 * (consumed) or on anything else (then the text is bad). */
static int
jnext(jparse *j, char close)
{
    jws(j);
    if (*j->p == ',') {
        j->p++;
        return 1;
    }
    if (*j->p == close)
        j->p++;
    else
        j->bad = 1;
    return 0;
}

static Google__Protobuf__Value *
jparse_value(jparse *j, int depth)
{
    Google__Protobuf__Value *v;
    jws(j);
    if (depth > JSON_MAX_DEPTH || j->bad) {
        j->bad = 1;
        return NULL;
    }
    v = APS_PB_NEW(j->a, Google__Protobuf__Value, GOOGLE__PROTOBUF__VALUE__INIT);
    if (v == NULL) {
        j->bad = 1;
        return NULL;
    }
    if (*j->p == '{') {
        Google__Protobuf__Struct *s =
            APS_PB_NEW(j->a, Google__Protobuf__Struct, GOOGLE__PROTOBUF__STRUCT__INIT);
        pvec pv = {0};
        if (s == NULL) {
            j->bad = 1;
            return NULL;
        }
        for (int more = jopen(j, '}'); more; more = jnext(j, '}')) {
            jws(j);
            if (*j->p != '"') {
                j->bad = 1;
                break;
            }
            Google__Protobuf__Struct__FieldsEntry *e =
                APS_PB_NEW(j->a, Google__Protobuf__Struct__FieldsEntry,
                           GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT);
            if (e == NULL || (e->key = jparse_str(j)) == NULL) {
                j->bad = 1;
                break;
            }
            jws(j);
            if (*j->p != ':') {
                j->bad = 1;
                break;
            }
            j->p++;
            e->value = jparse_value(j, depth + 1);
            if (j->bad || pvec_push(&pv, e) != 0) {
                j->bad = 1;
                break;
            }
        }
        s->n_fields = pv.n;
        s->fields = (Google__Protobuf__Struct__FieldsEntry **)pvec_to_arena(j->a, &pv);
        if (s->fields == NULL) {
            s->n_fields = 0; /* the arena ran out: no count without its array */
            j->bad = 1;
        }
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = s;
    } else if (*j->p == '[') {
        Google__Protobuf__ListValue *l =
            APS_PB_NEW(j->a, Google__Protobuf__ListValue, GOOGLE__PROTOBUF__LIST_VALUE__INIT);
        pvec pv = {0};
        if (l == NULL) {
            j->bad = 1;
            return NULL;
        }
        for (int more = jopen(j, ']'); more; more = jnext(j, ']')) {
            Google__Protobuf__Value *x = jparse_value(j, depth + 1);
            if (j->bad || pvec_push(&pv, x) != 0) {
                j->bad = 1;
                break;
            }
        }
        l->n_values = pv.n;
        l->values = (Google__Protobuf__Value **)pvec_to_arena(j->a, &pv);
        if (l->values == NULL) {
            l->n_values = 0;
            j->bad = 1;
        }
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
    } else if (*j->p == '"') {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = jparse_str(j);
        if (v->string_value == NULL)
            j->bad = 1;
    } else if (strncmp(j->p, "true", 4) == 0 || strncmp(j->p, "false", 5) == 0) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = j->p[0] == 't';
        j->p += v->bool_value ? 4 : 5;
    } else if (strncmp(j->p, "null", 4) == 0) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        j->p += 4;
    } else {
        char *end = NULL;
        double d = strtod(j->p, &end);
        if (end == j->p) {
            j->bad = 1;
            return NULL;
        }
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = d;
        j->p = end;
    }
    return j->bad ? NULL : v;
}

int
aps_json_to_value(aps_arena *a, const char *json, Google__Protobuf__Value **out)
{
    jparse j = {.a = a, .p = json ? json : "null"};
    *out = jparse_value(&j, 0);
    jws(&j);
    if (j.bad || *out == NULL || *j.p != '\0') {
        *out = NULL;
        return APS_EINVAL;
    }
    return 0;
}

/* ---- triggers -------------------------------------------------------------------- */

static const char *
opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static int
ts_field(const Google__Protobuf__Timestamp *ts, const char *path, const char *kind,
         const char *field, aps_time *out, aps_error *err)
{
    char p[300];
    snprintf(p, sizeof p, "%s.%s.%s", path, kind, field);
    return aps_ts_to_time(ts, p, out, err);
}

/* A leaf trigger's start_date and end_date, in that order. */
static int
date_range(const Google__Protobuf__Timestamp *start, const Google__Protobuf__Timestamp *end,
           const char *path, const char *kind, aps_time *start_out, aps_time *end_out,
           aps_error *err)
{
    int rc = ts_field(start, path, kind, "start_date", start_out, err);
    return rc != 0 ? rc : ts_field(end, path, kind, "end_date", end_out, err);
}

static int
nonneg(int32_t v, const char *path, const char *kind, const char *field, aps_error *err)
{
    if (v < 0)
        return aps_cv_fail(err, APS_EINVAL, "%s.%s.%s: must not be negative (%d)", path, kind,
                           field, (int)v);
    return 0;
}

static int
trig_from_pb(aps_arena *a, const Apsd__V1__Trigger *pb, const char *path, int depth,
             aps_trigger_spec *t, aps_error *err)
{
    int rc;
    memset(t, 0, sizeof(*t));
    if (pb->jitter != NULL) {
        char p[300];
        snprintf(p, sizeof p, "%s.jitter", path);
        rc = aps_dur_to_us(pb->jitter, p, &t->jitter_us, err);
        if (rc != 0)
            return rc;
        if (t->jitter_us < 0)
            return aps_cv_fail(err, APS_EINVAL, "%s.jitter: must not be negative", path);
        if (depth > 0 && t->jitter_us != 0)
            return aps_cv_fail(err, APS_EINVAL, "%s.jitter: only allowed on the outermost trigger",
                               path);
    }
    switch (pb->kind_case) {
    case APSD__V1__TRIGGER__KIND_CRON: {
        const Apsd__V1__CronTrigger *c = pb->cron;
        t->kind = APS_TRIGGER_CRON;
        t->u.cron.year = opt(c->year);
        t->u.cron.month = opt(c->month);
        t->u.cron.day = opt(c->day);
        t->u.cron.week = opt(c->week);
        t->u.cron.day_of_week = opt(c->day_of_week);
        t->u.cron.hour = opt(c->hour);
        t->u.cron.minute = opt(c->minute);
        t->u.cron.second = opt(c->second);
        t->u.cron.crontab = opt(c->crontab);
        t->u.cron.timezone = opt(c->timezone);
        return date_range(c->start_date, c->end_date, path, "cron", &t->u.cron.start_date,
                          &t->u.cron.end_date, err);
    }
    case APSD__V1__TRIGGER__KIND_INTERVAL: {
        const Apsd__V1__IntervalTrigger *c = pb->interval;
        t->kind = APS_TRIGGER_INTERVAL;
        if ((rc = nonneg(c->weeks, path, "interval", "weeks", err)) != 0 ||
            (rc = nonneg(c->days, path, "interval", "days", err)) != 0 ||
            (rc = nonneg(c->hours, path, "interval", "hours", err)) != 0 ||
            (rc = nonneg(c->minutes, path, "interval", "minutes", err)) != 0 ||
            (rc = nonneg(c->seconds, path, "interval", "seconds", err)) != 0 ||
            (rc = nonneg(c->microseconds, path, "interval", "microseconds", err)) != 0)
            return rc;
        t->u.interval.weeks = c->weeks;
        t->u.interval.days = c->days;
        t->u.interval.hours = c->hours;
        t->u.interval.minutes = c->minutes;
        t->u.interval.seconds = c->seconds;
        t->u.interval.microseconds = c->microseconds;
        t->u.interval.timezone = opt(c->timezone);
        return date_range(c->start_date, c->end_date, path, "interval", &t->u.interval.start_date,
                          &t->u.interval.end_date, err);
    }
    case APSD__V1__TRIGGER__KIND_DATE:
        t->kind = APS_TRIGGER_DATE;
        t->u.date.timezone = opt(pb->date->timezone);
        return ts_field(pb->date->run_date, path, "date", "run_date", &t->u.date.run_date, err);
    case APSD__V1__TRIGGER__KIND_CALENDAR_INTERVAL: {
        const Apsd__V1__CalendarIntervalTrigger *c = pb->calendar_interval;
        t->kind = APS_TRIGGER_CALENDAR_INTERVAL;
        if ((rc = nonneg(c->years, path, "calendar_interval", "years", err)) != 0 ||
            (rc = nonneg(c->months, path, "calendar_interval", "months", err)) != 0 ||
            (rc = nonneg(c->weeks, path, "calendar_interval", "weeks", err)) != 0 ||
            (rc = nonneg(c->days, path, "calendar_interval", "days", err)) != 0)
            return rc;
        t->u.calendar_interval.years = c->years;
        t->u.calendar_interval.months = c->months;
        t->u.calendar_interval.weeks = c->weeks;
        t->u.calendar_interval.days = c->days;
        t->u.calendar_interval.hour = c->hour;
        t->u.calendar_interval.minute = c->minute;
        t->u.calendar_interval.second = c->second;
        t->u.calendar_interval.timezone = opt(c->timezone);
        return date_range(c->start_date, c->end_date, path, "calendar_interval",
                          &t->u.calendar_interval.start_date, &t->u.calendar_interval.end_date,
                          err);
    }
    case APSD__V1__TRIGGER__KIND_ALL_OF:
    case APSD__V1__TRIGGER__KIND_ANY_OF: {
        int all = pb->kind_case == APSD__V1__TRIGGER__KIND_ALL_OF;
        const char *kind = all ? "all_of" : "any_of";
        size_t n = all ? pb->all_of->n_triggers : pb->any_of->n_triggers;
        Apsd__V1__Trigger **subs = all ? pb->all_of->triggers : pb->any_of->triggers;
        t->kind = all ? APS_TRIGGER_ALL_OF : APS_TRIGGER_ANY_OF;
        if (n == 0)
            return aps_cv_fail(err, APS_EINVAL, "%s.%s.triggers: must not be empty", path, kind);
        if (n > COMBO_MAX_CHILDREN)
            return aps_cv_fail(err, APS_EINVAL, "%s.%s.triggers: %zu given, at most %d allowed",
                               path, kind, n, COMBO_MAX_CHILDREN);
        if (depth >= COMBO_MAX_DEPTH)
            return aps_cv_fail(err, APS_EINVAL, "%s.%s: nested more than %d levels deep", path,
                               kind, COMBO_MAX_DEPTH);
        aps_trigger_spec *v = aps_arena_alloc(a, n * sizeof(*v));
        if (v == NULL)
            return aps_cv_fail(err, APS_ELIMIT, "%s: request too large", path);
        for (size_t i = 0; i < n; i++) {
            char child[256];
            snprintf(child, sizeof child, "%s.%s.triggers[%zu]", path, kind, i);
            rc = trig_from_pb(a, subs[i], child, depth + 1, &v[i], err);
            if (rc != 0)
                return rc;
        }
        t->u.combo.triggers = v;
        t->u.combo.count = n;
        return 0;
    }
    default:
        return aps_cv_fail(err, APS_EINVAL,
                           "%s: one of cron, interval, date, calendar_interval, all_of, any_of "
                           "is required",
                           path);
    }
}

int
aps_trigger_from_pb(aps_arena *a, const Apsd__V1__Trigger *pb, const char *path,
                    aps_trigger_spec **out, aps_error *err)
{
    *out = NULL;
    if (pb == NULL)
        return aps_cv_fail(err, APS_EINVAL, "%s: required", path);
    aps_trigger_spec *t = aps_arena_alloc(a, sizeof(*t));
    if (t == NULL)
        return aps_cv_fail(err, APS_ELIMIT, "%s: request too large", path);
    int rc = trig_from_pb(a, pb, path, 0, t, err);
    if (rc == 0)
        *out = t;
    return rc;
}

static char *
estr(aps_arena *a, const char *s)
{
    /* protobuf-c packs an empty proto3 string as absent; the shared empty
     * string needs no copy. */
    if (s == NULL || s[0] == '\0')
        return (char *)protobuf_c_empty_string;
    size_t n = strlen(s);
    if (aps__pb_utf8_ok_n((const unsigned char *)s, n))
        return aps_arena_strdup(a, s);
    /* Not UTF-8 (a registered function's error text, a message cut in the
     * middle of a character, a command's bytes): a proto3 string must be,
     * and strict clients (Python's protobuf) refuse the whole message
     * otherwise. Each byte that starts no sequence becomes U+FFFD. */
    char *out = aps_arena_alloc(a, 3 * n + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0, k; i < n; i += k) {
        k = aps__pb_utf8_seq((const unsigned char *)s + i, n - i);
        if (k == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            k = 1;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
        }
    }
    out[o] = '\0';
    return out;
}

static Apsd__V1__Trigger *
trig_to_pb(aps_arena *a, const aps_trigger_spec *t, int depth)
{
    Apsd__V1__Trigger *pb = APS_PB_NEW(a, Apsd__V1__Trigger, APSD__V1__TRIGGER__INIT);
    if (pb == NULL || depth > COMBO_MAX_DEPTH + 1)
        return NULL;
    if (t->jitter_us != 0)
        pb->jitter = aps_dur_from_us(a, t->jitter_us);
    switch (t->kind) {
    case APS_TRIGGER_CRON: {
        Apsd__V1__CronTrigger *c =
            APS_PB_NEW(a, Apsd__V1__CronTrigger, APSD__V1__CRON_TRIGGER__INIT);
        if (c == NULL)
            return NULL;
        c->year = estr(a, t->u.cron.year);
        c->month = estr(a, t->u.cron.month);
        c->day = estr(a, t->u.cron.day);
        c->week = estr(a, t->u.cron.week);
        c->day_of_week = estr(a, t->u.cron.day_of_week);
        c->hour = estr(a, t->u.cron.hour);
        c->minute = estr(a, t->u.cron.minute);
        c->second = estr(a, t->u.cron.second);
        c->crontab = estr(a, t->u.cron.crontab);
        c->start_date = aps_ts_from_time(a, t->u.cron.start_date);
        c->end_date = aps_ts_from_time(a, t->u.cron.end_date);
        c->timezone = estr(a, t->u.cron.timezone);
        pb->kind_case = APSD__V1__TRIGGER__KIND_CRON;
        pb->cron = c;
        break;
    }
    case APS_TRIGGER_INTERVAL: {
        Apsd__V1__IntervalTrigger *c =
            APS_PB_NEW(a, Apsd__V1__IntervalTrigger, APSD__V1__INTERVAL_TRIGGER__INIT);
        if (c == NULL)
            return NULL;
        c->weeks = (int32_t)t->u.interval.weeks;
        c->days = (int32_t)t->u.interval.days;
        c->hours = (int32_t)t->u.interval.hours;
        c->minutes = (int32_t)t->u.interval.minutes;
        c->seconds = (int32_t)t->u.interval.seconds;
        c->microseconds = (int32_t)t->u.interval.microseconds;
        c->start_date = aps_ts_from_time(a, t->u.interval.start_date);
        c->end_date = aps_ts_from_time(a, t->u.interval.end_date);
        c->timezone = estr(a, t->u.interval.timezone);
        pb->kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
        pb->interval = c;
        break;
    }
    case APS_TRIGGER_DATE: {
        Apsd__V1__DateTrigger *c =
            APS_PB_NEW(a, Apsd__V1__DateTrigger, APSD__V1__DATE_TRIGGER__INIT);
        if (c == NULL)
            return NULL;
        c->run_date = aps_ts_from_time(a, t->u.date.run_date);
        c->timezone = estr(a, t->u.date.timezone);
        pb->kind_case = APSD__V1__TRIGGER__KIND_DATE;
        pb->date = c;
        break;
    }
    case APS_TRIGGER_CALENDAR_INTERVAL: {
        Apsd__V1__CalendarIntervalTrigger *c = APS_PB_NEW(
            a, Apsd__V1__CalendarIntervalTrigger, APSD__V1__CALENDAR_INTERVAL_TRIGGER__INIT);
        if (c == NULL)
            return NULL;
        c->years = t->u.calendar_interval.years;
        c->months = t->u.calendar_interval.months;
        c->weeks = t->u.calendar_interval.weeks;
        c->days = t->u.calendar_interval.days;
        c->hour = t->u.calendar_interval.hour;
        c->minute = t->u.calendar_interval.minute;
        c->second = t->u.calendar_interval.second;
        c->start_date = aps_ts_from_time(a, t->u.calendar_interval.start_date);
        c->end_date = aps_ts_from_time(a, t->u.calendar_interval.end_date);
        c->timezone = estr(a, t->u.calendar_interval.timezone);
        pb->kind_case = APSD__V1__TRIGGER__KIND_CALENDAR_INTERVAL;
        pb->calendar_interval = c;
        break;
    }
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF: {
        size_t n = t->u.combo.count;
        Apsd__V1__Trigger **v = aps_arena_alloc(a, (n ? n : 1) * sizeof(*v));
        if (v == NULL)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            v[i] = trig_to_pb(a, &t->u.combo.triggers[i], depth + 1);
            if (v[i] == NULL)
                return NULL;
        }
        if (t->kind == APS_TRIGGER_ALL_OF) {
            Apsd__V1__AllOfTrigger *c =
                APS_PB_NEW(a, Apsd__V1__AllOfTrigger, APSD__V1__ALL_OF_TRIGGER__INIT);
            if (c == NULL)
                return NULL;
            c->n_triggers = n;
            c->triggers = v;
            pb->kind_case = APSD__V1__TRIGGER__KIND_ALL_OF;
            pb->all_of = c;
        } else {
            Apsd__V1__AnyOfTrigger *c =
                APS_PB_NEW(a, Apsd__V1__AnyOfTrigger, APSD__V1__ANY_OF_TRIGGER__INIT);
            if (c == NULL)
                return NULL;
            c->n_triggers = n;
            c->triggers = v;
            pb->kind_case = APSD__V1__TRIGGER__KIND_ANY_OF;
            pb->any_of = c;
        }
        break;
    }
    default:
        break; /* unknown kind: an empty trigger */
    }
    return pb;
}

Apsd__V1__Trigger *
aps_trigger_to_pb(aps_arena *a, const aps_trigger_spec *spec)
{
    return spec == NULL ? NULL : trig_to_pb(a, spec, 0);
}

void
aps_trigger_fill_defaults(aps_arena *a, aps_trigger_spec *t, const char *default_tz, aps_time now)
{
    const char *tz = default_tz ? default_tz : "UTC";
    (void)a;
    switch (t->kind) {
    case APS_TRIGGER_CRON:
        if (t->u.cron.timezone == NULL)
            t->u.cron.timezone = tz;
        break;
    case APS_TRIGGER_INTERVAL: {
        if (t->u.interval.timezone == NULL)
            t->u.interval.timezone = tz;
        if (t->u.interval.start_date == APS_TIME_NONE) {
            /* APScheduler 3: start_date = now + interval (all zero = 1 s).
             * An interval too large for int64 keeps no start date: the
             * engine then rejects it ("interval: weeks: ... is too large"). */
            const int64_t part[6] = {t->u.interval.weeks,   t->u.interval.days,
                                     t->u.interval.hours,   t->u.interval.minutes,
                                     t->u.interval.seconds, t->u.interval.microseconds};
            const int64_t unit[6] = {7 * 86400 * US_PER_SEC, 86400 * US_PER_SEC,
                                     3600 * US_PER_SEC,      60 * US_PER_SEC,
                                     US_PER_SEC,             1};
            int64_t step = 0, prod, start;
            int over = 0;
            for (int i = 0; i < 6 && !over; i++)
                over = __builtin_mul_overflow(part[i], unit[i], &prod) ||
                       __builtin_add_overflow(step, prod, &step);
            if (!over && !__builtin_add_overflow(now, step > 0 ? step : US_PER_SEC, &start))
                t->u.interval.start_date = start;
        }
        break;
    }
    case APS_TRIGGER_DATE:
        if (t->u.date.timezone == NULL)
            t->u.date.timezone = tz;
        if (t->u.date.run_date == APS_TIME_NONE)
            t->u.date.run_date = now;
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        if (t->u.calendar_interval.timezone == NULL)
            t->u.calendar_interval.timezone = tz;
        if (t->u.calendar_interval.start_date == APS_TIME_NONE)
            t->u.calendar_interval.start_date = now;
        break;
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        for (size_t i = 0; i < t->u.combo.count; i++)
            aps_trigger_fill_defaults(a, (aps_trigger_spec *)&t->u.combo.triggers[i], tz, now);
        break;
    }
}

/* ---- targets and jobs ------------------------------------------------------------ */

int
aps_target_from_pb(aps_arena *a, const Apsd__V1__Target *pb, const char *path, aps_target *out,
                   aps_error *err)
{
    int rc;
    memset(out, 0, sizeof(*out));
    if (pb == NULL || pb->kind_case == APSD__V1__TARGET__KIND__NOT_SET)
        return aps_cv_fail(err, APS_EINVAL, "%s: one of command, remote is required", path);
    if (pb->kind_case == APSD__V1__TARGET__KIND_COMMAND) {
        const Apsd__V1__CommandTarget *c = pb->command;
        out->kind = APS_TARGET_COMMAND;
        if (c->n_argv == 0)
            return aps_cv_fail(err, APS_EINVAL, "%s.command.argv: must not be empty", path);
        if (c->argv[0][0] == '\0')
            return aps_cv_fail(err, APS_EINVAL, "%s.command.argv[0]: must not be empty", path);
        out->u.command.argv = c->argv;
        out->u.command.argc = c->n_argv;
        if (c->n_env > 0) {
            out->u.command.env = aps_arena_alloc(a, c->n_env * sizeof(char *));
            if (out->u.command.env == NULL)
                return aps_cv_fail(err, APS_ELIMIT, "%s: request too large", path);
            for (size_t i = 0; i < c->n_env; i++) {
                const char *k = c->env[i]->key, *v = c->env[i]->value;
                if (k[0] == '\0' || strchr(k, '=') != NULL)
                    return aps_cv_fail(err, APS_EINVAL,
                                       "%s.command.env: key \"%.64s\" must not be empty or "
                                       "contain '='",
                                       path, k);
                out->u.command.env[i] = aps_arena_printf(a, "%s=%s", k, v ? v : "");
                if (out->u.command.env[i] == NULL)
                    return aps_cv_fail(err, APS_ELIMIT, "%s: request too large", path);
            }
            out->u.command.envc = c->n_env;
        }
        out->u.command.cwd = (char *)opt(c->cwd);
        char p[300];
        snprintf(p, sizeof p, "%s.command.timeout", path);
        rc = aps_dur_to_us(c->timeout, p, &out->u.command.timeout_us, err);
        if (rc != 0)
            return rc;
        if (out->u.command.timeout_us < 0)
            return aps_cv_fail(err, APS_EINVAL, "%s: must not be negative", p);
        out->u.command.max_output = c->max_output_bytes;
        return 0;
    }
    /* remote */
    const Apsd__V1__RemoteTarget *r = pb->remote;
    char p[300];
    out->kind = APS_TARGET_REMOTE;
    if (r->task[0] == '\0')
        return aps_cv_fail(err, APS_EINVAL, "%s.remote.task: must not be empty", path);
    out->u.remote.task = r->task;
    out->u.remote.queue = (char *)opt(r->queue);
    if (r->args != NULL) {
        snprintf(p, sizeof p, "%s.remote.args", path);
        rc = aps_json_from_list(a, r->args, p, &out->u.remote.args_json, err);
        if (rc != 0)
            return rc;
    }
    if (r->kwargs != NULL) {
        snprintf(p, sizeof p, "%s.remote.kwargs", path);
        rc = aps_json_from_struct(a, r->kwargs, p, &out->u.remote.kwargs_json, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
aps_job_spec_from_pb(aps_arena *a, const Apsd__V1__Job *pb, const char *path, aps_job_spec *out,
                     aps_error *err)
{
    char p[300];
    int rc;

    memset(out, 0, sizeof(*out));
    out->next_run_time = APS_TIME_NONE;
    out->coalesce = -1;
    if (pb == NULL)
        return aps_cv_fail(err, APS_EINVAL, "%s: required", path);
    out->id = opt(pb->id);
    out->name = opt(pb->name);
    if (pb->trigger != NULL) {
        aps_trigger_spec *t = NULL;
        snprintf(p, sizeof p, "%s.trigger", path);
        rc = aps_trigger_from_pb(a, pb->trigger, p, &t, err);
        if (rc != 0)
            return rc;
        out->trigger = t;
    }
    if (pb->target != NULL) {
        snprintf(p, sizeof p, "%s.target", path);
        rc = aps_target_from_pb(a, pb->target, p, &out->target, err);
        if (rc != 0)
            return rc;
    }
    out->executor = opt(pb->executor);
    out->jobstore = opt(pb->jobstore);
    if (pb->misfire_grace_time != NULL) {
        const Apsd__V1__MisfireGraceTime *m = pb->misfire_grace_time;
        switch (m->limit_case) {
        case APSD__V1__MISFIRE_GRACE_TIME__LIMIT_DURATION:
            snprintf(p, sizeof p, "%s.misfire_grace_time.duration", path);
            rc = aps_dur_to_us(m->duration, p, &out->misfire_grace_us, err);
            if (rc != 0)
                return rc;
            if (out->misfire_grace_us <= 0)
                return aps_cv_fail(err, APS_EINVAL, "%s: must be positive", p);
            out->misfire = APS_MISFIRE_DURATION;
            break;
        case APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED:
            if (!m->unlimited)
                return aps_cv_fail(err, APS_EINVAL,
                                   "%s.misfire_grace_time.unlimited: false is not allowed (leave "
                                   "misfire_grace_time unset for the default)",
                                   path);
            out->misfire = APS_MISFIRE_UNLIMITED;
            break;
        default:
            out->misfire = APS_MISFIRE_DEFAULT;
        }
    }
    if (pb->optional_coalesce_case == APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE)
        out->coalesce = pb->coalesce ? 1 : 0;
    if (pb->optional_max_instances_case == APSD__V1__JOB__OPTIONAL_MAX_INSTANCES_MAX_INSTANCES) {
        if (pb->max_instances < 1)
            return aps_cv_fail(err, APS_EINVAL, "%s.max_instances: must be >= 1 (%d given)", path,
                               (int)pb->max_instances);
        out->max_instances = pb->max_instances;
    }
    if ((int)pb->overlap_policy < 0 || (int)pb->overlap_policy > 4)
        return aps_cv_fail(err, APS_EINVAL, "%s.overlap_policy: unknown policy %d", path,
                           (int)pb->overlap_policy);
    out->overlap = (aps_overlap)pb->overlap_policy;
    if (pb->n_labels > 0) {
        aps_label *l = aps_arena_alloc(a, pb->n_labels * sizeof(*l));
        if (l == NULL)
            return aps_cv_fail(err, APS_ELIMIT, "%s.labels: too large", path);
        for (size_t i = 0; i < pb->n_labels; i++) {
            l[i].key = pb->labels[i]->key;
            l[i].value = pb->labels[i]->value;
        }
        out->labels = l;
        out->n_labels = pb->n_labels;
    }
    snprintf(p, sizeof p, "%s.next_run_time", path);
    rc = aps_ts_to_time(pb->next_run_time, p, &out->next_run_time, err);
    if (rc != 0)
        return rc;
    out->paused = pb->paused ? 1 : 0;
    return 0;
}

Apsd__V1__RunStatus
aps_run_status_to_pb(aps_run_status st)
{
    switch (st) {
    case APS_RUN_SUCCEEDED:
        return APSD__V1__RUN_STATUS__RUN_STATUS_SUCCEEDED;
    case APS_RUN_FAILED:
        return APSD__V1__RUN_STATUS__RUN_STATUS_FAILED;
    case APS_RUN_TIMED_OUT:
        return APSD__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT;
    case APS_RUN_CANCELLED:
        return APSD__V1__RUN_STATUS__RUN_STATUS_CANCELLED;
    case APS_RUN_SPAWN_FAILED:
        return APSD__V1__RUN_STATUS__RUN_STATUS_START_FAILED;
    case APS_RUN_LEASE_EXPIRED:
        return APSD__V1__RUN_STATUS__RUN_STATUS_LEASE_EXPIRED;
    /* The scheduler stopped while it ran: the run was cut short. */
    case APS_RUN_INTERRUPTED:
        return APSD__V1__RUN_STATUS__RUN_STATUS_CANCELLED;
    default:
        return APSD__V1__RUN_STATUS__RUN_STATUS_UNSPECIFIED;
    }
}

static int
target_to_pb(aps_arena *a, const aps_target *t, Apsd__V1__Target **out)
{
    *out = NULL;
    if (t->kind != APS_TARGET_COMMAND && t->kind != APS_TARGET_REMOTE)
        return 0; /* function targets of an embedding program have no wire form */
    Apsd__V1__Target *pb = APS_PB_NEW(a, Apsd__V1__Target, APSD__V1__TARGET__INIT);
    if (pb == NULL)
        return -1;
    if (t->kind == APS_TARGET_COMMAND) {
        Apsd__V1__CommandTarget *c =
            APS_PB_NEW(a, Apsd__V1__CommandTarget, APSD__V1__COMMAND_TARGET__INIT);
        if (c == NULL)
            return -1;
        c->n_argv = t->u.command.argc;
        c->argv = aps_arena_alloc(a, (c->n_argv ? c->n_argv : 1) * sizeof(char *));
        if (c->argv == NULL)
            return -1;
        for (size_t i = 0; i < c->n_argv; i++)
            c->argv[i] = estr(a, t->u.command.argv[i]);
        if (t->u.command.envc > 0) {
            c->env = aps_arena_alloc(a, t->u.command.envc * sizeof(*c->env));
            if (c->env == NULL)
                return -1;
            for (size_t i = 0; i < t->u.command.envc; i++) {
                const char *kv = t->u.command.env[i], *eq = strchr(kv, '=');
                Apsd__V1__CommandTarget__EnvEntry *e =
                    APS_PB_NEW(a, Apsd__V1__CommandTarget__EnvEntry,
                               APSD__V1__COMMAND_TARGET__ENV_ENTRY__INIT);
                if (e == NULL)
                    return -1;
                e->key = eq ? aps_arena_strndup(a, kv, (size_t)(eq - kv)) : estr(a, kv);
                e->value = eq ? estr(a, eq + 1) : (char *)protobuf_c_empty_string;
                c->env[c->n_env++] = e;
            }
        }
        c->cwd = estr(a, t->u.command.cwd);
        if (t->u.command.timeout_us > 0)
            c->timeout = aps_dur_from_us(a, t->u.command.timeout_us);
        c->max_output_bytes = t->u.command.max_output;
        pb->kind_case = APSD__V1__TARGET__KIND_COMMAND;
        pb->command = c;
    } else {
        Apsd__V1__RemoteTarget *r =
            APS_PB_NEW(a, Apsd__V1__RemoteTarget, APSD__V1__REMOTE_TARGET__INIT);
        Google__Protobuf__Value *v = NULL;
        if (r == NULL)
            return -1;
        r->task = estr(a, t->u.remote.task);
        r->queue = estr(a, t->u.remote.queue);
        if (t->u.remote.args_json != NULL && aps_json_to_value(a, t->u.remote.args_json, &v) == 0 &&
            v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE)
            r->args = v->list_value;
        if (t->u.remote.kwargs_json != NULL &&
            aps_json_to_value(a, t->u.remote.kwargs_json, &v) == 0 &&
            v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
            r->kwargs = v->struct_value;
        pb->kind_case = APSD__V1__TARGET__KIND_REMOTE;
        pb->remote = r;
    }
    *out = pb;
    return 0;
}

Apsd__V1__RunOutcome *
aps_outcome_to_pb(aps_arena *a, const aps_outcome *o)
{
    Apsd__V1__RunOutcome *pb = APS_PB_NEW(a, Apsd__V1__RunOutcome, APSD__V1__RUN_OUTCOME__INIT);
    if (pb == NULL || o == NULL)
        return pb;
    pb->status = aps_run_status_to_pb(o->status);
    if (o->has_exit_code) {
        pb->termination_case = APSD__V1__RUN_OUTCOME__TERMINATION_EXIT_CODE;
        pb->exit_code = o->exit_code;
    } else if (o->signal != 0) {
        pb->termination_case = APSD__V1__RUN_OUTCOME__TERMINATION_SIGNAL;
        pb->signal = o->signal;
    }
    if (o->stdout_len > 0 && o->stdout_tail != NULL) {
        pb->stdout_tail.data = aps_arena_alloc(a, o->stdout_len);
        if (pb->stdout_tail.data != NULL) {
            memcpy(pb->stdout_tail.data, o->stdout_tail, o->stdout_len);
            pb->stdout_tail.len = o->stdout_len;
        }
    }
    if (o->stderr_len > 0 && o->stderr_tail != NULL) {
        pb->stderr_tail.data = aps_arena_alloc(a, o->stderr_len);
        if (pb->stderr_tail.data != NULL) {
            memcpy(pb->stderr_tail.data, o->stderr_tail, o->stderr_len);
            pb->stderr_tail.len = o->stderr_len;
        }
    }
    pb->stdout_truncated = o->stdout_truncated ? 1 : 0;
    pb->stderr_truncated = o->stderr_truncated ? 1 : 0;
    pb->start_time = aps_ts_from_time(a, o->start_time);
    pb->end_time = aps_ts_from_time(a, o->end_time);
    if (o->start_time != APS_TIME_NONE && o->end_time != APS_TIME_NONE &&
        o->end_time >= o->start_time && (o->start_time != 0 || o->end_time != 0))
        pb->duration = aps_dur_from_us(a, o->end_time - o->start_time);
    pb->error = estr(a, o->error);
    pb->traceback = estr(a, o->traceback);
    pb->error_type = estr(a, o->error_type);
    pb->worker_id = estr(a, o->worker_id);
    if (o->return_json != NULL) {
        Google__Protobuf__Value *v = NULL;
        if (aps_json_to_value(a, o->return_json, &v) == 0)
            pb->return_value = v;
    }
    return pb;
}

Apsd__V1__Job *
aps_job_to_pb(aps_arena *a, const aps_job *job, int with_stats)
{
    Apsd__V1__Job *pb = APS_PB_NEW(a, Apsd__V1__Job, APSD__V1__JOB__INIT);
    if (pb == NULL)
        return NULL;
    pb->id = estr(a, job->id);
    pb->name = estr(a, job->name);
    if (job->trigger != NULL && (pb->trigger = aps_trigger_to_pb(a, job->trigger)) == NULL)
        return NULL;
    if (target_to_pb(a, &job->target, &pb->target) != 0)
        return NULL;
    pb->executor = estr(a, job->executor);
    pb->jobstore = estr(a, job->jobstore);
    if (job->misfire == APS_MISFIRE_DURATION || job->misfire == APS_MISFIRE_UNLIMITED) {
        Apsd__V1__MisfireGraceTime *m =
            APS_PB_NEW(a, Apsd__V1__MisfireGraceTime, APSD__V1__MISFIRE_GRACE_TIME__INIT);
        if (m == NULL)
            return NULL;
        if (job->misfire == APS_MISFIRE_DURATION) {
            m->limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_DURATION;
            m->duration = aps_dur_from_us(a, job->misfire_grace_us);
        } else {
            m->limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED;
            m->unlimited = 1;
        }
        pb->misfire_grace_time = m;
    }
    if (job->coalesce == 0 || job->coalesce == 1) {
        pb->optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE;
        pb->coalesce = job->coalesce;
    }
    if (job->max_instances > 0) {
        pb->optional_max_instances_case = APSD__V1__JOB__OPTIONAL_MAX_INSTANCES_MAX_INSTANCES;
        pb->max_instances = job->max_instances;
    }
    pb->overlap_policy = (Apsd__V1__OverlapPolicy)job->overlap;
    if (job->n_labels > 0) {
        pb->labels = aps_arena_alloc(a, job->n_labels * sizeof(*pb->labels));
        if (pb->labels == NULL)
            return NULL;
        for (size_t i = 0; i < job->n_labels; i++) {
            Apsd__V1__Job__LabelsEntry *e =
                APS_PB_NEW(a, Apsd__V1__Job__LabelsEntry, APSD__V1__JOB__LABELS_ENTRY__INIT);
            if (e == NULL)
                return NULL;
            e->key = estr(a, job->labels[i].key);
            e->value = estr(a, job->labels[i].value);
            pb->labels[pb->n_labels++] = e;
        }
    }
    pb->next_run_time = aps_ts_from_time(a, job->next_run_time);
    pb->paused = job->paused ? 1 : 0;
    pb->running_instances = (int32_t)job->running_instances;
    pb->queued_runs = (int32_t)job->queued_runs;
    pb->create_time = aps_ts_from_time(a, job->create_time);
    pb->update_time = aps_ts_from_time(a, job->update_time);
    if (with_stats) {
        const aps_job_stats *s = &job->stats;
        Apsd__V1__JobStats *st = APS_PB_NEW(a, Apsd__V1__JobStats, APSD__V1__JOB_STATS__INIT);
        if (st == NULL)
            return NULL;
        st->runs = s->runs;
        st->failures = s->failures;
        st->misses = s->misses;
        st->max_instance_skips = s->max_instance_skips;
        st->coalesced = s->coalesced;
        st->last_run_id = estr(a, s->last_run_id);
        st->last_run_time = aps_ts_from_time(a, s->last_run_time);
        if (s->last_status != APS_RUN_NONE) {
            Apsd__V1__RunOutcome *o =
                APS_PB_NEW(a, Apsd__V1__RunOutcome, APSD__V1__RUN_OUTCOME__INIT);
            if (o == NULL)
                return NULL;
            o->status = aps_run_status_to_pb((aps_run_status)s->last_status);
            if (s->last_exit_code < 0) {
                o->termination_case = APSD__V1__RUN_OUTCOME__TERMINATION_SIGNAL;
                o->signal = -s->last_exit_code;
            } else if (s->last_status == APS_RUN_SUCCEEDED || s->last_status == APS_RUN_FAILED ||
                       s->last_exit_code != 0) {
                o->termination_case = APSD__V1__RUN_OUTCOME__TERMINATION_EXIT_CODE;
                o->exit_code = s->last_exit_code;
            }
            o->error = estr(a, s->last_error);
            st->last_outcome = o;
        }
        if (s->lateness_samples > 0) {
            st->lateness_p50 = aps_dur_from_us(a, s->lateness_p50_us);
            st->lateness_p90 = aps_dur_from_us(a, s->lateness_p90_us);
            st->lateness_p99 = aps_dur_from_us(a, s->lateness_p99_us);
            st->lateness_max = aps_dur_from_us(a, s->lateness_max_us);
        }
        st->lateness_samples = s->lateness_samples;
        pb->stats = st;
    }
    return pb;
}

Apsd__V1__Event *
aps_event_to_pb(aps_arena *a, const aps_event *ev)
{
    Apsd__V1__Event *pb = APS_PB_NEW(a, Apsd__V1__Event, APSD__V1__EVENT__INIT);
    if (pb == NULL)
        return NULL;
    pb->sequence = ev->sequence;
    pb->type = (Apsd__V1__EventType)ev->type;
    pb->time = aps_ts_from_time(a, ev->time);
    pb->job_id = estr(a, ev->job_id);
    pb->jobstore = estr(a, ev->jobstore);
    pb->executor = estr(a, ev->executor);
    if (ev->n_run_times > 0) {
        pb->scheduled_run_times = aps_arena_alloc(a, ev->n_run_times * sizeof(void *));
        if (pb->scheduled_run_times == NULL)
            return NULL;
        for (size_t i = 0; i < ev->n_run_times; i++) {
            Google__Protobuf__Timestamp *ts = aps_ts_from_time(a, ev->run_times[i]);
            if (ts != NULL)
                pb->scheduled_run_times[pb->n_scheduled_run_times++] = ts;
        }
    }
    pb->run_id = estr(a, ev->run_id);
    if (ev->outcome != NULL && (pb->outcome = aps_outcome_to_pb(a, ev->outcome)) == NULL)
        return NULL;
    pb->message = estr(a, ev->message);
    return pb;
}
