/*
 * The C client against the real apsd: the daemon (argv[1], from runfiles)
 * runs on a free 127.0.0.1 port with a temporary data directory. Every RPC,
 * the error codes, bearer tokens and TLS, the event stream (stop, errors,
 * resumption across a daemon restart), and the worker RPCs. Every wait is
 * bounded; every daemon started is stopped, also on failure (atexit).
 *
 *   bazel test //bindings/c:client_test
 *   bazel-bin/bindings/c/client_test bazel-bin/service/apsd    # directly
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/client.h"

/* ---- The daemon ------------------------------------------------------------------ */

static const char *apsd_bin;
static char tmpdir[512];

typedef struct daemon_proc {
    pid_t pid;
    int port;
    char data[600], log[600];
    const char *extra[8];
} daemon_proc;

static daemon_proc *live[4];

static int
free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void
target_of(const daemon_proc *d, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%d", d->port);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Spawns apsd on d->port (a free one if 0). Returns 0 once it answers. */
static int
daemon_spawn(daemon_proc *d, int keep_port, const char *tls_ca)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (!keep_port || d->port == 0)
            d->port = free_port();
        char listen[64];
        snprintf(listen, sizeof listen, "127.0.0.1:%d", d->port);
        const char *argv[20] = {apsd_bin, "--listen", listen, "--data-dir", d->data};
        int n = 5;
        for (int i = 0; d->extra[i] != NULL; i++)
            argv[n++] = d->extra[i];
        argv[n] = NULL;
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execv(apsd_bin, (char *const *)argv);
            _exit(127);
        }
        d->pid = pid;
        for (int i = 0; i < 4; i++)
            if (live[i] == NULL) {
                live[i] = d;
                break;
            }
        /* Ready when GetScheduler answers (the socket may be up before the
         * service; with a token file the answer is UNAUTHENTICATED, which
         * is as good). */
        apsc_options o = APSC_OPTIONS_INIT;
        apsc_client *c = NULL;
        char target[64];
        target_of(d, target, sizeof target);
        o.target = target;
        o.tls_ca_file = tls_ca;
        o.tls_server_name = tls_ca ? "localhost" : NULL;
        o.timeout_ms = 500;
        o.wait_for_ready = 1;
        if (apsc_client_create(&o, &c, NULL) != 0)
            return -1;
        for (int i = 0; i < 60; i++) {
            Apsd__V1__GetSchedulerRequest req = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
            Apsd__V1__SchedulerInfo *info = NULL;
            apsc_error err = APSC_ERROR_INIT;
            int rc = apsc_get_scheduler(c, &req, &info, &err);
            apsc_free(info);
            int code = err.code;
            apsc_error_dispose(&err);
            if (rc == 0 || code == GRPC_STATUS_UNAUTHENTICATED) {
                apsc_client_destroy(c);
                return 0;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                d->pid = 0;
                break; /* exited: the port was taken meanwhile; try another */
            }
            sleep_ms(100);
        }
        apsc_client_destroy(c);
        if (d->pid != 0)
            return -1;
    }
    return -1;
}

static int
daemon_stop(daemon_proc *d)
{
    int status = -1;
    if (d->pid <= 0)
        return 0;
    kill(d->pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid)
            break;
        if (i == 299) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
        }
        sleep_ms(100);
    }
    d->pid = 0;
    for (int i = 0; i < 4; i++)
        if (live[i] == d)
            live[i] = NULL;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
stop_all(void)
{
    for (int i = 0; i < 4; i++)
        if (live[i] != NULL && live[i]->pid > 0) {
            kill(live[i]->pid, SIGKILL);
            waitpid(live[i]->pid, NULL, 0);
        }
    if (tmpdir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", tmpdir);
    }
}

static void
daemon_init(daemon_proc *d, const char *name)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->data, sizeof d->data, "%s/%s", tmpdir, name);
    snprintf(d->log, sizeof d->log, "%s/%s.log", tmpdir, name);
}

/* ---- Fixtures ----------------------------------------------------------------------- */

static daemon_proc main_d;
static apsc_client *cl;

static apsc_client *
connect_to(const daemon_proc *d, const char *token, const char *ca)
{
    apsc_options o = APSC_OPTIONS_INIT;
    apsc_client *c = NULL;
    char target[64];
    apsc_error err = APSC_ERROR_INIT;
    target_of(d, target, sizeof target);
    o.target = target;
    o.token = token;
    o.tls_ca_file = ca;
    o.tls_server_name = ca ? "localhost" : NULL;
    o.timeout_ms = 10000;
    if (apsc_client_create(&o, &c, &err) != 0)
        fail_msg("apsc_client_create: %s", err.message);
    apsc_error_dispose(&err);
    return c;
}

static int
group_setup(void **state)
{
    (void)state;
    daemon_init(&main_d, "main");
    if (daemon_spawn(&main_d, 0, NULL) != 0) {
        fprintf(stderr, "apsd did not start; see %s\n", main_d.log);
        return -1;
    }
    cl = connect_to(&main_d, NULL, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    apsc_client_destroy(cl);
    cl = NULL;
    int rc = daemon_stop(&main_d);
    if (rc != 0)
        fprintf(stderr, "apsd exited with %d\n", rc);
    return rc == 0 ? 0 : -1;
}

/* ---- Helpers ---------------------------------------------------------------------------- */

#define EXPECT_STATUS(call, want)                                                                \
    do {                                                                                       \
        apsc_error e_ = APSC_ERROR_INIT;                                                       \
        void *out_ = NULL;                                                                     \
        (void)out_;                                                                            \
        int rc_ = (call);                                                                      \
        if (rc_ != APSC_ERPC || e_.code != (want))                                             \
            fail_msg("%s: rc %d, status %s (%s), want %s", #call, rc_,                         \
                     apsc_status_name(e_.code), e_.message ? e_.message : "",                  \
                     apsc_status_name(want));                                                  \
        apsc_error_dispose(&e_);                                                               \
    } while (0)

static void
check_ok(int rc, apsc_error *err, const char *what)
{
    if (rc != 0)
        fail_msg("%s: rc %d, %s: %s", what, rc, apsc_status_name(err->code),
                 err->message ? err->message : "");
}

/* A job on a command with the given trigger (JSON), built with the JSON
 * helper: the request is a heap message, freed by the caller. */
static Apsd__V1__AddJobRequest *
add_req(const char *id, const char *trigger_json)
{
    char json[1024];
    Apsd__V1__AddJobRequest *r = NULL;
    apsc_error err = APSC_ERROR_INIT;
    snprintf(json, sizeof json,
             "{\"job\": {\"id\": \"%s\", \"trigger\": %s, \"target\": {\"command\": "
             "{\"argv\": [\"/bin/echo\", \"hi\"]}}}}",
             id, trigger_json);
    if (apsc_from_json(&apsd__v1__add_job_request__descriptor, json, (void **)&r, &err) != 0)
        fail_msg("add_req: %s", err.message);
    return r;
}

static uint64_t
last_sequence(apsc_client *c)
{
    Apsd__V1__GetSchedulerRequest req = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = NULL;
    apsc_error err = APSC_ERROR_INIT;
    check_ok(apsc_get_scheduler(c, &req, &info, &err), &err, "GetScheduler");
    uint64_t s = info->event_log ? info->event_log->last_sequence : 0;
    apsc_free(info);
    return s;
}

static Google__Protobuf__Timestamp
ts_now_plus(int64_t s)
{
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t.seconds = (int64_t)time(NULL) + s;
    return t;
}

/* ---- Job RPCs ------------------------------------------------------------------------------ */

static void
test_job_rpcs(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    Apsd__V1__Job *job = NULL;
    (void)state;

    /* AddJob, and the same id again. */
    Apsd__V1__AddJobRequest *add = add_req("c-1", "{\"cron\": {\"hour\": \"9\", \"minute\": \"30\"}}");
    check_ok(apsc_add_job(cl, add, &job, &err), &err, "AddJob");
    assert_string_equal(job->id, "c-1");
    assert_string_equal(job->name, "/bin/echo");
    assert_string_equal(job->trigger->cron->timezone, "UTC");
    assert_non_null(job->next_run_time);
    apsc_free(job);
    EXPECT_STATUS(apsc_add_job(cl, add, (Apsd__V1__Job **)&out_, &e_),
                  GRPC_STATUS_ALREADY_EXISTS);
    add->replace_existing = 1;
    check_ok(apsc_add_job(cl, add, &job, &err), &err, "AddJob replace");
    apsc_free(job);
    apsc_free(add);

    /* A bad field: INVALID_ARGUMENT naming it. */
    add = add_req("c-bad", "{\"cron\": {\"hour\": \"25\"}}");
    assert_int_equal(apsc_add_job(cl, add, &job, &err), APSC_ERPC);
    assert_null(job);
    assert_int_equal(err.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "job.trigger.cron.hour"));
    apsc_free(add);

    /* GetJob: full view has stats, basic has not; NOT_FOUND. */
    Apsd__V1__GetJobRequest get = APSD__V1__GET_JOB_REQUEST__INIT;
    get.job_id = "c-1";
    check_ok(apsc_get_job(cl, &get, &job, &err), &err, "GetJob");
    assert_non_null(job->stats);
    apsc_free(job);
    get.view = APSD__V1__JOB_VIEW__JOB_VIEW_BASIC;
    check_ok(apsc_get_job(cl, &get, &job, &err), &err, "GetJob basic");
    assert_null(job->stats);
    apsc_free(job);
    get.job_id = "nope";
    EXPECT_STATUS(apsc_get_job(cl, &get, (Apsd__V1__Job **)&out_, &e_), GRPC_STATUS_NOT_FOUND);
    get.job_id = "";
    EXPECT_STATUS(apsc_get_job(cl, &get, (Apsd__V1__Job **)&out_, &e_),
                  GRPC_STATUS_INVALID_ARGUMENT);

    /* ListJobs a page at a time, and every page at once. */
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "page-%d", i);
        add = add_req(id, "{\"interval\": {\"hours\": 1}}");
        check_ok(apsc_add_job(cl, add, &job, &err), &err, "AddJob page");
        apsc_free(job);
        apsc_free(add);
    }
    Apsd__V1__ListJobsRequest list = APSD__V1__LIST_JOBS_REQUEST__INIT;
    Apsd__V1__ListJobsResponse *page = NULL;
    list.page_size = 2;
    check_ok(apsc_list_jobs(cl, &list, &page, &err), &err, "ListJobs");
    assert_int_equal(page->n_jobs, 2);
    assert_true(page->next_page_token[0] != '\0');
    apsc_free(page);
    check_ok(apsc_list_all_jobs(cl, &list, 0, &page, &err), &err, "list_all_jobs");
    size_t n_pages = 0;
    for (size_t i = 0; i < page->n_jobs; i++)
        n_pages += strncmp(page->jobs[i]->id, "page-", 5) == 0;
    assert_int_equal(n_pages, 5);
    assert_string_equal(page->next_page_token, "");
    apsc_free(page);
    check_ok(apsc_list_all_jobs(cl, &list, 3, &page, &err), &err, "list_all_jobs max");
    assert_true(page->n_jobs >= 3 && page->n_jobs <= 4);
    assert_true(page->next_page_token[0] != '\0');
    apsc_free(page);
    list.page_size = -1;
    EXPECT_STATUS(apsc_list_jobs(cl, &list, (Apsd__V1__ListJobsResponse **)&out_, &e_),
                  GRPC_STATUS_INVALID_ARGUMENT);

    /* ModifyJob: the name, by mask. */
    Apsd__V1__ModifyJobRequest mod = APSD__V1__MODIFY_JOB_REQUEST__INIT;
    Apsd__V1__Job mj = APSD__V1__JOB__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"name"};
    mj.id = "c-1";
    mj.name = "renamed";
    mask.n_paths = 1;
    mask.paths = paths;
    mod.job = &mj;
    mod.update_mask = &mask;
    check_ok(apsc_modify_job(cl, &mod, &job, &err), &err, "ModifyJob");
    assert_string_equal(job->name, "renamed");
    apsc_free(job);
    paths[0] = "bogus";
    EXPECT_STATUS(apsc_modify_job(cl, &mod, (Apsd__V1__Job **)&out_, &e_),
                  GRPC_STATUS_INVALID_ARGUMENT);
    mj.id = "nope";
    paths[0] = "name";
    EXPECT_STATUS(apsc_modify_job(cl, &mod, (Apsd__V1__Job **)&out_, &e_), GRPC_STATUS_NOT_FOUND);

    /* RescheduleJob. */
    Apsd__V1__RescheduleJobRequest rs = APSD__V1__RESCHEDULE_JOB_REQUEST__INIT;
    Apsd__V1__Trigger trig = APSD__V1__TRIGGER__INIT;
    Apsd__V1__IntervalTrigger iv = APSD__V1__INTERVAL_TRIGGER__INIT;
    iv.minutes = 10;
    trig.kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
    trig.interval = &iv;
    rs.job_id = "c-1";
    rs.trigger = &trig;
    check_ok(apsc_reschedule_job(cl, &rs, &job, &err), &err, "RescheduleJob");
    assert_int_equal(job->trigger->kind_case, APSD__V1__TRIGGER__KIND_INTERVAL);
    assert_int_equal(job->trigger->interval->minutes, 10);
    apsc_free(job);

    /* PauseJob / ResumeJob. */
    Apsd__V1__PauseJobRequest pj = APSD__V1__PAUSE_JOB_REQUEST__INIT;
    pj.job_id = "c-1";
    check_ok(apsc_pause_job(cl, &pj, &job, &err), &err, "PauseJob");
    assert_true(job->paused);
    assert_null(job->next_run_time);
    apsc_free(job);
    Apsd__V1__ResumeJobRequest rj = APSD__V1__RESUME_JOB_REQUEST__INIT;
    rj.job_id = "c-1";
    check_ok(apsc_resume_job(cl, &rj, &job, &err), &err, "ResumeJob");
    assert_false(job->paused);
    assert_non_null(job->next_run_time);
    apsc_free(job);
    pj.job_id = "nope";
    EXPECT_STATUS(apsc_pause_job(cl, &pj, (Apsd__V1__Job **)&out_, &e_), GRPC_STATUS_NOT_FOUND);
    rj.job_id = "nope";
    EXPECT_STATUS(apsc_resume_job(cl, &rj, (Apsd__V1__Job **)&out_, &e_), GRPC_STATUS_NOT_FOUND);

    /* RunJobNow. */
    Apsd__V1__RunJobNowRequest run = APSD__V1__RUN_JOB_NOW_REQUEST__INIT;
    Apsd__V1__RunJobNowResponse *rr = NULL;
    run.job_id = "c-1";
    check_ok(apsc_run_job_now(cl, &run, &rr, &err), &err, "RunJobNow");
    assert_int_equal(strlen(rr->run_id), 32);
    assert_non_null(rr->scheduled_run_time);
    apsc_free(rr);
    run.job_id = "nope";
    EXPECT_STATUS(apsc_run_job_now(cl, &run, (Apsd__V1__RunJobNowResponse **)&out_, &e_),
                  GRPC_STATUS_NOT_FOUND);

    /* RemoveJob, twice; then RemoveAllJobs. */
    Apsd__V1__RemoveJobRequest rm = APSD__V1__REMOVE_JOB_REQUEST__INIT;
    Apsd__V1__RemoveJobResponse *rmr = NULL;
    rm.job_id = "c-1";
    check_ok(apsc_remove_job(cl, &rm, &rmr, &err), &err, "RemoveJob");
    apsc_free(rmr);
    EXPECT_STATUS(apsc_remove_job(cl, &rm, (Apsd__V1__RemoveJobResponse **)&out_, &e_),
                  GRPC_STATUS_NOT_FOUND);
    Apsd__V1__RemoveAllJobsRequest ra = APSD__V1__REMOVE_ALL_JOBS_REQUEST__INIT;
    Apsd__V1__RemoveAllJobsResponse *rar = NULL;
    check_ok(apsc_remove_all_jobs(cl, &ra, &rar, &err), &err, "RemoveAllJobs");
    assert_true(rar->removed_count >= 5);
    apsc_free(rar);
    ra.jobstore = "nope";
    EXPECT_STATUS(apsc_remove_all_jobs(cl, &ra, (Apsd__V1__RemoveAllJobsResponse **)&out_, &e_),
                  GRPC_STATUS_INVALID_ARGUMENT);
    apsc_error_dispose(&err);
}

static void
test_preview_and_scheduler(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    (void)state;

    Apsd__V1__PreviewTriggerRequest pr = APSD__V1__PREVIEW_TRIGGER_REQUEST__INIT;
    Apsd__V1__PreviewTriggerResponse *resp = NULL;
    Apsd__V1__Trigger trig = APSD__V1__TRIGGER__INIT;
    Apsd__V1__CronTrigger cron = APSD__V1__CRON_TRIGGER__INIT;
    Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    cron.second = "*/5";
    trig.kind_case = APSD__V1__TRIGGER__KIND_CRON;
    trig.cron = &cron;
    start.seconds = 1795424400; /* 2026-11-23T09:00:00Z */
    pr.trigger = &trig;
    pr.start_time = &start;
    pr.count = 3;
    check_ok(apsc_preview_trigger(cl, &pr, &resp, &err), &err, "PreviewTrigger");
    assert_int_equal(resp->n_fire_times, 3);
    assert_int_equal(resp->fire_times[0]->seconds, 1795424400);
    assert_int_equal(resp->fire_times[2]->seconds, 1795424410);
    assert_non_null(strstr(resp->description, "cron[second='*/5']"));
    apsc_free(resp);
    pr.count = 5000;
    EXPECT_STATUS(apsc_preview_trigger(cl, &pr, (Apsd__V1__PreviewTriggerResponse **)&out_, &e_),
                  GRPC_STATUS_INVALID_ARGUMENT);

    /* The scheduler: pause (a paused scheduler runs nothing), resume. */
    Apsd__V1__SchedulerInfo *info = NULL;
    Apsd__V1__GetSchedulerRequest gs = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
    check_ok(apsc_get_scheduler(cl, &gs, &info, &err), &err, "GetScheduler");
    assert_int_equal(info->state, APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_RUNNING);
    assert_string_equal(info->default_timezone, "UTC");
    assert_true(info->n_jobstores >= 2);
    apsc_free(info);
    Apsd__V1__PauseSchedulerRequest ps = APSD__V1__PAUSE_SCHEDULER_REQUEST__INIT;
    check_ok(apsc_pause_scheduler(cl, &ps, &info, &err), &err, "PauseScheduler");
    assert_int_equal(info->state, APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_PAUSED);
    apsc_free(info);
    Apsd__V1__AddJobRequest *add = add_req("p-1", "{\"interval\": {\"hours\": 1}}");
    Apsd__V1__Job *job = NULL;
    check_ok(apsc_add_job(cl, add, &job, &err), &err, "AddJob");
    apsc_free(job);
    apsc_free(add);
    Apsd__V1__RunJobNowRequest run = APSD__V1__RUN_JOB_NOW_REQUEST__INIT;
    run.job_id = "p-1";
    EXPECT_STATUS(apsc_run_job_now(cl, &run, (Apsd__V1__RunJobNowResponse **)&out_, &e_),
                  GRPC_STATUS_FAILED_PRECONDITION);
    Apsd__V1__ResumeSchedulerRequest rs = APSD__V1__RESUME_SCHEDULER_REQUEST__INIT;
    check_ok(apsc_resume_scheduler(cl, &rs, &info, &err), &err, "ResumeScheduler");
    assert_int_equal(info->state, APSD__V1__SCHEDULER_STATE__SCHEDULER_STATE_RUNNING);
    apsc_free(info);

    /* Backfill: a 1 s interval over a 5 s past range, validate only. */
    Apsd__V1__ModifyJobRequest mod = APSD__V1__MODIFY_JOB_REQUEST__INIT;
    Apsd__V1__Job mj = APSD__V1__JOB__INIT;
    Apsd__V1__Trigger t2 = APSD__V1__TRIGGER__INIT;
    Apsd__V1__IntervalTrigger iv = APSD__V1__INTERVAL_TRIGGER__INIT;
    Google__Protobuf__Timestamp ivstart = ts_now_plus(-100);
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"trigger"};
    iv.seconds = 1;
    iv.start_date = &ivstart;
    t2.kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
    t2.interval = &iv;
    mj.id = "p-1";
    mj.trigger = &t2;
    mask.n_paths = 1;
    mask.paths = paths;
    mod.job = &mj;
    mod.update_mask = &mask;
    check_ok(apsc_modify_job(cl, &mod, &job, &err), &err, "ModifyJob trigger");
    apsc_free(job);
    Apsd__V1__BackfillRequest bf = APSD__V1__BACKFILL_REQUEST__INIT;
    Apsd__V1__BackfillResponse *bfr = NULL;
    /* One reading of the clock: two could straddle a second (6 runs). */
    Google__Protobuf__Timestamp b0 = ts_now_plus(-50), b1 = b0;
    b1.seconds += 5;
    bf.job_id = "p-1";
    bf.start_time = &b0;
    bf.end_time = &b1;
    bf.validate_only = 1;
    check_ok(apsc_backfill(cl, &bf, &bfr, &err), &err, "Backfill");
    assert_int_equal(bfr->n_scheduled_run_times, 5);
    assert_int_equal(bfr->n_run_ids, 0);
    apsc_free(bfr);
    bf.start_time = &b1;
    bf.end_time = &b0;
    EXPECT_STATUS(apsc_backfill(cl, &bf, (Apsd__V1__BackfillResponse **)&out_, &e_),
                  GRPC_STATUS_INVALID_ARGUMENT);
    bf.job_id = "nope";
    bf.start_time = &b0;
    bf.end_time = &b1;
    EXPECT_STATUS(apsc_backfill(cl, &bf, (Apsd__V1__BackfillResponse **)&out_, &e_),
                  GRPC_STATUS_NOT_FOUND);
    Apsd__V1__RemoveJobRequest rm = APSD__V1__REMOVE_JOB_REQUEST__INIT;
    Apsd__V1__RemoveJobResponse *rmr = NULL;
    rm.job_id = "p-1";
    check_ok(apsc_remove_job(cl, &rm, &rmr, &err), &err, "RemoveJob");
    apsc_free(rmr);
    apsc_error_dispose(&err);
}

/* ---- Events ---------------------------------------------------------------------------------- */

/* The next event of a stream (gaps and bookmarks skipped), or NULL after
 * wait_ms. The caller frees it. */
static Apsd__V1__Event *
next_event(apsc_stream *s, int64_t wait_ms)
{
    apsc_error err = APSC_ERROR_INIT;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        Apsd__V1__SubscribeEventsResponse *r = NULL;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int64_t left = wait_ms - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            return NULL;
        int rc = apsc_events_next(s, left, &r, &err);
        if (rc == APSC_ETIMEDOUT)
            return NULL;
        check_ok(rc, &err, "events_next");
        if (r->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT) {
            Apsd__V1__Event *ev = r->event;
            r->event = NULL;
            r->item_case = APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM__NOT_SET;
            apsc_free(r);
            return ev;
        }
        apsc_free(r);
    }
}

/* Waits for a stream's first caught_up bookmark (asked with send_bookmarks):
 * from then on the daemon has registered the subscriber, so a change made
 * now reaches a live (no after_sequence) stream. */
static void
wait_caught_up(apsc_stream *s, int64_t wait_ms)
{
    apsc_error err = APSC_ERROR_INIT;
    for (;;) {
        Apsd__V1__SubscribeEventsResponse *r = NULL;
        int rc = apsc_events_next(s, wait_ms, &r, &err);
        if (rc == APSC_ETIMEDOUT)
            fail_msg("no caught_up bookmark within %lld ms", (long long)wait_ms);
        check_ok(rc, &err, "events_next");
        int done = r->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_BOOKMARK &&
                   r->bookmark->caught_up;
        apsc_free(r);
        if (done)
            return;
    }
}

static void *
stop_later(void *arg)
{
    sleep_ms(200);
    apsc_stream_stop(arg);
    return NULL;
}

static void
test_events(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    apsc_stream *s = NULL;
    Apsd__V1__SubscribeEventsResponse *item = NULL;
    (void)state;

    uint64_t after = last_sequence(cl);
    Apsd__V1__SubscribeEventsRequest req = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    char *ids[] = {"e-1"};
    req.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    req.after_sequence = after;
    req.n_job_ids = 1;
    req.job_ids = ids;
    check_ok(apsc_subscribe_events(cl, &req, NULL, &s, &err), &err, "SubscribeEvents");
    /* Nothing yet: a zero wait times out, the stream stays usable. */
    assert_int_equal(apsc_events_next(s, 0, &item, &err), APSC_ETIMEDOUT);
    assert_null(item);

    Apsd__V1__AddJobRequest *add = add_req("e-1", "{\"interval\": {\"hours\": 1}}");
    Apsd__V1__Job *job = NULL;
    check_ok(apsc_add_job(cl, add, &job, &err), &err, "AddJob");
    apsc_free(job);
    apsc_free(add);
    Apsd__V1__RunJobNowRequest run = APSD__V1__RUN_JOB_NOW_REQUEST__INIT;
    Apsd__V1__RunJobNowResponse *rr = NULL;
    run.job_id = "e-1";
    check_ok(apsc_run_job_now(cl, &run, &rr, &err), &err, "RunJobNow");

    Apsd__V1__Event *ev = next_event(s, 20000);
    assert_non_null(ev);
    assert_int_equal(ev->type, APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_ADDED);
    assert_string_equal(ev->job_id, "e-1");
    assert_true(ev->sequence > after);
    uint64_t prev = ev->sequence;
    apsc_free(ev);
    int executed = 0;
    for (int i = 0; i < 10 && !executed; i++) {
        ev = next_event(s, 20000);
        assert_non_null(ev);
        assert_true(ev->sequence > prev);
        prev = ev->sequence;
        if (ev->type == APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_EXECUTED) {
            executed = 1;
            assert_string_equal(ev->run_id, rr->run_id);
            assert_non_null(ev->outcome);
            assert_int_equal(ev->outcome->exit_code, 0);
            assert_int_equal(ev->outcome->stdout_tail.len, 3);
            assert_memory_equal(ev->outcome->stdout_tail.data, "hi\n", 3);
        }
        apsc_free(ev);
    }
    assert_true(executed);
    assert_true(apsc_stream_last_sequence(s) >= prev);
    apsc_free(rr);

    /* stop() from another thread ends a blocked next() with EOF. */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_later, s), 0);
    assert_int_equal(apsc_events_next(s, 20000, &item, &err), APSC_EOF);
    pthread_join(th, NULL);
    assert_int_equal(apsc_events_next(s, 0, &item, &err), APSC_EOF);
    apsc_stream_close(s);

    /* Errors come from the first next(): an unknown type, a future sequence. */
    Apsd__V1__EventType bad_type = (Apsd__V1__EventType)99;
    Apsd__V1__SubscribeEventsRequest r2 = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    r2.n_types = 1;
    r2.types = &bad_type;
    check_ok(apsc_subscribe_events(cl, &r2, NULL, &s, &err), &err, "SubscribeEvents");
    assert_int_equal(apsc_events_next(s, 10000, &item, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "types[0]"));
    apsc_stream_close(s);
    Apsd__V1__SubscribeEventsRequest r3 = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    r3.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    r3.after_sequence = last_sequence(cl) + 1000;
    check_ok(apsc_subscribe_events(cl, &r3, NULL, &s, &err), &err, "SubscribeEvents");
    assert_int_equal(apsc_events_next(s, 10000, &item, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_OUT_OF_RANGE);
    apsc_stream_close(s);

    Apsd__V1__RemoveJobRequest rm = APSD__V1__REMOVE_JOB_REQUEST__INIT;
    Apsd__V1__RemoveJobResponse *rmr = NULL;
    rm.job_id = "e-1";
    check_ok(apsc_remove_job(cl, &rm, &rmr, &err), &err, "RemoveJob");
    apsc_free(rmr);
    apsc_error_dispose(&err);
}

/*
 * The event stream across a daemon restart: an unfiltered stream and a live
 * (no after_sequence) one filtered on a job both resume after the last
 * sequence seen, so the unfiltered one sees consecutive sequences with no
 * repeat, and the filtered one gets the event that happened after the
 * restart.
 */
static void
test_events_resume_after_restart(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    apsc_stream *all = NULL, *live_s = NULL;
    daemon_proc d;
    (void)state;

    daemon_init(&d, "restart");
    assert_int_equal(daemon_spawn(&d, 0, NULL), 0);
    apsc_client *c = connect_to(&d, NULL, NULL);
    Apsd__V1__SubscribeEventsRequest req = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    req.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    req.after_sequence = 0;
    check_ok(apsc_subscribe_events(c, &req, NULL, &all, &err), &err, "subscribe all");
    Apsd__V1__SubscribeEventsRequest lreq = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    char *ids[] = {"r-1"};
    lreq.n_job_ids = 1;
    lreq.job_ids = ids;
    lreq.send_bookmarks = 1;
    check_ok(apsc_subscribe_events(c, &lreq, NULL, &live_s, &err), &err, "subscribe live");
    /* The subscription and AddJob travel on separate HTTP/2 streams: without
     * this wait the daemon may register the live subscriber after JOB_ADDED
     * was published, and it would never see it. */
    wait_caught_up(live_s, 20000);

    Apsd__V1__AddJobRequest *add = add_req("r-1", "{\"interval\": {\"hours\": 1}}");
    Apsd__V1__Job *job = NULL;
    check_ok(apsc_add_job(c, add, &job, &err), &err, "AddJob");
    apsc_free(job);
    apsc_free(add);
    Apsd__V1__Event *ev = next_event(live_s, 20000);
    assert_non_null(ev);
    assert_int_equal(ev->type, APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_ADDED);
    uint64_t added_seq = ev->sequence;
    apsc_free(ev);

    /* Restart on the same port (the data directory, and so the event log,
     * survives). */
    assert_int_equal(daemon_stop(&d), 0);
    assert_int_equal(daemon_spawn(&d, 1, NULL), 0);
    Apsd__V1__RemoveJobRequest rm = APSD__V1__REMOVE_JOB_REQUEST__INIT;
    Apsd__V1__RemoveJobResponse *rmr = NULL;
    rm.job_id = "r-1";
    /* The channel reconnects by itself; the first call may still see the
     * old connection's end. */
    int rc = -1;
    for (int i = 0; i < 50 && rc != 0; i++) {
        rc = apsc_remove_job(c, &rm, &rmr, &err);
        if (rc != 0 && err.code != GRPC_STATUS_UNAVAILABLE)
            check_ok(rc, &err, "RemoveJob");
        if (rc != 0)
            sleep_ms(100);
    }
    check_ok(rc, &err, "RemoveJob after restart");
    apsc_free(rmr);

    /* The live, filtered stream: JOB_REMOVED arrives after reconnecting. */
    ev = next_event(live_s, 30000);
    assert_non_null(ev);
    assert_int_equal(ev->type, APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_REMOVED);
    assert_true(ev->sequence > added_seq);
    assert_true(apsc_stream_reconnects(live_s) >= 1);
    apsc_free(ev);

    /* The full stream: consecutive sequences from 1, across the restart
     * (SCHEDULER_SHUTDOWN, then SCHEDULER_STARTED of the new process),
     * up to JOB_REMOVED. */
    uint64_t expect = 1;
    int saw_shutdown = 0, saw_restart = 0, saw_removed = 0;
    for (int i = 0; i < 200 && !saw_removed; i++) {
        ev = next_event(all, 30000);
        assert_non_null(ev);
        if (ev->sequence != expect)
            fail_msg("sequence %llu, want %llu", (unsigned long long)ev->sequence,
                     (unsigned long long)expect);
        expect++;
        if (ev->type == APSD__V1__EVENT_TYPE__EVENT_TYPE_SCHEDULER_SHUTDOWN)
            saw_shutdown = 1;
        if (saw_shutdown && ev->type == APSD__V1__EVENT_TYPE__EVENT_TYPE_SCHEDULER_STARTED)
            saw_restart = 1;
        if (ev->type == APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_REMOVED)
            saw_removed = 1;
        apsc_free(ev);
    }
    assert_true(saw_shutdown && saw_restart && saw_removed);
    assert_true(apsc_stream_reconnects(all) >= 1);
    apsc_stream_close(all);
    apsc_stream_close(live_s);

    /* Without resume, the stream ends with UNAVAILABLE when the daemon
     * goes. */
    apsc_stream_options so = APSC_STREAM_OPTIONS_INIT;
    so.resume = 0;
    lreq.send_bookmarks = 0;
    check_ok(apsc_subscribe_events(c, &lreq, &so, &live_s, &err), &err, "subscribe");
    Apsd__V1__SubscribeEventsResponse *item = NULL;
    assert_int_equal(apsc_events_next(live_s, 200, &item, &err), APSC_ETIMEDOUT);
    assert_int_equal(daemon_stop(&d), 0);
    assert_int_equal(apsc_events_next(live_s, 20000, &item, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_UNAVAILABLE);
    apsc_stream_close(live_s);

    /* With resume but the daemon gone for good: bounded retries, then
     * UNAVAILABLE. */
    so.resume = 1;
    so.max_retries = 3;
    so.initial_backoff_ms = 50;
    check_ok(apsc_subscribe_events(c, &lreq, &so, &live_s, &err), &err, "subscribe");
    assert_int_equal(apsc_events_next(live_s, 20000, &item, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(apsc_stream_reconnects(live_s), 3);
    apsc_stream_close(live_s);
    apsc_client_destroy(c);
    apsc_error_dispose(&err);
}

/* Polls GetJob until job `id` has finished `n` runs, or fails the test
 * after `wait_ms`. */
static void
wait_runs(apsc_client *c, const char *id, uint64_t n, int wait_ms)
{
    apsc_error err = APSC_ERROR_INIT;
    Apsd__V1__GetJobRequest req = APSD__V1__GET_JOB_REQUEST__INIT;
    uint64_t runs = 0;
    req.job_id = (char *)id;
    for (int waited = 0; waited < wait_ms; waited += 50) {
        Apsd__V1__Job *job = NULL;
        check_ok(apsc_get_job(c, &req, &job, &err), &err, "GetJob");
        runs = job->stats ? job->stats->runs : 0;
        apsc_free(job);
        if (runs >= n)
            return;
        sleep_ms(50);
    }
    fail_msg("job %s finished %llu runs in %d ms, want %llu", id, (unsigned long long)runs, wait_ms,
             (unsigned long long)n);
}

/* Backfills `n` runs of job `id` (a 1 s interval) over the seconds just
 * before `end_ago` seconds ago. */
static void
backfill_runs(apsc_client *c, const char *id, int n, int end_ago)
{
    apsc_error err = APSC_ERROR_INIT;
    Apsd__V1__BackfillRequest bf = APSD__V1__BACKFILL_REQUEST__INIT;
    Apsd__V1__BackfillResponse *bfr = NULL;
    Google__Protobuf__Timestamp b1 = ts_now_plus(-end_ago), b0 = b1;
    b0.seconds -= n;
    bf.job_id = (char *)id;
    bf.start_time = &b0;
    bf.end_time = &b1;
    bf.max_runs = (uint32_t)n;
    check_ok(apsc_backfill(c, &bf, &bfr, &err), &err, "Backfill");
    assert_int_equal(bfr->n_scheduled_run_times, (size_t)n);
    apsc_free(bfr);
}

/* How many slow subscribers daemon `d` has cut (its log's warnings). */
static int
cuts_logged(const daemon_proc *d)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(d->log, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, "cutting a slow subscriber") != NULL;
    fclose(f);
    return n;
}

/*
 * A subscriber that does not read is cut by the daemon (RESOURCE_EXHAUSTED,
 * "resume with after_sequence") once --subscriber-queue events wait for it.
 * Without resume, the cut ends the stream. With resume (the default) the
 * stream reconnects after the last event it handed on: the reader sees
 * every event once, in order, across the cut. One stream at a time: two on
 * one connection share its flow-control window, and either could be cut.
 */
static void
test_events_resume_after_slow_cut(void **state)
{
    enum { RUNS = 300 };
    apsc_error err = APSC_ERROR_INIT;
    apsc_stream *s = NULL;
    Apsd__V1__SubscribeEventsResponse *item = NULL;
    daemon_proc d;
    (void)state;

    daemon_init(&d, "slow");
    d.extra[0] = "--subscriber-queue";
    d.extra[1] = "16";
    assert_int_equal(daemon_spawn(&d, 0, NULL), 0);
    apsc_client *c = connect_to(&d, NULL, NULL);

    /* Each run prints 64 KiB into its JOB_EXECUTED event: far more than the
     * transport buffers for a stream nobody reads. Its interval starts in
     * the past, so that there are run times to backfill. */
    Apsd__V1__AddJobRequest *add = add_req("big", "{\"interval\": {\"seconds\": 1}}");
    Apsd__V1__CommandTarget *cmd = add->job->target->command;
    Apsd__V1__IntervalTrigger *iv = add->job->trigger->interval;
    static char *argv[] = {"/usr/bin/head", "-c", "65536", "/dev/zero"};
    char **old_argv = cmd->argv;
    size_t old_n = cmd->n_argv;
    Google__Protobuf__Timestamp *old_start = iv->start_date;
    Google__Protobuf__Timestamp t0 = ts_now_plus(-3600);
    cmd->argv = argv;
    cmd->n_argv = 4;
    iv->start_date = &t0;
    add->job->max_instances = 10;
    Apsd__V1__Job *job = NULL;
    check_ok(apsc_add_job(c, add, &job, &err), &err, "AddJob");
    cmd->argv = old_argv;
    cmd->n_argv = old_n;
    iv->start_date = old_start;
    apsc_free(job);
    apsc_free(add);

    Apsd__V1__SubscribeEventsRequest req = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    req.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    req.after_sequence = 0;
    req.send_bookmarks = 1;

    /* Without resume: what the transport held, then the cut. */
    apsc_stream_options so = APSC_STREAM_OPTIONS_INIT;
    so.resume = 0;
    check_ok(apsc_subscribe_events(c, &req, &so, &s, &err), &err, "subscribe (no resume)");
    wait_caught_up(s, 20000);
    backfill_runs(c, "big", RUNS, 2 * RUNS);
    wait_runs(c, "big", RUNS, 60000);
    int rc = 0;
    for (int i = 0; i < 20 * RUNS && rc == 0; i++) {
        rc = apsc_events_next(s, 10000, &item, &err);
        if (rc == 0)
            apsc_free(item);
    }
    assert_int_equal(rc, APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err.message, "after_sequence"));
    apsc_stream_close(s);

    /* With resume: the log from 1 (a replay is never cut), then the cut
     * while caught up, then consecutive sequences through the second
     * backfill's runs, across at least one reconnection. */
    req.send_bookmarks = 0;
    check_ok(apsc_subscribe_events(c, &req, NULL, &s, &err), &err, "subscribe (resume)");
    uint64_t expect = 1, last = last_sequence(c);
    while (expect <= last) {
        Apsd__V1__Event *ev = next_event(s, 60000);
        assert_non_null(ev);
        assert_true(ev->sequence == expect);
        expect++;
        apsc_free(ev);
    }
    assert_int_equal(apsc_stream_reconnects(s), 0);
    /* Until the daemon has cut it too (the transport's windows may have
     * grown during the replay): at most three more backfills. */
    for (int k = 1; k <= 3 && cuts_logged(&d) < 2; k++) {
        backfill_runs(c, "big", RUNS, (2 + k) * RUNS);
        wait_runs(c, "big", (uint64_t)(1 + k) * RUNS, 60000);
    }
    assert_int_equal(cuts_logged(&d), 2);
    int executed = 0;
    for (int i = 0; i < 20 * RUNS && executed < RUNS; i++) {
        Apsd__V1__Event *ev = next_event(s, 60000);
        assert_non_null(ev);
        if (ev->sequence != expect)
            fail_msg("sequence %llu, want %llu", (unsigned long long)ev->sequence,
                     (unsigned long long)expect);
        expect++;
        executed += ev->type == APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_EXECUTED;
        apsc_free(ev);
    }
    assert_true(executed >= RUNS);
    assert_true(apsc_stream_reconnects(s) >= 1);
    apsc_stream_close(s);
    apsc_client_destroy(c);
    assert_int_equal(daemon_stop(&d), 0);
    apsc_error_dispose(&err);
}

/* ---- Workers ---------------------------------------------------------------------------------- */

static void
test_workers(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    apsc_stream *s = NULL;
    Apsd__V1__AcquireResponse *item = NULL;
    Apsd__V1__AddJobRequest *add = NULL;
    Apsd__V1__Job *job = NULL;
    (void)state;

    uint64_t after = last_sequence(cl);
    assert_int_equal(
        apsc_from_json(&apsd__v1__add_job_request__descriptor,
                       "{\"job\": {\"id\": \"w-1\", \"target\": {\"remote\": {\"task\": \"mod:func\", "
                       "\"args\": [1, \"two\"], \"kwargs\": {\"k\": [true, null]}, \"queue\": \"q1\"}}}}",
                       (void **)&add, &err),
        APSC_OK);
    check_ok(apsc_add_job(cl, add, &job, &err), &err, "AddJob remote");
    apsc_free(job);
    apsc_free(add);

    Apsd__V1__AcquireRequest acq = APSD__V1__ACQUIRE_REQUEST__INIT;
    acq.queue = "q1";
    acq.worker_id = "w-test";
    check_ok(apsc_acquire(cl, &acq, &s, &err), &err, "Acquire");
    check_ok(apsc_acquire_next(s, 20000, &item, &err), &err, "acquire_next");
    assert_int_equal(item->item_case, APSD__V1__ACQUIRE_RESPONSE__ITEM_DISPATCH);
    const Apsd__V1__Dispatch *d = item->dispatch;
    assert_string_equal(d->job_id, "w-1");
    assert_string_equal(d->task, "mod:func");
    assert_int_equal(d->args->n_values, 2);
    assert_int_equal(d->args->values[0]->number_value, 1);
    assert_string_equal(d->args->values[1]->string_value, "two");
    assert_non_null(d->lease_deadline);

    Apsd__V1__ExtendLeaseRequest ext = APSD__V1__EXTEND_LEASE_REQUEST__INIT;
    Apsd__V1__ExtendLeaseResponse *er = NULL;
    ext.run_id = d->run_id;
    ext.lease_token = d->lease_token;
    check_ok(apsc_extend_lease(cl, &ext, &er, &err), &err, "ExtendLease");
    assert_non_null(er->lease_deadline);
    apsc_free(er);

    Apsd__V1__CompleteRequest cr = APSD__V1__COMPLETE_REQUEST__INIT;
    Apsd__V1__CompleteResponse *crr = NULL;
    Google__Protobuf__Value rv = GOOGLE__PROTOBUF__VALUE__INIT;
    cr.run_id = d->run_id;
    cr.lease_token = "00000000000000000000000000000000";
    EXPECT_STATUS(apsc_complete(cl, &cr, (Apsd__V1__CompleteResponse **)&out_, &e_),
                  GRPC_STATUS_FAILED_PRECONDITION);
    rv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    rv.string_value = "done";
    cr.lease_token = d->lease_token;
    cr.result_case = APSD__V1__COMPLETE_REQUEST__RESULT_RETURN_VALUE;
    cr.return_value = &rv;
    check_ok(apsc_complete(cl, &cr, &crr, &err), &err, "Complete");
    apsc_free(crr);
    cr.run_id = "ffffffffffffffffffffffffffffffff";
    EXPECT_STATUS(apsc_complete(cl, &cr, (Apsd__V1__CompleteResponse **)&out_, &e_),
                  GRPC_STATUS_NOT_FOUND);
    ext.run_id = "ffffffffffffffffffffffffffffffff";
    EXPECT_STATUS(apsc_extend_lease(cl, &ext, (Apsd__V1__ExtendLeaseResponse **)&out_, &e_),
                  GRPC_STATUS_NOT_FOUND);
    apsc_free(item);
    apsc_stream_close(s);

    /* The result reaches the event log. */
    Apsd__V1__SubscribeEventsRequest req = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    Apsd__V1__EventType t = APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_EXECUTED;
    char *ids[] = {"w-1"};
    apsc_stream *es = NULL;
    req.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    req.after_sequence = after;
    req.n_types = 1;
    req.types = &t;
    req.n_job_ids = 1;
    req.job_ids = ids;
    check_ok(apsc_subscribe_events(cl, &req, NULL, &es, &err), &err, "SubscribeEvents");
    Apsd__V1__Event *ev = next_event(es, 20000);
    assert_non_null(ev);
    assert_string_equal(ev->outcome->return_value->string_value, "done");
    /* RunOutcome.worker_id is not filled by the daemon yet (the engine's
     * outcome has no worker id), so it is not checked here. */
    apsc_free(ev);
    apsc_stream_close(es);

    /* Acquire errors arrive on the first next(). */
    acq.worker_id = "";
    check_ok(apsc_acquire(cl, &acq, &s, &err), &err, "Acquire");
    assert_int_equal(apsc_acquire_next(s, 10000, &item, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "worker_id"));
    apsc_stream_close(s);
    apsc_error_dispose(&err);
}

/* ---- Tokens and TLS ----------------------------------------------------------------------------- */

static void
test_tokens_and_tls(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    daemon_proc d;
    char tokens[700], cert[700], key[700], cmd[2400];
    (void)state;

    daemon_init(&d, "secure");
    snprintf(tokens, sizeof tokens, "%s/tokens", tmpdir);
    FILE *f = fopen(tokens, "w");
    assert_non_null(f);
    /* sha256("reader-token"), sha256("writer-token") */
    fprintf(f, "# roles\nread ba5005a40cf5212e4ac0190104cc127edab013294bb71279a975b27a80982d45\n"
               "write 3590c0a59f72ce02700194a05f228a725c1f135a6dcb3ded9b2d86ab6a6f52cb\n");
    fclose(f);
    snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
    snprintf(key, sizeof key, "%s/key.pem", tmpdir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 2 "
             "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
             ">/dev/null 2>&1",
             key, cert);
    int tls = system(cmd) == 0;
    if (!tls)
        fprintf(stderr, "no openssl: TLS not tested\n");
    int n = 0;
    d.extra[n++] = "--token-file";
    d.extra[n++] = tokens;
    if (tls) {
        d.extra[n++] = "--tls-cert";
        d.extra[n++] = cert;
        d.extra[n++] = "--tls-key";
        d.extra[n++] = key;
    }
    assert_int_equal(daemon_spawn(&d, 0, tls ? cert : NULL), 0);

    const char *ca = tls ? cert : NULL;
    apsc_client *none = connect_to(&d, NULL, ca), *wrong = connect_to(&d, "wrong", ca),
                *reader = connect_to(&d, "reader-token", ca),
                *writer = connect_to(&d, "writer-token", ca);
    Apsd__V1__GetSchedulerRequest gs = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = NULL;
    EXPECT_STATUS(apsc_get_scheduler(none, &gs, (Apsd__V1__SchedulerInfo **)&out_, &e_),
                  GRPC_STATUS_UNAUTHENTICATED);
    EXPECT_STATUS(apsc_get_scheduler(wrong, &gs, (Apsd__V1__SchedulerInfo **)&out_, &e_),
                  GRPC_STATUS_UNAUTHENTICATED);
    check_ok(apsc_get_scheduler(reader, &gs, &info, &err), &err, "GetScheduler as reader");
    apsc_free(info);
    Apsd__V1__AddJobRequest *add = add_req("s-1", "{\"interval\": {\"hours\": 1}}");
    EXPECT_STATUS(apsc_add_job(reader, add, (Apsd__V1__Job **)&out_, &e_),
                  GRPC_STATUS_PERMISSION_DENIED);
    Apsd__V1__Job *job = NULL;
    check_ok(apsc_add_job(writer, add, &job, &err), &err, "AddJob as writer");
    assert_string_equal(job->id, "s-1");
    apsc_free(job);
    apsc_free(add);
    /* Streams carry the token too. */
    apsc_stream *s = NULL;
    Apsd__V1__SubscribeEventsRequest sr = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    Apsd__V1__SubscribeEventsResponse *item = NULL;
    sr.optional_after_sequence_case =
        APSD__V1__SUBSCRIBE_EVENTS_REQUEST__OPTIONAL_AFTER_SEQUENCE_AFTER_SEQUENCE;
    check_ok(apsc_subscribe_events(reader, &sr, NULL, &s, &err), &err, "subscribe as reader");
    check_ok(apsc_events_next(s, 10000, &item, &err), &err, "events_next as reader");
    apsc_free(item);
    apsc_stream_close(s);
    check_ok(apsc_subscribe_events(none, &sr, NULL, &s, &err), &err, "subscribe without token");
    assert_int_equal(apsc_events_next(s, 10000, &item, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_UNAUTHENTICATED);
    apsc_stream_close(s);
    if (tls) {
        /* Plaintext to a TLS port fails; TLS without the right CA too. */
        apsc_client *plain = connect_to(&d, "reader-token", NULL);
        assert_int_not_equal(apsc_get_scheduler(plain, &gs, &info, &err), APSC_OK);
        apsc_client_destroy(plain);
    }
    apsc_client_destroy(none);
    apsc_client_destroy(wrong);
    apsc_client_destroy(reader);
    apsc_client_destroy(writer);
    assert_int_equal(daemon_stop(&d), 0);
    apsc_error_dispose(&err);
}

/* ---- Local errors ---------------------------------------------------------------------------------- */

static void
test_local_errors(void **state)
{
    apsc_error err = APSC_ERROR_INIT;
    apsc_options o = APSC_OPTIONS_INIT;
    apsc_client *c = NULL;
    (void)state;

    o.tls_cert_file = "/nonexistent/cert.pem";
    assert_int_equal(apsc_client_create(&o, &c, &err), APSC_EINVAL);
    assert_int_equal(err.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_null(c);
    o.tls_cert_file = NULL;
    o.tls_ca_file = "/nonexistent/ca.pem";
    assert_int_equal(apsc_client_create(&o, &c, &err), APSC_EPROTO);
    assert_non_null(strstr(err.message, "/nonexistent/ca.pem"));
    o.tls_ca_file = NULL;
    o.token = "two\nlines";
    assert_int_equal(apsc_client_create(&o, &c, &err), APSC_EINVAL);
    o.token = NULL;
    o.target = "";
    assert_int_equal(apsc_client_create(&o, &c, &err), APSC_EINVAL);

    /* Wrong arguments are refused before anything is sent. */
    Apsd__V1__GetJobRequest get = APSD__V1__GET_JOB_REQUEST__INIT;
    Apsd__V1__Job *job = NULL;
    assert_int_equal(apsc_get_job(cl, &get, NULL, &err), APSC_EINVAL);
    assert_int_equal(apsc_get_job(cl, NULL, &job, &err), APSC_EINVAL);
    assert_int_equal(apsc_get_job(NULL, &get, &job, &err), APSC_EINVAL);
    Apsd__V1__RemoveJobRequest wrong_type = APSD__V1__REMOVE_JOB_REQUEST__INIT;
    assert_int_equal(apsc_get_job(cl, (Apsd__V1__GetJobRequest *)&wrong_type, &job, &err),
                     APSC_EINVAL);
    assert_non_null(strstr(err.message, "apsd.v1.RemoveJobRequest"));
    assert_null(job);

    /* A daemon that is not there: UNAVAILABLE, quickly. */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", free_port());
    o.target = target;
    o.timeout_ms = 5000;
    assert_int_equal(apsc_client_create(&o, &c, &err), APSC_OK);
    assert_string_equal(apsc_client_target(c), target);
    time_t t0 = time(NULL);
    Apsd__V1__GetSchedulerRequest gs = APSD__V1__GET_SCHEDULER_REQUEST__INIT;
    Apsd__V1__SchedulerInfo *info = NULL;
    assert_int_equal(apsc_get_scheduler(c, &gs, &info, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_UNAVAILABLE);
    assert_true(time(NULL) - t0 < 4);
    /* With wait_for_ready the deadline decides instead. */
    apsc_client_destroy(c);
    o.wait_for_ready = 1;
    o.timeout_ms = 300;
    assert_int_equal(apsc_client_create(&o, &c, &err), APSC_OK);
    assert_int_equal(apsc_get_scheduler(c, &gs, &info, &err), APSC_ERPC);
    assert_int_equal(err.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    apsc_client_destroy(c);
    apsc_error_dispose(&err);
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/TO/apsd\n", argv[0]);
        return 2;
    }
    apsd_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const char *base = getenv("TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/apsc-test.XXXXXX", base && base[0] ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    atexit(stop_all);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_rpcs),
        cmocka_unit_test(test_preview_and_scheduler),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_tokens_and_tls),
        cmocka_unit_test(test_local_errors),
        cmocka_unit_test(test_events_resume_after_restart),
        cmocka_unit_test(test_events_resume_after_slow_cut),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
