/*
 * reflection_test.c: service/reflection.c, bytes in -> bytes out.
 *
 * Requests are packed with the protoc-c codecs of reflection.proto (v1, and
 * v1alpha for the deprecated path), answers unpacked with them. Two sets:
 * the daemon's embedded aps_fdset (the real answers grpcurl gets) and a
 * test set with proto2 extensions (tests/testdata/ext_*.proto), also
 * embedded concatenated with itself (every file twice).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "apsd_fdset.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "service/reflection.h"

extern const unsigned char aps_test_ext_fdset[];
extern const size_t aps_test_ext_fdset_len;
extern const unsigned char aps_test_dup_fdset[];
extern const size_t aps_test_dup_fdset_len;

typedef Grpc__Reflection__V1__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1__ServerReflectionResponse Resp;

#define RESP_FILES                                                                                 \
    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE
#define RESP_EXTNUMS                                                                               \
    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE
#define RESP_SERVICES                                                                              \
    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE
#define RESP_ERROR GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

enum kind { BY_FILENAME = 3, BY_SYMBOL = 4, BY_EXTENSION = 5, EXT_NUMBERS = 6, LIST = 7 };

/* Packs a v1 request: `arg` is the string of the kind (the containing type
 * for BY_EXTENSION, with `num`). */
static uint8_t *
pack_req(enum kind k, const char *host, const char *arg, int32_t num, size_t *len)
{
    Req rq = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    Grpc__Reflection__V1__ExtensionRequest x = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    uint8_t *buf;

    rq.host = (char *)host;
    rq.message_request_case = (Grpc__Reflection__V1__ServerReflectionRequest__MessageRequestCase)k;
    switch (k) {
    case BY_FILENAME:
        rq.file_by_filename = (char *)arg;
        break;
    case BY_SYMBOL:
        rq.file_containing_symbol = (char *)arg;
        break;
    case BY_EXTENSION:
        x.containing_type = (char *)arg;
        x.extension_number = num;
        rq.file_containing_extension = &x;
        break;
    case EXT_NUMBERS:
        rq.all_extension_numbers_of_type = (char *)arg;
        break;
    case LIST:
        rq.list_services = (char *)arg;
        break;
    }
    *len = grpc__reflection__v1__server_reflection_request__get_packed_size(&rq);
    buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    grpc__reflection__v1__server_reflection_request__pack(&rq, buf);
    return buf;
}

/* Sends one request on `st`; returns the decoded answer (free with
 * free_resp). */
static Resp *
ask(aps_refl_stream *st, enum kind k, const char *arg, int32_t num)
{
    size_t len, out_len;
    uint8_t *req = pack_req(k, "", arg, num, &len), *out;
    Resp *r;

    assert_int_equal(aps_refl_handle(st, req, len, &out, &out_len), 0);
    free(req);
    r = grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    free(out);
    return r;
}

static void
free_resp(Resp *r)
{
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
}

/* The name of each file of a file answer, in order, "|"-joined. */
static char *
file_names(const Resp *r)
{
    static char buf[4096];

    assert_int_equal(r->message_response_case, RESP_FILES);
    buf[0] = '\0';
    for (size_t i = 0; i < r->file_descriptor_response->n_file_descriptor_proto; i++) {
        const ProtobufCBinaryData *b = &r->file_descriptor_response->file_descriptor_proto[i];
        Google__Protobuf__FileDescriptorProto *f =
            google__protobuf__file_descriptor_proto__unpack(NULL, b->len, b->data);

        assert_non_null(f);
        if (i)
            strcat(buf, "|");
        strcat(buf, f->name);
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
    }
    return buf;
}

static void
assert_not_found(const Resp *r, const char *name)
{
    assert_int_equal(r->message_response_case, RESP_ERROR);
    assert_int_equal(r->error_response->error_code, 5);
    if (strstr(r->error_response->error_message, name) == NULL)
        fail_msg("error message \"%s\" does not name \"%s\"", r->error_response->error_message,
                 name);
}

/* Raw bytes of each file of a set (field 1), by hand, as protoc wrote them. */
struct slice {
    const uint8_t *p;
    size_t n;
};

static size_t
split(const uint8_t *p, size_t len, struct slice *out, size_t max)
{
    const uint8_t *end = p + len;
    size_t n = 0;

    while (p < end) {
        uint64_t v = 0;
        unsigned shift = 0;

        assert_int_equal(*p++, 0x0a); /* field 1, length-delimited */
        do {
            v |= (uint64_t)(*p & 0x7f) << shift;
            shift += 7;
        } while (*p++ & 0x80);
        assert_true(n < max);
        out[n].p = p;
        out[n].n = (size_t)v;
        n++;
        p += v;
    }
    return n;
}

static aps_refl *
make_refl(const unsigned char *set, size_t len)
{
    aps_refl *r = NULL;

    assert_int_equal(aps_refl_create(set, len, &r), 0);
    assert_non_null(r);
    return r;
}

static aps_refl_stream *
make_stream(const aps_refl *r)
{
    aps_refl_stream *st = NULL;

    assert_int_equal(aps_refl_stream_new(r, &st), 0);
    assert_non_null(st);
    return st;
}

/* ------------------------------------------------------------------ */
/* The embedded API set                                                 */
/* ------------------------------------------------------------------ */

static aps_refl *api;

static int
setup(void **state)
{
    (void)state;
    return aps_refl_create(aps_fdset, aps_fdset_len, &api);
}

static int
teardown(void **state)
{
    (void)state;
    aps_refl_destroy(api);
    return 0;
}

static void
test_indexes_every_file(void **state)
{
    struct slice s[64];
    size_t n = split(aps_fdset, aps_fdset_len, s, 64);
    aps_refl_stream *st = make_stream(api);

    (void)state;
    assert_int_equal(aps_refl_file_count(api), n);
    /* grpcurl asks for every import by name: each file answers, and its
     * bytes are exactly protoc's. */
    for (size_t i = 0; i < n; i++) {
        Google__Protobuf__FileDescriptorProto *f =
            google__protobuf__file_descriptor_proto__unpack(NULL, s[i].n, s[i].p);
        Resp *r;

        assert_non_null(f);
        r = ask(st, BY_FILENAME, f->name, 0);
        assert_int_equal(r->message_response_case, RESP_FILES);
        assert_true(r->file_descriptor_response->n_file_descriptor_proto >= 1);
        assert_int_equal(r->file_descriptor_response->file_descriptor_proto[0].len, s[i].n);
        assert_memory_equal(r->file_descriptor_response->file_descriptor_proto[0].data, s[i].p,
                            s[i].n);
        free_resp(r);
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
    }
    aps_refl_stream_free(st);
}

static void
test_list_services(void **state)
{
    static const char *want[] = {
        "apsd.v1.Scheduler",
        "apsd.v1.Workers",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    };
    aps_refl_stream *st = make_stream(api);
    size_t len, out_len;
    uint8_t *req = pack_req(LIST, "localhost:50051", "*", 0, &len), *out;
    Resp *r;

    (void)state;
    assert_int_equal(aps_refl_handle(st, req, len, &out, &out_len), 0);
    r = grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    assert_string_equal(r->valid_host, "localhost:50051");
    assert_non_null(r->original_request);
    assert_int_equal(r->original_request->message_request_case, LIST);
    assert_string_equal(r->original_request->list_services, "*");
    assert_string_equal(r->original_request->host, "localhost:50051");
    assert_int_equal(r->message_response_case, RESP_SERVICES);
    assert_int_equal(r->list_services_response->n_service, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(r->list_services_response->service[i]->name, want[i]);
    free_resp(r);
    free(out);
    free(req);
    aps_refl_stream_free(st);
}

static void
test_symbol_closure_and_dedup(void **state)
{
    aps_refl_stream *st = make_stream(api), *st2 = make_stream(api);
    Resp *r;

    (void)state;
    /* The service's file, then its imports (breadth-first, import order). */
    r = ask(st, BY_SYMBOL, "apsd.v1.Scheduler", 0);
    assert_string_equal(file_names(r),
                        "apsd/v1/scheduler.proto|google/protobuf/duration.proto|"
                        "google/protobuf/field_mask.proto|google/protobuf/struct.proto|"
                        "google/protobuf/timestamp.proto");
    assert_string_equal(r->valid_host, "");
    assert_string_equal(r->original_request->file_containing_symbol, "apsd.v1.Scheduler");
    free_resp(r);

    /* Same stream: workers.proto's imports were all sent already. */
    r = ask(st, BY_FILENAME, "apsd/v1/workers.proto", 0);
    assert_string_equal(file_names(r), "apsd/v1/workers.proto");
    free_resp(r);

    /* The requested file itself is always sent, its imports not again. */
    r = ask(st, BY_SYMBOL, "apsd.v1.Scheduler.AddJob", 0);
    assert_string_equal(file_names(r), "apsd/v1/scheduler.proto");
    free_resp(r);
    r = ask(st, BY_FILENAME, "google/protobuf/timestamp.proto", 0);
    assert_string_equal(file_names(r), "google/protobuf/timestamp.proto");
    free_resp(r);

    /* Another stream starts from nothing. */
    r = ask(st2, BY_FILENAME, "apsd/v1/workers.proto", 0);
    assert_string_equal(file_names(r),
                        "apsd/v1/workers.proto|google/protobuf/duration.proto|"
                        "google/protobuf/struct.proto|google/protobuf/timestamp.proto");
    free_resp(r);
    aps_refl_stream_free(st);
    aps_refl_stream_free(st2);
}

static void
test_symbol_kinds(void **state)
{
    static const struct {
        const char *sym, *file;
    } cases[] = {
        {"apsd.v1.Scheduler.AddJob", "apsd/v1/scheduler.proto"}, /* method */
        {"apsd.v1.Scheduler.SubscribeEvents", "apsd/v1/scheduler.proto"},
        {"apsd.v1.Workers.Acquire", "apsd/v1/workers.proto"},
        {"apsd.v1.Job", "apsd/v1/scheduler.proto"},                             /* message */
        {".apsd.v1.Job", "apsd/v1/scheduler.proto"},                            /* leading dot */
        {"apsd.v1.Job.id", "apsd/v1/scheduler.proto"},                          /* field */
        {"apsd.v1.OverlapPolicy", "apsd/v1/scheduler.proto"},                   /* enum */
        {"google.protobuf.Struct.FieldsEntry", "google/protobuf/struct.proto"}, /* nested */
        {"grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"},
        {"grpc.health.v1.Health.Check", "grpc/health/v1/health.proto"},
        {"grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"},
        {"grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
         "grpc/reflection/v1/reflection.proto"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aps_refl_stream *st = make_stream(api);
        Resp *r = ask(st, BY_SYMBOL, cases[i].sym, 0);
        char *names = file_names(r);

        if (strncmp(names, cases[i].file, strlen(cases[i].file)) != 0 ||
            (names[strlen(cases[i].file)] != '\0' && names[strlen(cases[i].file)] != '|'))
            fail_msg("%s: got %s, want %s first", cases[i].sym, names, cases[i].file);
        free_resp(r);
        aps_refl_stream_free(st);
    }
}

static void
test_not_found(void **state)
{
    aps_refl_stream *st = make_stream(api);
    Resp *r;

    (void)state;
    r = ask(st, BY_SYMBOL, "apsd.v1.NoSuchThing", 0);
    assert_not_found(r, "apsd.v1.NoSuchThing");
    assert_string_equal(r->original_request->file_containing_symbol, "apsd.v1.NoSuchThing");
    free_resp(r);
    /* Enum values are not indexed; a prefix of a name is not a name. */
    r = ask(st, BY_SYMBOL, "apsd.v1", 0);
    assert_not_found(r, "apsd.v1");
    free_resp(r);
    r = ask(st, BY_SYMBOL, "", 0);
    assert_int_equal(r->message_response_case, RESP_ERROR);
    assert_int_equal(r->error_response->error_code, 5);
    free_resp(r);
    r = ask(st, BY_FILENAME, "apsd/v1/nope.proto", 0);
    assert_not_found(r, "apsd/v1/nope.proto");
    free_resp(r);
    r = ask(st, BY_EXTENSION, "apsd.v1.Job", 100);
    assert_not_found(r, "apsd.v1.Job");
    free_resp(r);
    r = ask(st, EXT_NUMBERS, "apsd.v1.Nope", 0);
    assert_not_found(r, "apsd.v1.Nope");
    free_resp(r);
    /* An enum or a service is not a type with extensions. */
    r = ask(st, EXT_NUMBERS, "apsd.v1.OverlapPolicy", 0);
    assert_not_found(r, "apsd.v1.OverlapPolicy");
    free_resp(r);
    /* The stream goes on, and errors marked nothing as sent. */
    r = ask(st, BY_FILENAME, "apsd/v1/workers.proto", 0);
    assert_int_equal(r->file_descriptor_response->n_file_descriptor_proto, 4);
    free_resp(r);
    aps_refl_stream_free(st);
}

static void
test_extension_numbers_proto3(void **state)
{
    aps_refl_stream *st = make_stream(api);
    Resp *r = ask(st, EXT_NUMBERS, "apsd.v1.Job", 0);

    (void)state;
    assert_int_equal(r->message_response_case, RESP_EXTNUMS);
    assert_string_equal(r->all_extension_numbers_response->base_type_name, "apsd.v1.Job");
    assert_int_equal(r->all_extension_numbers_response->n_extension_number, 0);
    free_resp(r);
    aps_refl_stream_free(st);
}

static void
test_unset_request_kind(void **state)
{
    aps_refl_stream *st = make_stream(api);
    uint8_t *out;
    size_t out_len;
    Resp *r;
    /* host only; then an unknown field 9 (a future request kind). */
    static const uint8_t host_only[] = {0x0a, 0x01, 'h'};
    static const uint8_t future[] = {0x4a, 0x01, 'x'};

    (void)state;
    assert_int_equal(aps_refl_handle(st, host_only, sizeof(host_only), &out, &out_len), 0);
    r = grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    assert_string_equal(r->valid_host, "h");
    assert_int_equal(r->message_response_case, RESP_ERROR);
    assert_int_equal(r->error_response->error_code, 12);
    free_resp(r);
    free(out);
    /* An empty message is a valid (empty) request. */
    assert_int_equal(aps_refl_handle(st, NULL, 0, &out, &out_len), 0);
    free(out);
    assert_int_equal(aps_refl_handle(st, future, sizeof(future), &out, &out_len), 0);
    r = grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    assert_int_equal(r->error_response->error_code, 12);
    free_resp(r);
    free(out);
    aps_refl_stream_free(st);
}

static void
test_garbage_rejected(void **state)
{
    static const uint8_t bad[][6] = {
        {0x80, 0x00, 0x2a, 0, 0, 0},          /* field 0 in a 2-byte key */
        {0x2a, 0x03, 0x80, 0x00, 0x01, 0},    /* the same inside ExtensionRequest */
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* endless varint key */
        {0x1a, 0x05, 'a', 'b', 0, 0},         /* string longer than the input */
        {0x22, 0x7f, 0, 0, 0, 0},             /* symbol longer than the input */
        {0x0b, 0, 0, 0, 0, 0},                /* start group */
        {0x07, 0, 0, 0, 0, 0},                /* wire type 7 */
        {0x2a, 0x02, 0x08, 0x80, 0, 0},       /* ExtensionRequest cut in a varint */
    };
    static const size_t bad_len[] = {3, 5, 6, 6, 6, 1, 1, 4};
    aps_refl_stream *st = make_stream(api);
    size_t len;
    uint8_t *req = pack_req(BY_SYMBOL, "", "apsd.v1.Scheduler", 0, &len), *out;
    size_t out_len;
    Resp *r;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        out = (uint8_t *)1;
        out_len = 7;
        if (aps_refl_handle(st, bad[i], bad_len[i], &out, &out_len) != APS_EINVAL)
            fail_msg("garbage %zu accepted", i);
        assert_null(out);
        assert_int_equal(out_len, 0);
    }
    /* Strings must be UTF-8 (proto3), wherever they are. */
    static const char *not_utf8[] = {"apsd.v1.J\xffob", "\xc0\xaf", "\xed\xa0\x80", "a\xe2\x82",
                                     "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(not_utf8) / sizeof(not_utf8[0]); i++) {
        static const enum kind kinds[] = {BY_SYMBOL, BY_FILENAME, EXT_NUMBERS, LIST, BY_EXTENSION};

        for (size_t k = 0; k < 5; k++) {
            uint8_t *b = pack_req(kinds[k], "", not_utf8[i], 1, &len);

            assert_int_equal(aps_refl_handle(st, b, len, &out, &out_len), APS_EINVAL);
            free(b);
        }
        uint8_t *b = pack_req(LIST, not_utf8[i], "*", 0, &len); /* in host */
        assert_int_equal(aps_refl_handle(st, b, len, &out, &out_len), APS_EINVAL);
        free(b);
    }
    free(req);
    req = pack_req(BY_SYMBOL, "", "apsd.v1.Scheduler", 0, &len);
    r = ask(st, BY_SYMBOL, "apsd.v1.J\xc3\xb6" "b\xf0\x9f\x98\x80", 0); /* valid UTF-8 */
    assert_not_found(r, "apsd.v1.J\xc3\xb6" "b\xf0\x9f\x98\x80");
    free_resp(r);

    /* Every truncation of a valid request is either undecodable or a
     * valid shorter request; none crashes. */
    for (size_t n = 0; n < len; n++) {
        int rc = aps_refl_handle(st, req, n, &out, &out_len);

        assert_true(rc == 0 || rc == APS_EINVAL);
        free(out);
    }
    free(req);
    aps_refl_stream_free(st);
    /* A rejected request marked nothing: the full closure still comes. */
    st = make_stream(api);
    assert_int_equal(aps_refl_handle(st, bad[2], 6, &out, &out_len), APS_EINVAL);
    r = ask(st, BY_SYMBOL, "apsd.v1.Scheduler", 0);
    assert_int_equal(r->file_descriptor_response->n_file_descriptor_proto, 5);
    free_resp(r);
    aps_refl_stream_free(st);
}

/* The deprecated v1alpha service: packed and read with its own codec,
 * answered by the same function. */
static void
test_v1alpha(void **state)
{
    Grpc__Reflection__V1alpha__ServerReflectionRequest rq =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    Grpc__Reflection__V1alpha__ServerReflectionResponse *r;
    aps_refl_stream *st = make_stream(api);
    uint8_t buf[256], *out;
    size_t len, out_len;

    (void)state;
    rq.host = "h";
    rq.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    rq.list_services = "*";
    len = grpc__reflection__v1alpha__server_reflection_request__pack(&rq, buf);
    assert_int_equal(aps_refl_handle(st, buf, len, &out, &out_len), 0);
    r = grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    assert_string_equal(r->valid_host, "h");
    assert_int_equal(
        r->original_request->message_request_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES);
    assert_int_equal(
        r->message_response_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    assert_int_equal(r->list_services_response->n_service, 5);
    assert_string_equal(r->list_services_response->service[4]->name,
                        "grpc.reflection.v1alpha.ServerReflection");
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(r, NULL);
    free(out);

    rq.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    rq.file_containing_symbol = "apsd.v1.Workers";
    len = grpc__reflection__v1alpha__server_reflection_request__pack(&rq, buf);
    assert_int_equal(aps_refl_handle(st, buf, len, &out, &out_len), 0);
    r = grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    assert_int_equal(
        r->message_response_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    assert_int_equal(r->file_descriptor_response->n_file_descriptor_proto, 4);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(r, NULL);
    free(out);

    rq.file_containing_symbol = "nope.Nope";
    len = grpc__reflection__v1alpha__server_reflection_request__pack(&rq, buf);
    assert_int_equal(aps_refl_handle(st, buf, len, &out, &out_len), 0);
    r = grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, out_len, out);
    assert_non_null(r);
    assert_int_equal(
        r->message_response_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    assert_int_equal(r->error_response->error_code, 5);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(r, NULL);
    free(out);
    aps_refl_stream_free(st);
}

/* ------------------------------------------------------------------ */
/* The extension test set                                               */
/* ------------------------------------------------------------------ */

static void
test_extensions(void **state)
{
    aps_refl *r = make_refl(aps_test_ext_fdset, aps_test_ext_fdset_len);
    aps_refl_stream *st = make_stream(r);
    Resp *a;

    (void)state;
    assert_int_equal(aps_refl_file_count(r), 3);
    a = ask(st, BY_EXTENSION, "apsd.test.Base", 150);
    assert_string_equal(file_names(a),
                        "ext_user.proto|ext_base.proto|google/protobuf/descriptor.proto");
    free_resp(a);
    /* Declared nested in a message, same file (sent again: the root). */
    a = ask(st, BY_EXTENSION, ".apsd.test.Base", 120);
    assert_string_equal(file_names(a), "ext_user.proto");
    free_resp(a);
    a = ask(st, BY_EXTENSION, "google.protobuf.MessageOptions", 50001);
    assert_string_equal(file_names(a), "ext_user.proto");
    free_resp(a);
    a = ask(st, BY_EXTENSION, "apsd.test.Base", 101);
    assert_not_found(a, "apsd.test.Base");
    assert_non_null(strstr(a->error_response->error_message, "101"));
    free_resp(a);
    a = ask(st, BY_EXTENSION, "apsd.test.Nope", 100);
    assert_not_found(a, "apsd.test.Nope");
    free_resp(a);

    a = ask(st, EXT_NUMBERS, "apsd.test.Base", 0);
    assert_int_equal(a->message_response_case, RESP_EXTNUMS);
    assert_string_equal(a->all_extension_numbers_response->base_type_name, "apsd.test.Base");
    assert_int_equal(a->all_extension_numbers_response->n_extension_number, 3);
    assert_int_equal(a->all_extension_numbers_response->extension_number[0], 100);
    assert_int_equal(a->all_extension_numbers_response->extension_number[1], 120);
    assert_int_equal(a->all_extension_numbers_response->extension_number[2], 150);
    free_resp(a);
    a = ask(st, EXT_NUMBERS, "google.protobuf.MessageOptions", 0);
    assert_int_equal(a->all_extension_numbers_response->n_extension_number, 1);
    assert_int_equal(a->all_extension_numbers_response->extension_number[0], 50001);
    free_resp(a);
    a = ask(st, EXT_NUMBERS, "apsd.test.Base.Inner", 0);
    assert_int_equal(a->all_extension_numbers_response->n_extension_number, 0);
    free_resp(a);
    a = ask(st, EXT_NUMBERS, "apsd.test.Top", 0);
    assert_not_found(a, "apsd.test.Top");
    free_resp(a);
    aps_refl_stream_free(st);

    /* Symbols: nested message and enum, extensions, top-level enum, method. */
    static const struct {
        const char *sym, *file;
    } cases[] = {
        {"apsd.test.Base.Inner", "ext_base.proto"},
        {"apsd.test.Base.Inner.Color", "ext_base.proto"},
        {"apsd.test.Base.Inner.x", "ext_base.proto"},
        {"apsd.test.Top", "ext_base.proto"},
        {"apsd.test.Probe.Ping", "ext_base.proto"},
        {"apsd.test.tag", "ext_user.proto"},
        {"apsd.test.sensitive", "ext_user.proto"},
        {"apsd.test.Holder.holder", "ext_user.proto"},
        {"google.protobuf.FieldDescriptorProto.Type", "google/protobuf/descriptor.proto"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aps_refl_stream *s = make_stream(r);

        a = ask(s, BY_SYMBOL, cases[i].sym, 0);
        if (strncmp(file_names(a), cases[i].file, strlen(cases[i].file)) != 0)
            fail_msg("%s: got %s, want %s first", cases[i].sym, file_names(a), cases[i].file);
        free_resp(a);
        aps_refl_stream_free(s);
    }
    st = make_stream(r);
    a = ask(st, BY_SYMBOL, "apsd.test.Top.TOP_ZERO", 0); /* enum values: not indexed */
    assert_not_found(a, "TOP_ZERO");
    free_resp(a);
    a = ask(st, LIST, "", 0);
    assert_int_equal(a->list_services_response->n_service, 1);
    assert_string_equal(a->list_services_response->service[0]->name, "apsd.test.Probe");
    free_resp(a);
    aps_refl_stream_free(st);
    aps_refl_destroy(r);
}

static void
test_duplicate_files_removed(void **state)
{
    aps_refl *one = make_refl(aps_test_ext_fdset, aps_test_ext_fdset_len);
    aps_refl *two = make_refl(aps_test_dup_fdset, aps_test_dup_fdset_len);
    aps_refl_stream *s1 = make_stream(one), *s2 = make_stream(two);

    (void)state;
    assert_int_equal(aps_test_dup_fdset_len, 2 * aps_test_ext_fdset_len);
    assert_int_equal(aps_refl_file_count(two), 3);
    static const enum kind kinds[] = {BY_EXTENSION, BY_SYMBOL, EXT_NUMBERS, LIST, BY_FILENAME};
    static const char *args[] = {"apsd.test.Base", "apsd.test.Probe", "apsd.test.Base", "",
                                 "google/protobuf/descriptor.proto"};
    for (size_t i = 0; i < 5; i++) {
        size_t len, n1, n2;
        uint8_t *req = pack_req(kinds[i], "", args[i], 100, &len), *o1, *o2;

        assert_int_equal(aps_refl_handle(s1, req, len, &o1, &n1), 0);
        assert_int_equal(aps_refl_handle(s2, req, len, &o2, &n2), 0);
        assert_int_equal(n1, n2);
        assert_memory_equal(o1, o2, n1);
        free(o1);
        free(o2);
        free(req);
    }
    aps_refl_stream_free(s1);
    aps_refl_stream_free(s2);
    aps_refl_destroy(one);
    aps_refl_destroy(two);
}

static void
test_create_errors(void **state)
{
    struct slice s[8];
    size_t n = split(aps_test_ext_fdset, aps_test_ext_fdset_len, s, 8);
    aps_refl *r = (aps_refl *)1;
    static const uint8_t garbage[] = {0x0a, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t cut[] = {0x0a, 0x10, 0x0a, 0x01};
    static const uint8_t noname[] = {0x0a, 0x02, 0x12, 0x00}; /* package "" only */
    static const uint8_t fixed_file[] = {0x09, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t group[] = {0x0b, 0x0c};
    /* Names that are not UTF-8 (a client could neither ask for nor decode
     * them): a file "a\xff"; a message "M" in package "p\xf4"; a service
     * "S\xf4" (found by the fuzzer: it was listed, then not found by its
     * own name). */
    static const uint8_t file_utf8[] = {0x0a, 0x04, 0x0a, 0x02, 'a', 0xff};
    static const uint8_t pkg_utf8[] = {0x0a, 0x12, 0x0a, 0x07, 'a', '.', 'p', 'r', 'o', 't',
                                       'o',  0x12, 0x02, 'p',  0xf4, 0x22, 0x03, 0x0a, 0x01, 'M'};
    static const uint8_t svc_utf8[] = {0x0a, 0x1a, 0x0a, 0x07, 'a',  '.',  'p',  'r',  'o',
                                       't',  'o',  0x32, 0x0f, 0x0a, 0x02, 'S',  0xf4, 0x12,
                                       0x09, 0x0a, 0x01, 'm',  0x12, 0x01, 'M',  0x1a, 0x01, 'M'};

    (void)state;
    assert_int_equal(aps_refl_create(garbage, sizeof(garbage), &r), APS_EINVAL);
    assert_null(r);
    assert_int_equal(aps_refl_create(cut, sizeof(cut), &r), APS_EINVAL);
    assert_int_equal(aps_refl_create(noname, sizeof(noname), &r), APS_EINVAL);
    assert_int_equal(aps_refl_create(fixed_file, sizeof(fixed_file), &r), APS_EINVAL);
    assert_int_equal(aps_refl_create(group, sizeof(group), &r), APS_EINVAL);
    assert_int_equal(aps_refl_create(file_utf8, sizeof(file_utf8), &r), APS_EINVAL);
    assert_int_equal(aps_refl_create(pkg_utf8, sizeof(pkg_utf8), &r), APS_EINVAL);
    assert_int_equal(aps_refl_create(svc_utf8, sizeof(svc_utf8), &r), APS_EINVAL);
    assert_null(r);
    /* Names with an empty part: a service named by NUL bytes (empty to C;
     * found by the fuzzer: listed as "", then refused by that name), a
     * message "M" in packages "p.", ".p" and "p..q". */
    static const uint8_t svc_nul[] = {0x0a, 0x0f, 0x0a, 0x07, 'a',  '.',  'p', 'r', 'o',
                                      't',  'o',  0x32, 0x04, 0x0a, 0x02, 0x00, 0x00};
    assert_int_equal(aps_refl_create(svc_nul, sizeof(svc_nul), &r), APS_EINVAL);
    assert_null(r);
    static const char *const bad_pkgs[] = {"p.", ".p", "p..q"};
    for (size_t i = 0; i < sizeof(bad_pkgs) / sizeof(bad_pkgs[0]); i++) {
        size_t pl = strlen(bad_pkgs[i]);
        uint8_t set[64];
        size_t k = 0;
        set[k++] = 0x0a; /* FileDescriptorSet.file */
        set[k++] = (uint8_t)(9 + 2 + pl + 5);
        set[k++] = 0x0a; /* name */
        set[k++] = 7;
        memcpy(set + k, "a.proto", 7);
        k += 7;
        set[k++] = 0x12; /* package */
        set[k++] = (uint8_t)pl;
        memcpy(set + k, bad_pkgs[i], pl);
        k += pl;
        memcpy(set + k, "\x22\x03\x0a\x01M", 5); /* message_type { name: "M" } */
        k += 5;
        assert_int_equal(aps_refl_create(set, k, &r), APS_EINVAL);
        assert_null(r);
    }
    assert_int_equal(aps_refl_create(aps_fdset, aps_fdset_len - 1, &r), APS_EINVAL);

    /* ext_user.proto alone (protoc writes imports first: it is the last
     * file): its imports are missing. */
    assert_int_equal(n, 3);
    uint8_t *alone = malloc(s[2].n + 11);
    size_t len = 0, v = s[2].n;
    assert_non_null(alone);
    alone[len++] = 0x0a;
    do {
        alone[len++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memcpy(alone + len, s[2].p, s[2].n);
    len += s[2].n;
    assert_int_equal(aps_refl_create(alone, len, &r), APS_ENOENT);
    assert_null(r);
    free(alone);

    /* An empty set is valid and empty. */
    r = make_refl(NULL, 0);
    assert_int_equal(aps_refl_file_count(r), 0);
    aps_refl_stream *st = make_stream(r);
    Resp *a = ask(st, LIST, "", 0);
    assert_int_equal(a->list_services_response->n_service, 0);
    free_resp(a);
    a = ask(st, BY_SYMBOL, "x", 0);
    assert_not_found(a, "x");
    free_resp(a);
    aps_refl_stream_free(st);
    aps_refl_destroy(r);
    aps_refl_destroy(NULL);
    aps_refl_stream_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_indexes_every_file),
        cmocka_unit_test(test_list_services),
        cmocka_unit_test(test_symbol_closure_and_dedup),
        cmocka_unit_test(test_symbol_kinds),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_extension_numbers_proto3),
        cmocka_unit_test(test_unset_request_kind),
        cmocka_unit_test(test_garbage_rejected),
        cmocka_unit_test(test_v1alpha),
        cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_duplicate_files_removed),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
