/*
 * apsc: protobuf-c messages <-> proto3 JSON, driven by the descriptors (so
 * it works for every message of the API without generated code), with
 * jansson. The well-known types the API uses (Timestamp, Duration, Struct,
 * Value, ListValue, FieldMask) get their special JSON forms.
 *
 * Messages built by apsc_from_json own every allocation the way
 * protobuf_c_message_unpack's do (malloc'd strings, sub-messages, arrays),
 * so protobuf_c_message_free_unpacked (apsc_free) releases them, also a
 * half-built one on an error.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "internal.h"

int apsc__parse_json_duration(const char *s, int64_t *seconds, int32_t *nanos);

/* Nesting bound for both directions: Struct/Value can nest without limit
 * in JSON; the daemon's own limit is far below this. */
#define MAX_DEPTH 64

#define MEMBER(T, msg, off) (*(T *)((char *)(msg) + (off)))
#define CMEMBER(T, msg, off) (*(const T *)((const char *)(msg) + (off)))

static size_t
elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static int
is_map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t n = strlen(d->short_name);
    return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

/* ---- Message -> JSON ---------------------------------------------------------- */

static json_t *msg_to_json(const ProtobufCMessage *m, int flags, int depth);

static json_t *
real_to_json(double v)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    /* 1, not 1.0, as protobuf's own JSON printer writes whole numbers. */
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        return json_integer((json_int_t)v);
    return json_real(v);
}

static json_t *
str_to_json(const char *s)
{
    json_t *j = json_string(s);
    /* Not UTF-8 (the daemon sends UTF-8; a broken peer might not): keep the
     * bytes rather than lose the field. */
    return j != NULL ? j : json_string_nocheck(s);
}

/* One value of field f stored at p (a scalar slot or a message pointer). */
static json_t *
value_to_json(const ProtobufCFieldDescriptor *f, const void *p, int flags, int depth)
{
    char buf[32];

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, sizeof buf, "%lld", (long long)*(const int64_t *)p);
        return json_string(buf);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(const uint64_t *)p);
        return json_string(buf);
    case PROTOBUF_C_TYPE_FLOAT:
        return real_to_json(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return real_to_json(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (ed == &google__protobuf__null_value__descriptor)
            return json_null();
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
        return ev != NULL ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return str_to_json(s != NULL ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *enc = apsc__b64_encode(b->data, b->len);
        json_t *j = enc != NULL ? json_string(enc) : NULL;
        free(enc);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        if (sub == NULL)
            return json_null();
        return msg_to_json(sub, flags, depth + 1);
    }
    }
    return NULL;
}

static int
is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)p;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    }
    return 1;
}

static json_t *
timestamp_to_json(const Google__Protobuf__Timestamp *t)
{
    char buf[APSC_TIME_BUFSZ];
    apsc_format_time(t->seconds, t->nanos, buf);
    return json_string(buf);
}

static json_t *
duration_to_json(const Google__Protobuf__Duration *d)
{
    char buf[APSC_DURATION_BUFSZ];
    apsc_format_duration(d->seconds, d->nanos, buf);
    return json_string(buf);
}

static json_t *
struct_to_json(const Google__Protobuf__Struct *s, int flags, int depth);

static json_t *
gvalue_to_json(const Google__Protobuf__Value *v, int flags, int depth)
{
    if (depth > MAX_DEPTH)
        return NULL;
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        return real_to_json(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return str_to_json(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return json_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return v->struct_value ? struct_to_json(v->struct_value, flags, depth + 1) : json_object();
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        json_t *a = json_array();
        if (a == NULL || v->list_value == NULL)
            return a;
        for (size_t i = 0; i < v->list_value->n_values; i++) {
            json_t *e = gvalue_to_json(v->list_value->values[i], flags, depth + 1);
            if (e == NULL || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    default:
        return json_null();
    }
}

static json_t *
struct_to_json(const Google__Protobuf__Struct *s, int flags, int depth)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = s->fields[i];
        json_t *v = e->value ? gvalue_to_json(e->value, flags, depth + 1) : json_null();
        if (v == NULL || json_object_set_new(o, e->key ? e->key : "", v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* The JSON form of a well-known type, or NULL with *handled = 0. */
static json_t *
wkt_to_json(const ProtobufCMessage *m, int flags, int depth, int *handled)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    *handled = 1;
    if (d == &google__protobuf__timestamp__descriptor)
        return timestamp_to_json((const Google__Protobuf__Timestamp *)m);
    if (d == &google__protobuf__duration__descriptor)
        return duration_to_json((const Google__Protobuf__Duration *)m);
    if (d == &google__protobuf__struct__descriptor)
        return struct_to_json((const Google__Protobuf__Struct *)m, flags, depth);
    if (d == &google__protobuf__value__descriptor)
        return gvalue_to_json((const Google__Protobuf__Value *)m, flags, depth);
    if (d == &google__protobuf__list_value__descriptor) {
        Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
        v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v.list_value = (Google__Protobuf__ListValue *)m;
        return gvalue_to_json(&v, flags, depth);
    }
    if (d == &google__protobuf__field_mask__descriptor) {
        const Google__Protobuf__FieldMask *fm = (const Google__Protobuf__FieldMask *)m;
        size_t n = 1;
        for (size_t i = 0; i < fm->n_paths; i++)
            n += strlen(fm->paths[i]) + 1;
        char *s = malloc(n), *p = s;
        if (s == NULL)
            return NULL;
        *p = '\0';
        for (size_t i = 0; i < fm->n_paths; i++)
            p += sprintf(p, "%s%s", i ? "," : "", fm->paths[i]);
        json_t *j = json_string(s);
        free(s);
        return j;
    }
    *handled = 0;
    return NULL;
}

/* A map field (repeated XxxEntry) as a JSON object. */
static json_t *
map_to_json(const ProtobufCFieldDescriptor *f, const void *arr, size_t n, int flags, int depth)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[i];
        json_t *k = value_to_json(kf, (const char *)e + kf->offset, flags, depth);
        json_t *v = value_to_json(vf, (const char *)e + vf->offset, flags, depth);
        const char *ks = k && json_is_string(k) ? json_string_value(k) : NULL;
        char kb[32];
        if (k && json_is_integer(k)) {
            snprintf(kb, sizeof kb, "%lld", (long long)json_integer_value(k));
            ks = kb;
        } else if (k && json_is_boolean(k)) {
            ks = json_is_true(k) ? "true" : "false";
        }
        int bad = ks == NULL || v == NULL || json_object_set_new(o, ks, v) != 0;
        if (bad && ks == NULL)
            json_decref(v);
        json_decref(k);
        if (bad) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *
msg_to_json(const ProtobufCMessage *m, int flags, int depth)
{
    int handled;

    if (depth > MAX_DEPTH)
        return NULL;
    json_t *w = wkt_to_json(m, flags, depth, &handled);
    if (handled)
        return w;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = (const char *)m + f->offset;
        json_t *v = NULL;

        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = CMEMBER(size_t, m, f->quantifier_offset);
            const void *arr = *(void *const *)p;
            if (n == 0 && !(flags & APSC_JSON_EMIT_DEFAULTS))
                continue;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) {
                v = map_to_json(f, arr, n, flags, depth);
            } else {
                v = json_array();
                for (size_t k = 0; v != NULL && k < n; k++) {
                    json_t *e = value_to_json(f, (const char *)arr + k * elem_size(f->type),
                                              flags, depth);
                    if (e == NULL || json_array_append_new(v, e) != 0) {
                        json_decref(v);
                        v = NULL;
                    }
                }
            }
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (CMEMBER(uint32_t, m, f->quantifier_offset) != f->id)
                continue;
            v = value_to_json(f, p, flags, depth);
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset != 0) {
            if (!CMEMBER(protobuf_c_boolean, m, f->quantifier_offset))
                continue;
            v = value_to_json(f, p, flags, depth);
        } else {
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (*(ProtobufCMessage *const *)p == NULL)
                    continue;
            } else if (!(flags & APSC_JSON_EMIT_DEFAULTS) && is_default(f, p)) {
                continue;
            }
            v = value_to_json(f, p, flags, depth);
        }
        if (v == NULL || json_object_set_new(o, f->name, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int
apsc_to_json(const void *msg, int flags, char **out)
{
    if (out == NULL)
        return APSC_EINVAL;
    *out = NULL;
    if (msg == NULL)
        return APSC_EINVAL;
    json_t *j = msg_to_json(msg, flags, 0);
    if (j == NULL)
        return APSC_ENOMEM;
    size_t jf = JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17);
    jf |= (flags & APSC_JSON_PRETTY) ? JSON_INDENT(2) : JSON_COMPACT;
    *out = json_dumps(j, jf);
    json_decref(j);
    return *out != NULL ? APSC_OK : APSC_ENOMEM;
}

/* ---- JSON -> message ------------------------------------------------------------ */

typedef struct path {
    char buf[512];
    size_t len;
} path;

static size_t
path_push(path *pt, const char *fmt, const char *name, size_t idx)
{
    size_t old = pt->len;
    int n;
    if (fmt == NULL)
        n = snprintf(pt->buf + pt->len, sizeof pt->buf - pt->len, "%s%s", pt->len ? "." : "",
                     name);
    else
        n = snprintf(pt->buf + pt->len, sizeof pt->buf - pt->len, fmt, idx);
    if (n > 0)
        pt->len += (size_t)n < sizeof pt->buf - pt->len ? (size_t)n : sizeof pt->buf - pt->len - 1;
    return old;
}

static void
path_pop(path *pt, size_t old)
{
    pt->len = old;
    pt->buf[old] = '\0';
}

static int
jfail(apsc_error *err, const path *pt, const char *what)
{
    return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s",
                      pt->len ? pt->buf : "(message)", what);
}

static int msg_from_json(const ProtobufCMessageDescriptor *d, json_t *j, ProtobufCMessage **out,
                         path *pt, int depth, apsc_error *err);

static ProtobufCMessage *
msg_new(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    if (m != NULL)
        d->message_init(m);
    return m;
}

static char *
strdup_or_null(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Reads an integer from a JSON number or a decimal string. */
static int
json_int(json_t *j, int is_unsigned, long long *sv, unsigned long long *uv)
{
    if (json_is_integer(j)) {
        long long v = json_integer_value(j);
        if (is_unsigned && v < 0)
            return -1;
        *sv = v;
        *uv = (unsigned long long)v;
        return 0;
    }
    if (json_is_real(j)) {
        double d = json_real_value(j);
        if (d != floor(d) || fabs(d) > 9.007199254740992e15 || (is_unsigned && d < 0))
            return -1;
        *sv = (long long)d;
        *uv = (unsigned long long)(long long)d;
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        if (s[0] == '\0')
            return -1;
        errno = 0;
        if (is_unsigned) {
            if (s[0] == '-')
                return -1;
            *uv = strtoull(s, &end, 10);
            *sv = (long long)*uv;
        } else {
            *sv = strtoll(s, &end, 10);
            *uv = (unsigned long long)*sv;
        }
        if (*end != '\0' || errno != 0)
            return -1;
        return 0;
    }
    return -1;
}

static int
json_double(json_t *j, double *v)
{
    if (json_is_number(j)) {
        *v = json_number_value(j);
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        if (strcmp(s, "NaN") == 0)
            *v = NAN;
        else if (strcmp(s, "Infinity") == 0)
            *v = INFINITY;
        else if (strcmp(s, "-Infinity") == 0)
            *v = -INFINITY;
        else {
            char *end;
            *v = strtod(s, &end);
            if (s[0] == '\0' || *end != '\0')
                return -1;
        }
        return 0;
    }
    return -1;
}

static int gvalue_from_json(json_t *j, Google__Protobuf__Value **out, path *pt, int depth,
                            apsc_error *err);

static int
gstruct_from_json(json_t *j, Google__Protobuf__Struct **out, path *pt, int depth,
                  apsc_error *err)
{
    Google__Protobuf__Struct *s;
    const char *key;
    json_t *v;
    int rc;

    *out = NULL;
    if (!json_is_object(j))
        return jfail(err, pt, "expected a JSON object");
    s = (Google__Protobuf__Struct *)msg_new(&google__protobuf__struct__descriptor);
    if (s == NULL)
        goto nomem;
    s->fields = calloc(json_object_size(j) + 1, sizeof(*s->fields));
    if (s->fields == NULL)
        goto nomem;
    json_object_foreach(j, key, v) {
        Google__Protobuf__Struct__FieldsEntry *e = (Google__Protobuf__Struct__FieldsEntry *)msg_new(
            &google__protobuf__struct__fields_entry__descriptor);
        if (e == NULL)
            goto nomem;
        s->fields[s->n_fields++] = e;
        e->key = strdup_or_null(key, strlen(key));
        if (e->key == NULL)
            goto nomem;
        size_t old = path_push(pt, NULL, key, 0);
        rc = gvalue_from_json(v, &e->value, pt, depth + 1, err);
        path_pop(pt, old);
        if (rc != 0)
            goto fail;
    }
    *out = s;
    return APSC_OK;
nomem:
    rc = apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
    apsc_free(s);
    return rc;
}

static int
glist_from_json(json_t *j, Google__Protobuf__ListValue **out, path *pt, int depth,
                apsc_error *err)
{
    Google__Protobuf__ListValue *l;
    int rc;

    *out = NULL;
    if (!json_is_array(j))
        return jfail(err, pt, "expected a JSON array");
    l = (Google__Protobuf__ListValue *)msg_new(&google__protobuf__list_value__descriptor);
    if (l == NULL)
        goto nomem;
    l->values = calloc(json_array_size(j) + 1, sizeof(*l->values));
    if (l->values == NULL)
        goto nomem;
    for (size_t i = 0; i < json_array_size(j); i++) {
        size_t old = path_push(pt, "[%zu]", NULL, i);
        rc = gvalue_from_json(json_array_get(j, i), &l->values[i], pt, depth + 1, err);
        path_pop(pt, old);
        if (rc != 0)
            goto fail;
        l->n_values++;
    }
    *out = l;
    return APSC_OK;
nomem:
    rc = apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
    apsc_free(l);
    return rc;
}

static int
gvalue_from_json(json_t *j, Google__Protobuf__Value **out, path *pt, int depth, apsc_error *err)
{
    Google__Protobuf__Value *v;
    int rc = APSC_OK;

    *out = NULL;
    if (depth > MAX_DEPTH)
        return jfail(err, pt, "nested too deeply");
    v = (Google__Protobuf__Value *)msg_new(&google__protobuf__value__descriptor);
    if (v == NULL)
        return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    switch (json_typeof(j)) {
    case JSON_NULL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = json_is_true(j);
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = json_number_value(j);
        break;
    case JSON_STRING:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = strdup_or_null(json_string_value(j), json_string_length(j));
        if (v->string_value == NULL)
            rc = apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
    case JSON_OBJECT:
        rc = gstruct_from_json(j, &v->struct_value, pt, depth + 1, err);
        if (rc == 0)
            v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        break;
    case JSON_ARRAY:
        rc = glist_from_json(j, &v->list_value, pt, depth + 1, err);
        if (rc == 0)
            v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        break;
    }
    if (rc != 0) {
        apsc_free(v);
        return rc;
    }
    *out = v;
    return APSC_OK;
}

/* A well-known type from its JSON form. Returns 1 (not handled) for other
 * messages. */
static int
wkt_from_json(const ProtobufCMessageDescriptor *d, json_t *j, ProtobufCMessage **out, path *pt,
              int depth, apsc_error *err)
{
    if (d == &google__protobuf__timestamp__descriptor) {
        int64_t s;
        int32_t n;
        if (!json_is_string(j) || apsc_parse_time(json_string_value(j), &s, &n) != 0)
            return jfail(err, pt, "expected an RFC 3339 time with an offset, e.g. "
                                  "\"2026-11-23T10:00:00+01:00\"");
        Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)msg_new(d);
        if (t == NULL)
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        t->seconds = s;
        t->nanos = n;
        *out = &t->base;
        return APSC_OK;
    }
    if (d == &google__protobuf__duration__descriptor) {
        int64_t s;
        int32_t n;
        if (!json_is_string(j) || apsc__parse_json_duration(json_string_value(j), &s, &n) != 0)
            return jfail(err, pt, "expected a duration, e.g. \"90s\" or \"1.5s\"");
        Google__Protobuf__Duration *t = (Google__Protobuf__Duration *)msg_new(d);
        if (t == NULL)
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        t->seconds = s;
        t->nanos = n;
        *out = &t->base;
        return APSC_OK;
    }
    if (d == &google__protobuf__struct__descriptor)
        return gstruct_from_json(j, (Google__Protobuf__Struct **)out, pt, depth, err);
    if (d == &google__protobuf__value__descriptor)
        return gvalue_from_json(j, (Google__Protobuf__Value **)out, pt, depth, err);
    if (d == &google__protobuf__list_value__descriptor)
        return glist_from_json(j, (Google__Protobuf__ListValue **)out, pt, depth, err);
    if (d == &google__protobuf__field_mask__descriptor) {
        if (!json_is_string(j))
            return jfail(err, pt, "expected a comma-separated string of field paths");
        Google__Protobuf__FieldMask *fm = (Google__Protobuf__FieldMask *)msg_new(d);
        const char *s = json_string_value(j);
        size_t cnt = 1;
        if (fm == NULL)
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        for (const char *p = s; *p; p++)
            cnt += *p == ',';
        fm->paths = calloc(cnt, sizeof(char *));
        if (fm->paths == NULL) {
            apsc_free(fm);
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        }
        while (*s != '\0') {
            const char *e = strchr(s, ',');
            size_t n = e ? (size_t)(e - s) : strlen(s);
            if (n > 0) {
                fm->paths[fm->n_paths] = strdup_or_null(s, n);
                if (fm->paths[fm->n_paths] == NULL) {
                    apsc_free(fm);
                    return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                      "out of memory");
                }
                fm->n_paths++;
            }
            s += n + (e != NULL);
        }
        *out = &fm->base;
        return APSC_OK;
    }
    return 1;
}

/* One value of field f into the slot p (scalar storage or message pointer). */
static int
value_from_json(const ProtobufCFieldDescriptor *f, json_t *j, void *p, path *pt, int depth,
                apsc_error *err)
{
    long long sv;
    unsigned long long uv;
    double dv;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (json_int(j, 0, &sv, &uv) != 0 || sv < INT32_MIN || sv > INT32_MAX)
            return jfail(err, pt, "expected a 32-bit integer");
        *(int32_t *)p = (int32_t)sv;
        return APSC_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (json_int(j, 1, &sv, &uv) != 0 || uv > UINT32_MAX)
            return jfail(err, pt, "expected an unsigned 32-bit integer");
        *(uint32_t *)p = (uint32_t)uv;
        return APSC_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (json_int(j, 0, &sv, &uv) != 0)
            return jfail(err, pt, "expected a 64-bit integer");
        *(int64_t *)p = sv;
        return APSC_OK;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (json_int(j, 1, &sv, &uv) != 0)
            return jfail(err, pt, "expected an unsigned 64-bit integer");
        *(uint64_t *)p = uv;
        return APSC_OK;
    case PROTOBUF_C_TYPE_FLOAT:
        if (json_double(j, &dv) != 0)
            return jfail(err, pt, "expected a number");
        *(float *)p = (float)dv;
        return APSC_OK;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (json_double(j, &dv) != 0)
            return jfail(err, pt, "expected a number");
        *(double *)p = dv;
        return APSC_OK;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            return jfail(err, pt, "expected true or false");
        *(protobuf_c_boolean *)p = json_is_true(j);
        return APSC_OK;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(j)) {
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
        } else if (json_is_integer(j)) {
            *(int *)p = (int)json_integer_value(j);
            return APSC_OK;
        } else if (json_is_null(j) && ed == &google__protobuf__null_value__descriptor) {
            *(int *)p = 0;
            return APSC_OK;
        }
        if (ev == NULL) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown %s value%s%s", ed->name,
                     json_is_string(j) ? " " : "", json_is_string(j) ? json_string_value(j) : "");
            return jfail(err, pt, msg);
        }
        *(int *)p = ev->value;
        return APSC_OK;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            return jfail(err, pt, "expected a string");
        char *s = strdup_or_null(json_string_value(j), json_string_length(j));
        if (s == NULL)
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        *(char **)p = s;
        return APSC_OK;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = p;
        if (!json_is_string(j) || apsc__b64_decode(json_string_value(j), &b->data, &b->len) != 0)
            return jfail(err, pt, "expected base64 text");
        return APSC_OK;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return msg_from_json(f->descriptor, j, (ProtobufCMessage **)p, pt, depth + 1, err);
    }
    return jfail(err, pt, "unsupported field type");
}

/* The lowerCamelCase JSON name protoc would give a field. */
static int
camel_equals(const char *proto_name, const char *key)
{
    const char *p = proto_name;
    const char *k = key;
    while (*p != '\0') {
        char c = *p;
        if (c == '_' && p[1] != '\0') {
            p++;
            c = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        }
        if (*k != c)
            return 0;
        p++;
        k++;
    }
    return *k == '\0';
}

static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *d, const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    if (f != NULL)
        return f;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (camel_equals(d->fields[i].name, key))
            return &d->fields[i];
    return NULL;
}

static int
map_from_json(const ProtobufCFieldDescriptor *f, json_t *j, ProtobufCMessage *m, path *pt,
              int depth, apsc_error *err)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    ProtobufCMessage ***arr = &MEMBER(ProtobufCMessage **, m, f->offset);
    size_t *n = &MEMBER(size_t, m, f->quantifier_offset);
    const char *key;
    json_t *v;

    if (!json_is_object(j))
        return jfail(err, pt, "expected a JSON object (a map)");
    *arr = calloc(json_object_size(j) + 1, sizeof(ProtobufCMessage *));
    if (*arr == NULL)
        return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    json_object_foreach(j, key, v) {
        ProtobufCMessage *e = msg_new(ed);
        if (e == NULL)
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        (*arr)[(*n)++] = e;
        size_t old = path_push(pt, NULL, key, 0);
        json_t *kj = json_string(key);
        int rc = kj == NULL ? apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                         "out of memory")
                            : value_from_json(kf, kj, (char *)e + kf->offset, pt, depth, err);
        json_decref(kj);
        if (rc == 0)
            rc = value_from_json(vf, v, (char *)e + vf->offset, pt, depth, err);
        path_pop(pt, old);
        if (rc != 0)
            return rc;
    }
    return APSC_OK;
}

static int
field_from_json(const ProtobufCFieldDescriptor *f, json_t *j, ProtobufCMessage *m, path *pt,
                int depth, apsc_error *err)
{
    void *p = (char *)m + f->offset;

    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor))
            return map_from_json(f, j, m, pt, depth, err);
        if (!json_is_array(j))
            return jfail(err, pt, "expected a JSON array");
        size_t es = elem_size(f->type), cnt = json_array_size(j);
        char *arr = calloc(cnt + 1, es);
        if (arr == NULL)
            return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        *(void **)p = arr;
        size_t *n = &MEMBER(size_t, m, f->quantifier_offset);
        for (size_t i = 0; i < cnt; i++) {
            size_t old = path_push(pt, "[%zu]", NULL, i);
            int rc = value_from_json(f, json_array_get(j, i), arr + i * es, pt, depth, err);
            path_pop(pt, old);
            if (rc != 0)
                return rc;
            (*n)++;
        }
        return APSC_OK;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        /* Members of a oneof share storage (a union): nothing of ours is
         * there yet (the caller checked that no other member is set). */
        if (MEMBER(uint32_t, m, f->quantifier_offset) == 0)
            memset(p, 0, elem_size(f->type));
        else if (f->type == PROTOBUF_C_TYPE_STRING)
            free(*(char **)p), *(char **)p = NULL;
        else if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            apsc_free(*(ProtobufCMessage **)p), *(void **)p = NULL;
    } else if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
        /* Replace the default (a static empty string, or NULL). */
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            char *old = *(char **)p;
            if (old != NULL && old != f->default_value && old != protobuf_c_empty_string)
                free(old);
        } else {
            apsc_free(*(ProtobufCMessage **)p);
        }
        *(void **)p = NULL;
    }
    int rc = value_from_json(f, j, p, pt, depth, err);
    if (rc != 0)
        return rc;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        MEMBER(uint32_t, m, f->quantifier_offset) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
             f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset != 0)
        MEMBER(protobuf_c_boolean, m, f->quantifier_offset) = 1;
    return APSC_OK;
}

static int
msg_from_json(const ProtobufCMessageDescriptor *d, json_t *j, ProtobufCMessage **out, path *pt,
              int depth, apsc_error *err)
{
    ProtobufCMessage *m = NULL;
    const char *key;
    json_t *v;
    int rc;

    *out = NULL;
    if (depth > MAX_DEPTH)
        return jfail(err, pt, "nested too deeply");
    rc = wkt_from_json(d, j, out, pt, depth, err);
    if (rc != 1)
        return rc;
    if (!json_is_object(j))
        return jfail(err, pt, "expected a JSON object");
    m = msg_new(d);
    if (m == NULL)
        return apsc__fail(err, APSC_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    json_object_foreach(j, key, v) {
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        size_t old = path_push(pt, NULL, key, 0);
        if (f == NULL) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown field of %s", d->name);
            rc = jfail(err, pt, msg);
            goto fail;
        }
        if (json_is_null(v) && !(f->type == PROTOBUF_C_TYPE_MESSAGE &&
                                 f->descriptor == &google__protobuf__value__descriptor)) {
            path_pop(pt, old); /* null = not given (proto JSON) */
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t cur = MEMBER(uint32_t, m, f->quantifier_offset);
            if (cur != 0 && cur != f->id) {
                rc = jfail(err, pt, "another field of the same oneof is already set");
                goto fail;
            }
        }
        rc = field_from_json(f, v, m, pt, depth, err);
        path_pop(pt, old);
        if (rc != 0)
            goto fail;
    }
    *out = m;
    return APSC_OK;
fail:
    apsc_free(m);
    return rc;
}

int
apsc_from_json(const ProtobufCMessageDescriptor *desc, const char *json, void **out,
               apsc_error *err)
{
    json_error_t je;
    path pt;

    if (err != NULL)
        apsc_error_dispose(err);
    if (out == NULL || desc == NULL || json == NULL)
        return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    json_t *j = json_loads(json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        return apsc__fail(err, APSC_EPROTO, GRPC_STATUS_INVALID_ARGUMENT,
                          "JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    pt.len = 0;
    pt.buf[0] = '\0';
    int rc = msg_from_json(desc, j, (ProtobufCMessage **)out, &pt, 0, err);
    json_decref(j);
    return rc;
}
