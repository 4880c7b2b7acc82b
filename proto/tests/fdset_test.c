/*
 * The embedded FileDescriptorSet (what the reflection service will serve)
 * parses, holds the API and every file it imports, names every RPC of
 * DESIGN.md, holds gRPC's health and reflection services (listed by
 * reflection, so grpcurl must be able to describe them), and keeps the
 * comments grpcurl `describe` shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "apsd_fdset.h"
#include "google/protobuf/descriptor.pb-c.h"

static Google__Protobuf__FileDescriptorSet *set;

static int
setup(void **state)
{
    (void)state;
    set = google__protobuf__file_descriptor_set__unpack(NULL, aps_fdset_len, aps_fdset);
    return set == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    return 0;
}

static const Google__Protobuf__FileDescriptorProto *
find_file(const char *name)
{
    for (size_t i = 0; i < set->n_file; i++) {
        if (strcmp(set->file[i]->name, name) == 0)
            return set->file[i];
    }
    return NULL;
}

static const Google__Protobuf__ServiceDescriptorProto *
find_service(const Google__Protobuf__FileDescriptorProto *f, const char *name)
{
    for (size_t i = 0; i < f->n_service; i++) {
        if (strcmp(f->service[i]->name, name) == 0)
            return f->service[i];
    }
    return NULL;
}

static int
has_method(const Google__Protobuf__ServiceDescriptorProto *s, const char *name, int server_streaming)
{
    for (size_t i = 0; i < s->n_method; i++) {
        if (strcmp(s->method[i]->name, name) == 0)
            return !!s->method[i]->server_streaming == server_streaming;
    }
    return 0;
}

static void
test_contains_scheduler_service(void **state)
{
    (void)state;
    assert_true(aps_fdset_len > 1000);
    const Google__Protobuf__FileDescriptorProto *f = find_file("apsd/v1/scheduler.proto");
    assert_non_null(f);
    assert_string_equal(f->package, "apsd.v1");
    const Google__Protobuf__ServiceDescriptorProto *s = find_service(f, "Scheduler");
    assert_non_null(s);
    static const char *unary[] = {
        "AddJob",         "GetJob",         "ListJobs",        "ModifyJob",      "RescheduleJob",
        "PauseJob",       "ResumeJob",      "RunJobNow",       "RemoveJob",      "RemoveAllJobs",
        "PreviewTrigger", "GetScheduler",   "PauseScheduler",  "ResumeScheduler", "Backfill",
    };
    for (size_t i = 0; i < sizeof(unary) / sizeof(unary[0]); i++) {
        if (!has_method(s, unary[i], 0))
            fail_msg("apsd.v1.Scheduler lacks unary %s", unary[i]);
    }
    assert_true(has_method(s, "SubscribeEvents", 1));
}

static void
test_contains_workers_service(void **state)
{
    (void)state;
    const Google__Protobuf__FileDescriptorProto *f = find_file("apsd/v1/workers.proto");
    assert_non_null(f);
    const Google__Protobuf__ServiceDescriptorProto *s = find_service(f, "Workers");
    assert_non_null(s);
    assert_true(has_method(s, "Acquire", 1));
    assert_true(has_method(s, "Complete", 0));
}

static const Google__Protobuf__MethodDescriptorProto *
find_method(const Google__Protobuf__ServiceDescriptorProto *s, const char *name)
{
    for (size_t i = 0; i < s->n_method; i++) {
        if (strcmp(s->method[i]->name, name) == 0)
            return s->method[i];
    }
    return NULL;
}

static void
check_reflection_file(const char *file, const char *package)
{
    const Google__Protobuf__FileDescriptorProto *f = find_file(file);
    if (f == NULL)
        fail_msg("%s missing from the set", file);
    assert_string_equal(f->package, package);
    const Google__Protobuf__ServiceDescriptorProto *s = find_service(f, "ServerReflection");
    assert_non_null(s);
    assert_int_equal(s->n_method, 1);
    const Google__Protobuf__MethodDescriptorProto *m = find_method(s, "ServerReflectionInfo");
    assert_non_null(m);
    assert_true(m->client_streaming);
    assert_true(m->server_streaming);
    char want[128];
    snprintf(want, sizeof(want), ".%s.ServerReflectionRequest", package);
    assert_string_equal(m->input_type, want);
    snprintf(want, sizeof(want), ".%s.ServerReflectionResponse", package);
    assert_string_equal(m->output_type, want);
    assert_int_equal(f->n_dependency, 0);
}

static void
test_contains_reflection_services(void **state)
{
    (void)state;
    check_reflection_file("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1");
    check_reflection_file("grpc/reflection/v1alpha/reflection.proto", "grpc.reflection.v1alpha");
}

static void
test_contains_health_service(void **state)
{
    (void)state;
    const Google__Protobuf__FileDescriptorProto *f = find_file("grpc/health/v1/health.proto");
    assert_non_null(f);
    assert_string_equal(f->package, "grpc.health.v1");
    const Google__Protobuf__ServiceDescriptorProto *s = find_service(f, "Health");
    assert_non_null(s);
    const Google__Protobuf__MethodDescriptorProto *check = find_method(s, "Check");
    assert_non_null(check);
    assert_false(check->client_streaming);
    assert_false(check->server_streaming);
    assert_string_equal(check->input_type, ".grpc.health.v1.HealthCheckRequest");
    assert_string_equal(check->output_type, ".grpc.health.v1.HealthCheckResponse");
    assert_true(has_method(s, "Watch", 1));
}

static void
test_file_names_unique(void **state)
{
    (void)state;
    /* --include_imports writes each file once; reflection relies on it. */
    for (size_t i = 0; i < set->n_file; i++) {
        for (size_t k = i + 1; k < set->n_file; k++) {
            if (strcmp(set->file[i]->name, set->file[k]->name) == 0)
                fail_msg("%s appears twice", set->file[i]->name);
        }
    }
}

static void
test_includes_every_import(void **state)
{
    (void)state;
    /* Every dependency of every file is itself in the set (reflection must
     * be able to answer for it). */
    for (size_t i = 0; i < set->n_file; i++) {
        for (size_t k = 0; k < set->file[i]->n_dependency; k++) {
            if (find_file(set->file[i]->dependency[k]) == NULL)
                fail_msg("%s imports %s, missing from the set", set->file[i]->name,
                         set->file[i]->dependency[k]);
        }
    }
    assert_non_null(find_file("google/protobuf/timestamp.proto"));
    assert_non_null(find_file("google/protobuf/duration.proto"));
}

static void
test_keeps_comments(void **state)
{
    (void)state;
    const Google__Protobuf__FileDescriptorProto *f = find_file("apsd/v1/scheduler.proto");
    assert_non_null(f->source_code_info);
    size_t commented = 0;
    for (size_t i = 0; i < f->source_code_info->n_location; i++) {
        const char *c = f->source_code_info->location[i]->leading_comments;
        if (c != NULL && c[0] != '\0')
            commented++;
    }
    assert_true(commented > 100);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contains_scheduler_service),
        cmocka_unit_test(test_contains_workers_service),
        cmocka_unit_test(test_contains_reflection_services),
        cmocka_unit_test(test_contains_health_service),
        cmocka_unit_test(test_file_names_unique),
        cmocka_unit_test(test_includes_every_import),
        cmocka_unit_test(test_keeps_comments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
