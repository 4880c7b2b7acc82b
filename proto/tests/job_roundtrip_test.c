/*
 * Builds Jobs with every trigger kind and every target kind, packs and
 * unpacks them with protobuf-c, and compares every field: a generic walk
 * over the message descriptors (so a field added later is compared too),
 * plus direct checks of values that must survive byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apsd/v1/scheduler.pb-c.h"

/* ---- generic deep comparison over protobuf-c descriptors ---------------- */

static int messages_equal(const ProtobufCMessage *a, const ProtobufCMessage *b);

static size_t
scalar_size(ProtobufCType type)
{
    switch (type) {
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

/* Compares one value of `type` stored at a and b. */
static int
values_equal(ProtobufCType type, const void *a, const void *b)
{
    switch (type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *sa = *(char *const *)a, *sb = *(char *const *)b;
        return strcmp(sa ? sa : "", sb ? sb : "") == 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *da = a, *db = b;
        return da->len == db->len && (da->len == 0 || memcmp(da->data, db->data, da->len) == 0);
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return messages_equal(*(ProtobufCMessage *const *)a, *(ProtobufCMessage *const *)b);
    default:
        return memcmp(a, b, scalar_size(type)) == 0;
    }
}

/* True when a field holds its proto3 default (so "absent" and "zero" agree). */
static int
is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    static const unsigned char zero[16];
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    default:
        return memcmp(p, zero, scalar_size(f->type)) == 0;
    }
}

static int
messages_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->descriptor != b->descriptor)
        return 0;
    const ProtobufCMessageDescriptor *d = a->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *pa = (const char *)a + f->offset;
        const char *pb = (const char *)b + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)((const char *)a + f->quantifier_offset);
            size_t nb = *(const size_t *)((const char *)b + f->quantifier_offset);
            if (na != nb)
                return 0;
            const char *arr_a = *(char *const *)pa, *arr_b = *(char *const *)pb;
            size_t sz = scalar_size(f->type);
            for (size_t k = 0; k < na; k++) {
                if (!values_equal(f->type, arr_a + k * sz, arr_b + k * sz))
                    return 0;
            }
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t ca = *(const uint32_t *)((const char *)a + f->quantifier_offset);
            uint32_t cb = *(const uint32_t *)((const char *)b + f->quantifier_offset);
            if ((ca == f->id) != (cb == f->id))
                return 0;
            if (ca == f->id && !values_equal(f->type, pa, pb))
                return 0;
            continue;
        }
        if (is_default(f, pa) && is_default(f, pb))
            continue;
        if (!values_equal(f->type, pa, pb))
            return 0;
    }
    return 1;
}

/* ---- building the messages ------------------------------------------------ */

/* All the test's sub-messages live in one struct on the caller's stack. */
typedef struct fixture {
    Google__Protobuf__Timestamp t_start, t_end, t_run, t_next, t_create, t_update, t_last;
    Google__Protobuf__Duration d_jitter, d_timeout, d_misfire, d_p50, d_p90, d_p99, d_max;
    Apsd__V1__CronTrigger cron, crontab;
    Apsd__V1__IntervalTrigger interval;
    Apsd__V1__DateTrigger date;
    Apsd__V1__CalendarIntervalTrigger calendar;
    Apsd__V1__AllOfTrigger all_of;
    Apsd__V1__AnyOfTrigger any_of;
    Apsd__V1__Trigger t_cron, t_crontab, t_interval, t_date, t_calendar, t_all, t_any;
    Apsd__V1__Trigger *all_list[2], *any_list[5];
    Apsd__V1__CommandTarget command;
    Apsd__V1__CommandTarget__EnvEntry env[2];
    Apsd__V1__CommandTarget__EnvEntry *env_list[2];
    char *argv[3];
    Apsd__V1__RemoteTarget remote;
    Google__Protobuf__ListValue args;
    Google__Protobuf__Value arg_values[2];
    Google__Protobuf__Value *arg_list[2];
    Google__Protobuf__Struct kwargs;
    Google__Protobuf__Struct__FieldsEntry kw[1];
    Google__Protobuf__Struct__FieldsEntry *kw_list[1];
    Google__Protobuf__Value kw_value;
    Apsd__V1__Target target_command, target_remote;
    Apsd__V1__MisfireGraceTime misfire;
    Apsd__V1__Job__LabelsEntry labels[2];
    Apsd__V1__Job__LabelsEntry *label_list[2];
    Apsd__V1__RunOutcome outcome;
    Apsd__V1__JobStats stats;
    Apsd__V1__Job job;
} fixture;

static void
ts(Google__Protobuf__Timestamp *t, int64_t s, int32_t ns)
{
    google__protobuf__timestamp__init(t);
    t->seconds = s;
    t->nanos = ns;
}

static void
dur(Google__Protobuf__Duration *d, int64_t s, int32_t ns)
{
    google__protobuf__duration__init(d);
    d->seconds = s;
    d->nanos = ns;
}

static void
build_triggers(fixture *f)
{
    apsd__v1__cron_trigger__init(&f->cron);
    f->cron.year = "2026-2030";
    f->cron.month = "jan-jun/2";
    f->cron.day = "last fri";
    f->cron.week = "*/2";
    f->cron.day_of_week = "mon-fri";
    f->cron.hour = "9,17";
    f->cron.minute = "*/15";
    f->cron.second = "30";
    f->cron.start_date = &f->t_start;
    f->cron.end_date = &f->t_end;
    f->cron.timezone = "Europe/Berlin";
    apsd__v1__cron_trigger__init(&f->crontab);
    f->crontab.crontab = "*/5 * * * 0,7";
    f->crontab.timezone = "America/New_York";

    apsd__v1__interval_trigger__init(&f->interval);
    f->interval.weeks = 1;
    f->interval.days = 2;
    f->interval.hours = 3;
    f->interval.minutes = 4;
    f->interval.seconds = 5;
    f->interval.microseconds = 6;
    f->interval.start_date = &f->t_start;
    f->interval.end_date = &f->t_end;
    f->interval.timezone = "Asia/Tokyo";

    apsd__v1__date_trigger__init(&f->date);
    f->date.run_date = &f->t_run;
    f->date.timezone = "Australia/Lord_Howe";

    apsd__v1__calendar_interval_trigger__init(&f->calendar);
    f->calendar.years = 1;
    f->calendar.months = 2;
    f->calendar.weeks = 3;
    f->calendar.days = 4;
    f->calendar.hour = 5;
    f->calendar.minute = 6;
    f->calendar.second = 7;
    f->calendar.start_date = &f->t_start;
    f->calendar.end_date = &f->t_end;
    f->calendar.timezone = "Europe/Dublin";

    apsd__v1__trigger__init(&f->t_cron);
    f->t_cron.kind_case = APSD__V1__TRIGGER__KIND_CRON;
    f->t_cron.cron = &f->cron;
    apsd__v1__trigger__init(&f->t_crontab);
    f->t_crontab.kind_case = APSD__V1__TRIGGER__KIND_CRON;
    f->t_crontab.cron = &f->crontab;
    apsd__v1__trigger__init(&f->t_interval);
    f->t_interval.kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
    f->t_interval.interval = &f->interval;
    apsd__v1__trigger__init(&f->t_date);
    f->t_date.kind_case = APSD__V1__TRIGGER__KIND_DATE;
    f->t_date.date = &f->date;
    apsd__v1__trigger__init(&f->t_calendar);
    f->t_calendar.kind_case = APSD__V1__TRIGGER__KIND_CALENDAR_INTERVAL;
    f->t_calendar.calendar_interval = &f->calendar;

    apsd__v1__all_of_trigger__init(&f->all_of);
    f->all_list[0] = &f->t_cron;
    f->all_list[1] = &f->t_crontab;
    f->all_of.n_triggers = 2;
    f->all_of.triggers = f->all_list;
    apsd__v1__trigger__init(&f->t_all);
    f->t_all.kind_case = APSD__V1__TRIGGER__KIND_ALL_OF;
    f->t_all.all_of = &f->all_of;

    apsd__v1__any_of_trigger__init(&f->any_of);
    f->any_list[0] = &f->t_all;
    f->any_list[1] = &f->t_interval;
    f->any_list[2] = &f->t_date;
    f->any_list[3] = &f->t_calendar;
    f->any_list[4] = &f->t_cron;
    f->any_of.n_triggers = 5;
    f->any_of.triggers = f->any_list;
    apsd__v1__trigger__init(&f->t_any);
    f->t_any.kind_case = APSD__V1__TRIGGER__KIND_ANY_OF;
    f->t_any.any_of = &f->any_of;
    f->t_any.jitter = &f->d_jitter;
}

static void
build_targets(fixture *f)
{
    apsd__v1__command_target__init(&f->command);
    f->argv[0] = "/bin/sh";
    f->argv[1] = "-c";
    f->argv[2] = "echo \"h\xc3\xa9llo\" >&2; exit 3";
    f->command.n_argv = 3;
    f->command.argv = f->argv;
    for (int i = 0; i < 2; i++) {
        apsd__v1__command_target__env_entry__init(&f->env[i]);
        f->env_list[i] = &f->env[i];
    }
    f->env[0].key = "LANG";
    f->env[0].value = "C.UTF-8";
    f->env[1].key = "EMPTY";
    f->env[1].value = "";
    f->command.n_env = 2;
    f->command.env = f->env_list;
    f->command.cwd = "/tmp";
    f->command.timeout = &f->d_timeout;
    f->command.max_output_bytes = 65536;
    apsd__v1__target__init(&f->target_command);
    f->target_command.kind_case = APSD__V1__TARGET__KIND_COMMAND;
    f->target_command.command = &f->command;

    google__protobuf__list_value__init(&f->args);
    google__protobuf__value__init(&f->arg_values[0]);
    f->arg_values[0].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    f->arg_values[0].string_value = "定时任务";
    google__protobuf__value__init(&f->arg_values[1]);
    f->arg_values[1].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    f->arg_values[1].number_value = 2.5;
    f->arg_list[0] = &f->arg_values[0];
    f->arg_list[1] = &f->arg_values[1];
    f->args.n_values = 2;
    f->args.values = f->arg_list;
    google__protobuf__struct__init(&f->kwargs);
    google__protobuf__struct__fields_entry__init(&f->kw[0]);
    google__protobuf__value__init(&f->kw_value);
    f->kw_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    f->kw_value.bool_value = 1;
    f->kw[0].key = "verbose";
    f->kw[0].value = &f->kw_value;
    f->kw_list[0] = &f->kw[0];
    f->kwargs.n_fields = 1;
    f->kwargs.fields = f->kw_list;
    apsd__v1__remote_target__init(&f->remote);
    f->remote.task = "myapp.jobs:aps_test";
    f->remote.args = &f->args;
    f->remote.kwargs = &f->kwargs;
    f->remote.queue = "reports";
    apsd__v1__target__init(&f->target_remote);
    f->target_remote.kind_case = APSD__V1__TARGET__KIND_REMOTE;
    f->target_remote.remote = &f->remote;
}

static void
build_job(fixture *f, Apsd__V1__Trigger *trigger, Apsd__V1__Target *target)
{
    memset(f, 0, sizeof(*f));
    ts(&f->t_start, 1795000000, 250000000);
    ts(&f->t_end, 1900000000, 0);
    ts(&f->t_run, 1795741200, 999999000);
    ts(&f->t_next, 1795741205, 0);
    ts(&f->t_create, 1795740000, 1000);
    ts(&f->t_update, 1795740001, 2000);
    ts(&f->t_last, 1795740002, 0);
    dur(&f->d_jitter, 2, 500000000);
    dur(&f->d_timeout, 30, 0);
    dur(&f->d_misfire, 15, 0);
    dur(&f->d_p50, 0, 120000);
    dur(&f->d_p90, 0, 450000);
    dur(&f->d_p99, 0, 1900000);
    dur(&f->d_max, 0, 3000000);
    build_triggers(f);
    build_targets(f);

    apsd__v1__misfire_grace_time__init(&f->misfire);
    f->misfire.limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_DURATION;
    f->misfire.duration = &f->d_misfire;

    for (int i = 0; i < 2; i++) {
        apsd__v1__job__labels_entry__init(&f->labels[i]);
        f->label_list[i] = &f->labels[i];
    }
    f->labels[0].key = "team";
    f->labels[0].value = "billing";
    f->labels[1].key = "tier";
    f->labels[1].value = "1";

    apsd__v1__run_outcome__init(&f->outcome);
    f->outcome.status = APSD__V1__RUN_STATUS__RUN_STATUS_FAILED;
    f->outcome.termination_case = APSD__V1__RUN_OUTCOME__TERMINATION_EXIT_CODE;
    f->outcome.exit_code = 3;
    f->outcome.stderr_tail.data = (uint8_t *)"h\xc3\xa9llo\n\0binary";
    f->outcome.stderr_tail.len = 14;
    f->outcome.stderr_truncated = 1;
    f->outcome.start_time = &f->t_last;
    f->outcome.duration = &f->d_max;
    f->outcome.error = "exit status 3";

    apsd__v1__job_stats__init(&f->stats);
    f->stats.runs = 10;
    f->stats.failures = 2;
    f->stats.misses = 1;
    f->stats.max_instance_skips = 4;
    f->stats.coalesced = 5;
    f->stats.last_run_id = "0123456789abcdef0123456789abcdef";
    f->stats.last_run_time = &f->t_last;
    f->stats.last_outcome = &f->outcome;
    f->stats.lateness_p50 = &f->d_p50;
    f->stats.lateness_p90 = &f->d_p90;
    f->stats.lateness_p99 = &f->d_p99;
    f->stats.lateness_max = &f->d_max;

    apsd__v1__job__init(&f->job);
    f->job.id = "nightly-report";
    f->job.name = "Nightly report";
    f->job.trigger = trigger;
    f->job.target = target;
    f->job.executor = "default";
    f->job.jobstore = "default";
    f->job.misfire_grace_time = &f->misfire;
    f->job.optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE;
    f->job.coalesce = 0; /* set to false: must stay distinguishable from unset */
    f->job.optional_max_instances_case = APSD__V1__JOB__OPTIONAL_MAX_INSTANCES_MAX_INSTANCES;
    f->job.max_instances = 3;
    f->job.overlap_policy = APSD__V1__OVERLAP_POLICY__OVERLAP_POLICY_QUEUE_ONE;
    f->job.n_labels = 2;
    f->job.labels = f->label_list;
    f->job.next_run_time = &f->t_next;
    f->job.paused = 0;
    f->job.running_instances = 2;
    f->job.queued_runs = 1;
    f->job.create_time = &f->t_create;
    f->job.update_time = &f->t_update;
    f->job.stats = &f->stats;
}

/* Packs, unpacks, compares, re-packs: returns the unpacked job (to free). */
static Apsd__V1__Job *
roundtrip(const Apsd__V1__Job *job)
{
    size_t n = apsd__v1__job__get_packed_size(job);
    assert_true(n > 0);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(apsd__v1__job__pack(job, buf), n);
    Apsd__V1__Job *back = apsd__v1__job__unpack(NULL, n, buf);
    assert_non_null(back);
    assert_true(messages_equal(&job->base, &back->base));
    /* Re-packing the decoded message gives the same bytes. */
    uint8_t *again = malloc(n);
    assert_non_null(again);
    assert_int_equal(apsd__v1__job__get_packed_size(back), n);
    assert_int_equal(apsd__v1__job__pack(back, again), n);
    assert_memory_equal(buf, again, n);
    free(again);
    free(buf);
    return back;
}

static void
test_command_job_every_trigger_kind(void **state)
{
    (void)state;
    fixture f;
    build_job(&f, NULL, NULL);
    f.job.trigger = &f.t_any;
    f.job.target = &f.target_command;
    Apsd__V1__Job *back = roundtrip(&f.job);

    /* Spot checks that the walk above really saw the values. */
    assert_int_equal(back->trigger->kind_case, APSD__V1__TRIGGER__KIND_ANY_OF);
    assert_int_equal(back->trigger->any_of->n_triggers, 5);
    Apsd__V1__Trigger *all = back->trigger->any_of->triggers[0];
    assert_int_equal(all->kind_case, APSD__V1__TRIGGER__KIND_ALL_OF);
    assert_string_equal(all->all_of->triggers[0]->cron->day, "last fri");
    assert_string_equal(all->all_of->triggers[1]->cron->crontab, "*/5 * * * 0,7");
    assert_int_equal(back->trigger->any_of->triggers[1]->interval->microseconds, 6);
    assert_int_equal(back->trigger->any_of->triggers[2]->date->run_date->nanos, 999999000);
    assert_string_equal(back->trigger->any_of->triggers[3]->calendar_interval->timezone,
                        "Europe/Dublin");
    assert_int_equal(back->trigger->jitter->nanos, 500000000);
    assert_int_equal(back->target->command->n_argv, 3);
    assert_string_equal(back->target->command->argv[2], "echo \"h\xc3\xa9llo\" >&2; exit 3");
    assert_int_equal(back->target->command->n_env, 2);
    assert_string_equal(back->target->command->env[1]->key, "EMPTY");
    assert_int_equal(back->optional_coalesce_case, APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE);
    assert_false(back->coalesce);
    assert_int_equal(back->max_instances, 3);
    assert_int_equal(back->misfire_grace_time->limit_case,
                     APSD__V1__MISFIRE_GRACE_TIME__LIMIT_DURATION);
    assert_int_equal(back->stats->last_outcome->stderr_tail.len, 14);
    assert_memory_equal(back->stats->last_outcome->stderr_tail.data, "h\xc3\xa9llo\n\0binary", 14);
    apsd__v1__job__free_unpacked(back, NULL);
}

static void
test_remote_job_and_unset_options(void **state)
{
    (void)state;
    fixture f;
    build_job(&f, NULL, NULL);
    f.job.trigger = &f.t_interval;
    f.job.target = &f.target_remote;
    f.job.optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE__NOT_SET;
    f.job.optional_max_instances_case = APSD__V1__JOB__OPTIONAL_MAX_INSTANCES__NOT_SET;
    f.misfire.limit_case = APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED;
    f.misfire.unlimited = 1;
    Apsd__V1__Job *back = roundtrip(&f.job);

    assert_int_equal(back->target->kind_case, APSD__V1__TARGET__KIND_REMOTE);
    assert_string_equal(back->target->remote->task, "myapp.jobs:aps_test");
    assert_string_equal(back->target->remote->args->values[0]->string_value, "定时任务");
    assert_true(back->target->remote->args->values[1]->number_value == 2.5);
    assert_string_equal(back->target->remote->kwargs->fields[0]->key, "verbose");
    assert_true(back->target->remote->kwargs->fields[0]->value->bool_value);
    assert_int_equal(back->optional_coalesce_case, APSD__V1__JOB__OPTIONAL_COALESCE__NOT_SET);
    assert_int_equal(back->optional_max_instances_case,
                     APSD__V1__JOB__OPTIONAL_MAX_INSTANCES__NOT_SET);
    assert_int_equal(back->misfire_grace_time->limit_case,
                     APSD__V1__MISFIRE_GRACE_TIME__LIMIT_UNLIMITED);
    apsd__v1__job__free_unpacked(back, NULL);
}

static void
test_every_single_trigger_kind(void **state)
{
    (void)state;
    fixture f;
    build_job(&f, NULL, NULL);
    Apsd__V1__Trigger *kinds[] = {&f.t_cron, &f.t_crontab, &f.t_interval, &f.t_date,
                                  &f.t_calendar, &f.t_all, &f.t_any};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        f.job.trigger = kinds[i];
        f.job.target = (i % 2) ? &f.target_remote : &f.target_command;
        Apsd__V1__Job *back = roundtrip(&f.job);
        assert_int_equal(back->trigger->kind_case, kinds[i]->kind_case);
        apsd__v1__job__free_unpacked(back, NULL);
    }
}

static void
test_comparison_detects_differences(void **state)
{
    (void)state;
    /* The comparator must not be vacuous: a changed leaf deep in the tree,
     * or a oneof switched, makes the messages differ. */
    fixture f, g;
    build_job(&f, NULL, NULL);
    build_job(&g, NULL, NULL);
    f.job.trigger = &f.t_any;
    g.job.trigger = &g.t_any;
    f.job.target = &f.target_command;
    g.job.target = &g.target_command;
    assert_true(messages_equal(&f.job.base, &g.job.base));
    g.cron.second = "31";
    assert_false(messages_equal(&f.job.base, &g.job.base));
    g.cron.second = "30";
    g.job.optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE__NOT_SET;
    assert_false(messages_equal(&f.job.base, &g.job.base));
    g.job.optional_coalesce_case = APSD__V1__JOB__OPTIONAL_COALESCE_COALESCE;
    g.outcome.stderr_tail.len = 13;
    assert_false(messages_equal(&f.job.base, &g.job.base));
}

static void
test_truncated_input_is_rejected(void **state)
{
    (void)state;
    fixture f;
    build_job(&f, NULL, NULL);
    f.job.trigger = &f.t_any;
    f.job.target = &f.target_command;
    size_t n = apsd__v1__job__get_packed_size(&f.job);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    apsd__v1__job__pack(&f.job, buf);
    /* Cutting the message inside its first field must fail to decode. */
    assert_null(apsd__v1__job__unpack(NULL, 5, buf));
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_job_every_trigger_kind),
        cmocka_unit_test(test_remote_job_and_unset_options),
        cmocka_unit_test(test_every_single_trigger_kind),
        cmocka_unit_test(test_comparison_detects_differences),
        cmocka_unit_test(test_truncated_input_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
