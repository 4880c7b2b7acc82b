/*
 * worker: runs jobs with a `remote` target (RemoteTarget) from a queue,
 * through apsd.v1.Workers: Acquire (a stream of dispatches, each with a
 * lease), ExtendLease (the heartbeat), Complete (the result).
 *
 *   worker [QUEUE [COUNT]]    (default queue `default`; COUNT dispatches,
 *                              0 = until the stream ends)
 *
 * Two tasks are known: `demo:echo` returns its args, `demo:fail` raises
 * (Complete with a TaskError); anything else fails with "unknown task".
 * Add a job for it with apsctl:
 *
 *   apsctl add hello --interval 2s --remote demo:echo --args '[1, "two"]' --queue demo
 *   bazel-bin/bindings/c/worker demo 2
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apsd/client.h"

int
main(int argc, char **argv)
{
    const char *queue = argc > 1 ? argv[1] : "default";
    int count = argc > 2 ? atoi(argv[2]) : 0, done = 0;
    char worker_id[64];
    apsc_options o = APSC_OPTIONS_INIT;
    apsc_client *c = NULL;
    apsc_stream *s = NULL;
    apsc_error err = APSC_ERROR_INIT;
    int rc;

    o.target = getenv("APSD_SERVER");
    o.token = getenv("APSD_TOKEN");
    if ((rc = apsc_client_create(&o, &c, &err)) != 0)
        goto fail;
    snprintf(worker_id, sizeof worker_id, "c-worker/pid-%d", (int)getpid());
    Apsd__V1__AcquireRequest acq = APSD__V1__ACQUIRE_REQUEST__INIT;
    acq.queue = (char *)queue;
    acq.worker_id = worker_id;
    acq.max_in_flight = 1;
    if ((rc = apsc_acquire(c, &acq, &s, &err)) != 0)
        goto fail;
    printf("%s waiting on queue %s\n", worker_id, queue);
    fflush(stdout);

    while (count == 0 || done < count) {
        Apsd__V1__AcquireResponse *item = NULL;
        rc = apsc_acquire_next(s, -1, &item, &err);
        if (rc == APSC_EOF)
            break;
        if (rc != 0)
            goto fail;
        if (item->item_case != APSD__V1__ACQUIRE_RESPONSE__ITEM_DISPATCH) {
            printf("cancel %s: %s\n", item->cancel->run_id, item->cancel->reason);
            apsc_free(item);
            continue;
        }
        const Apsd__V1__Dispatch *d = item->dispatch;
        char *args = NULL;
        if (d->args != NULL)
            apsc_to_json(d->args, 0, &args);
        /* The run id's last 8 digits: its first ones are the time. */
        size_t rn = strlen(d->run_id);
        printf("run %s of %s: %s(%s)\n", d->run_id + (rn > 8 ? rn - 8 : 0), d->job_id, d->task,
               args ? args : "[]");

        /* A long task would call ExtendLease every lease_duration / 3. */
        Apsd__V1__ExtendLeaseRequest ext = APSD__V1__EXTEND_LEASE_REQUEST__INIT;
        Apsd__V1__ExtendLeaseResponse *lease = NULL;
        ext.run_id = d->run_id;
        ext.lease_token = d->lease_token;
        if ((rc = apsc_extend_lease(c, &ext, &lease, &err)) != 0) {
            free(args);
            apsc_free(item);
            goto fail;
        }
        apsc_free(lease);

        Apsd__V1__CompleteRequest cr = APSD__V1__COMPLETE_REQUEST__INIT;
        Apsd__V1__CompleteResponse *resp = NULL;
        Google__Protobuf__Value ret = GOOGLE__PROTOBUF__VALUE__INIT;
        Apsd__V1__TaskError terr = APSD__V1__TASK_ERROR__INIT;
        cr.run_id = d->run_id;
        cr.lease_token = d->lease_token;
        if (strcmp(d->task, "demo:echo") == 0) {
            ret.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
            ret.list_value = d->args; /* borrowed from the dispatch */
            if (ret.list_value == NULL) {
                ret.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
                ret.null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
            }
            cr.result_case = APSD__V1__COMPLETE_REQUEST__RESULT_RETURN_VALUE;
            cr.return_value = &ret;
        } else {
            terr.type = strcmp(d->task, "demo:fail") == 0 ? "RuntimeError" : "LookupError";
            terr.message = strcmp(d->task, "demo:fail") == 0 ? "demo:fail always fails"
                                                              : "unknown task";
            cr.result_case = APSD__V1__COMPLETE_REQUEST__RESULT_ERROR;
            cr.error = &terr;
        }
        rc = apsc_complete(c, &cr, &resp, &err);
        free(args);
        apsc_free(item);
        if (rc != 0)
            goto fail;
        apsc_free(resp);
        done++;
    }
    apsc_stream_close(s);
    apsc_client_destroy(c);
    apsc_error_dispose(&err);
    return 0;

fail:
    fprintf(stderr, "worker: %s: %s\n", apsc_status_name(err.code),
            err.message ? err.message : apsc_strerror(rc));
    apsc_stream_close(s);
    apsc_client_destroy(c);
    apsc_error_dispose(&err);
    return 1;
}
