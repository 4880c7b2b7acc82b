/*
 * libFuzzer target for service/reflection.c.
 *
 * Input: a mode byte, then
 *   even: requests against the embedded API set (aps_fdset), each framed
 *         as one length byte and that many bytes, all on one stream;
 *   odd:  a FileDescriptorSet for aps_refl_create(); if it is accepted, a
 *         fixed list of requests runs on it (list_services, then each
 *         service by symbol, a file and a type by name).
 * Checked, whatever the bytes:
 *   - aps_refl_handle returns 0 with a response that decodes, or
 *     APS_EINVAL with no response; aps_refl_create 0 or APS_EINVAL/ENOENT;
 *   - every file sent decodes as a FileDescriptorProto, appears at most
 *     once per response, and only as the first entry if it was sent
 *     before on the stream;
 *   - closure: every import of every file sent was sent on the stream
 *     (before or in the same response), so a client can always build it.
 *
 * Build and run: `tools/fuzz reflection` (seeds in corpus/reflection/);
 * //service/fuzz:reflection_corpus_test runs the seeds once as a test.
 * Seeds: service/fuzz/gen_corpus.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "apsd_fdset.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "reflection.h"

#define MAX_SENT 4096

/* Names sent on the current stream (fuzz inputs are small). */
struct sent {
    char *name[MAX_SENT];
    size_t n;
};

static int
was_sent(const struct sent *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->name[i], name) == 0)
            return 1;
    }
    return 0;
}

static void
sent_free(struct sent *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->name[i]);
    s->n = 0;
}

/* The API set's files, unpacked once: decoding scheduler.proto (with its
 * comments) on every answer would make the fuzzer ten times slower. */
static struct {
    const uint8_t *data;
    size_t len;
    Google__Protobuf__FileDescriptorProto *f;
} known[64];
static size_t n_known;

static void
load_known(void)
{
    const uint8_t *p = aps_fdset, *end = aps_fdset + aps_fdset_len;

    while (p < end && n_known < 64) {
        uint64_t v = 0;
        unsigned shift = 0;

        if (*p++ != 0x0a)
            abort();
        do {
            v |= (uint64_t)(*p & 0x7f) << shift;
            shift += 7;
        } while (*p++ & 0x80);
        known[n_known].data = p;
        known[n_known].len = (size_t)v;
        known[n_known].f = google__protobuf__file_descriptor_proto__unpack(NULL, v, p);
        if (!known[n_known].f)
            abort();
        n_known++;
        p += v;
    }
}

/* The file in `b`; *owned says whether the caller frees it. */
static Google__Protobuf__FileDescriptorProto *
decode_file(const ProtobufCBinaryData *b, int *owned)
{
    for (size_t i = 0; i < n_known; i++) {
        if (known[i].len == b->len && memcmp(known[i].data, b->data, b->len) == 0) {
            *owned = 0;
            return known[i].f;
        }
    }
    *owned = 1;
    return google__protobuf__file_descriptor_proto__unpack(NULL, b->len, b->data);
}

static void
check_files(const Grpc__Reflection__V1__FileDescriptorResponse *fr, struct sent *s)
{
    size_t n = fr->n_file_descriptor_proto;
    Google__Protobuf__FileDescriptorProto **f;
    int *owned;

    if (n == 0)
        abort(); /* at least the requested file */
    f = calloc(n, sizeof(*f));
    owned = calloc(n, sizeof(*owned));
    if (!f || !owned)
        abort();
    for (size_t i = 0; i < n; i++) {
        f[i] = decode_file(&fr->file_descriptor_proto[i], &owned[i]);
        if (!f[i] || !f[i]->name)
            abort();
        for (size_t k = 0; k < i; k++) {
            if (strcmp(f[k]->name, f[i]->name) == 0)
                abort(); /* twice in one response */
        }
        if (i > 0 && was_sent(s, f[i]->name))
            abort(); /* an import sent again */
    }
    for (size_t i = 0; i < n; i++) {
        if (!was_sent(s, f[i]->name) && s->n < MAX_SENT) {
            s->name[s->n] = strdup(f[i]->name);
            if (!s->name[s->n])
                abort();
            s->n++;
        }
    }
    if (s->n < MAX_SENT) {
        for (size_t i = 0; i < n; i++) {
            for (size_t d = 0; d < f[i]->n_dependency; d++) {
                if (!was_sent(s, f[i]->dependency[d]))
                    abort(); /* closure incomplete */
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (owned[i])
            google__protobuf__file_descriptor_proto__free_unpacked(f[i], NULL);
    }
    free(owned);
    free(f);
}

/* One request; returns the decoded response (NULL if rejected). */
static Grpc__Reflection__V1__ServerReflectionResponse *
run(aps_refl_stream *st, const uint8_t *req, size_t len, struct sent *s)
{
    Grpc__Reflection__V1__ServerReflectionResponse *r;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = aps_refl_handle(st, req, len, &out, &out_len);

    if (rc == APS_EINVAL) {
        if (out || out_len)
            abort();
        return NULL;
    }
    if (rc != 0 || !out)
        abort();
    r = grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    free(out);
    if (!r || !r->original_request)
        abort();
    switch (r->message_response_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE:
        check_files(r->file_descriptor_response, s);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE:
        if (r->error_response->error_code != APS_REFL_NOT_FOUND &&
            r->error_response->error_code != APS_REFL_UNIMPLEMENTED)
            abort();
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE:
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE:
        break;
    default:
        abort();
    }
    return r;
}

static Grpc__Reflection__V1__ServerReflectionResponse *
run_kind(aps_refl_stream *st, int kind, const char *arg, struct sent *s)
{
    Grpc__Reflection__V1__ServerReflectionRequest rq =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    Grpc__Reflection__V1__ServerReflectionResponse *r;
    uint8_t *buf;
    size_t n;

    rq.message_request_case =
        (Grpc__Reflection__V1__ServerReflectionRequest__MessageRequestCase)kind;
    rq.file_by_filename = (char *)arg; /* every string member shares the union */
    n = grpc__reflection__v1__server_reflection_request__get_packed_size(&rq);
    buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    grpc__reflection__v1__server_reflection_request__pack(&rq, buf);
    r = run(st, buf, n, s);
    free(buf);
    if (!r)
        abort(); /* a well-formed request is never rejected */
    return r;
}

static void
fuzz_set(const uint8_t *data, size_t size)
{
    Grpc__Reflection__V1__ServerReflectionResponse *list, *r;
    aps_refl_stream *st = NULL;
    aps_refl *refl = NULL;
    struct sent s = {0};
    int rc = aps_refl_create(data, size, &refl);

    if (rc != 0) {
        if (refl || (rc != APS_EINVAL && rc != APS_ENOENT))
            abort();
        return;
    }
    if (aps_refl_stream_new(refl, &st) != 0)
        abort();
    list = run_kind(st, 7, "*", &s);
    if (list->message_response_case !=
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE)
        abort();
    for (size_t i = 0; i < list->list_services_response->n_service; i++) {
        r = run_kind(st, 4, list->list_services_response->service[i]->name, &s);
        /* A listed service is always found. */
        if (r->message_response_case !=
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE)
            abort();
        grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    }
    grpc__reflection__v1__server_reflection_response__free_unpacked(list, NULL);
    r = run_kind(st, 3, "google/protobuf/descriptor.proto", &s);
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    r = run_kind(st, 6, "google.protobuf.MessageOptions", &s);
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    sent_free(&s);
    aps_refl_stream_free(st);
    aps_refl_destroy(refl);
}

static aps_refl *api;

static void
fuzz_requests(const uint8_t *data, size_t size)
{
    aps_refl_stream *st = NULL;
    struct sent s = {0};

    if (!api) {
        if (aps_refl_create(aps_fdset, aps_fdset_len, &api) != 0)
            abort();
        load_known();
    }
    if (aps_refl_stream_new(api, &st) != 0)
        abort();
    while (size > 0) {
        size_t n = data[0];
        Grpc__Reflection__V1__ServerReflectionResponse *r;

        data++;
        size--;
        if (n > size)
            n = size;
        r = run(st, data, n, &s);
        if (r)
            grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
        data += n;
        size -= n;
    }
    sent_free(&s);
    aps_refl_stream_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        fuzz_set(data + 1, size - 1);
    else
        fuzz_requests(data + 1, size - 1);
    return 0;
}
