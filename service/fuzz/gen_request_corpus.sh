#!/usr/bin/env bash
# Writes the seed corpus of request_fuzz.c into service/fuzz/corpus/request.
# Run from the repository root (needs protoc). Each seed is a flags byte,
# then frames: a method byte (request_fuzz.c's `methods` order), the
# message length (2 bytes, big-endian) and a request encoded by protoc from
# text format. One seed per request type (one-*), and sequences that reach
# deeper (seq-*): jobs added, then read, changed, run, streamed.
set -euo pipefail
out=service/fuzz/corpus/request
mkdir -p "$out"

declare -A sel=(
  [AddJob]=0 [GetJob]=1 [ListJobs]=2 [ModifyJob]=3 [RescheduleJob]=4 [PauseJob]=5
  [ResumeJob]=6 [RunJobNow]=7 [RemoveJob]=8 [RemoveAllJobs]=9 [PreviewTrigger]=10
  [GetScheduler]=11 [PauseScheduler]=12 [ResumeScheduler]=13 [Backfill]=14
  [SubscribeEvents]=15 [Acquire]=16 [Complete]=17 [ExtendLease]=18
)
declare -A proto=(
  [Acquire]=workers [Complete]=workers [ExtendLease]=workers
)

frame() { # METHOD TEXT: one frame on stdout
  local m=$1 text=$2 file=scheduler f n
  [[ -n "${proto[$m]:-}" ]] && file=${proto[$m]}
  f=$(mktemp)
  protoc --encode="apsd.v1.${m}Request" -Iproto -I/usr/include "apsd/v1/$file.proto" \
    <<<"$text" >"$f"
  n=$(stat -c %s "$f")
  printf "\\x$(printf %02x "${sel[$m]}")\\x$(printf %02x $((n >> 8)))\\x$(printf %02x $((n & 255)))"
  cat "$f"
  rm -f "$f"
}

seed() { # NAME FLAGS METHOD TEXT [METHOD TEXT]...
  local name=$1 flags=$2
  shift 2
  {
    printf "\\x$(printf %02x "$flags")"
    while (($#)); do frame "$1" "$2"; shift 2; done
  } >"$out/$name"
}

CRON='job { id: "a" name: "cron job" trigger { cron { minute: "*/5" hour: "9-17" day_of_week: "mon-fri" timezone: "Europe/Dublin" } } target { command { argv: "/bin/echo" argv: "hi" env { key: "K" value: "v" } cwd: "/tmp" timeout { seconds: 30 } max_output_bytes: 1024 } } labels { key: "env" value: "prod" } labels { key: "team" value: "ops" } overlap_policy: OVERLAP_POLICY_QUEUE_ONE max_instances: 2 coalesce: false misfire_grace_time { duration { seconds: 60 } } }'
REMOTE='job { id: "r" trigger { interval { minutes: 5 start_date { seconds: 2114356000 } } } target { remote { task: "app.tasks.add" args { values { number_value: 1 } values { string_value: "x" } } kwargs { fields { key: "k" value { bool_value: true } } } queue: "default" } } executor: "workers" jobstore: "extra" }'
DATE='job { id: "d" trigger { date { run_date { seconds: 2114384400 } timezone: "America/New_York" } } target { command { argv: "true" } } misfire_grace_time { unlimited: true } }'
CAL='job { id: "c" trigger { calendar_interval { months: 1 days: 2 hour: 3 minute: 4 second: 5 timezone: "Australia/Lord_Howe" } } target { remote { task: "t" } } overlap_policy: OVERLAP_POLICY_CANCEL_RUNNING }'
COMBO='job { id: "x" trigger { any_of { triggers { cron { crontab: "0 0 * * sun" } } triggers { all_of { triggers { interval { hours: 1 } } triggers { cron { second: "*/30" } } } } } jitter { seconds: 5 } } target { remote { task: "combo" } } }'

# One seed per request type.
seed one-add-job 0 AddJob "$CRON request_id: \"req-1\""
seed one-get-job 0 GetJob 'job_id: "a" view: JOB_VIEW_FULL'
seed one-list-jobs 0 ListJobs 'page_size: 10 label_selector: "env=prod,team in (ops,dev),!gone" view: JOB_VIEW_BASIC paused: false'
seed one-modify-job 0 ModifyJob 'job { id: "a" name: "n2" labels { key: "k" value: "v" } } update_mask { paths: "name" paths: "labels" }'
seed one-reschedule-job 0 RescheduleJob 'job_id: "a" trigger { interval { seconds: 90 } }'
seed one-pause-job 0 PauseJob 'job_id: "a" request_id: "p1"'
seed one-resume-job 0 ResumeJob 'job_id: "a"'
seed one-run-job-now 0 RunJobNow 'job_id: "a"'
seed one-remove-job 0 RemoveJob 'job_id: "a"'
seed one-remove-all-jobs 0 RemoveAllJobs 'jobstore: "extra" request_id: "all"'
seed one-preview-trigger 0 PreviewTrigger 'trigger { cron { day: "last" month: "2" hour: "2" minute: "30" timezone: "America/New_York" } } start_time { seconds: 2114380800 } count: 5'
seed one-get-scheduler 0 GetScheduler ''
seed one-pause-scheduler 0 PauseScheduler 'request_id: "ps"'
seed one-resume-scheduler 0 ResumeScheduler 'request_id: "rs"'
seed one-backfill 0 Backfill 'job_id: "a" start_time { seconds: 2114294400 } end_time { seconds: 2114380800 } max_runs: 3 validate_only: true'
seed one-subscribe-events 0 SubscribeEvents 'types: EVENT_TYPE_JOB_ADDED types: EVENT_TYPE_JOB_SUBMITTED job_ids: "a" job_ids: "b" continue_after_gap: true send_bookmarks: true'
seed one-acquire 0 Acquire 'queue: "default" worker_id: "w1" max_in_flight: 2 tasks: "t" lease_duration { seconds: 10 }'
seed one-complete 0 Complete 'run_id: "0123456789abcdef0123456789abcdef" lease_token: "tok" return_value { number_value: 3 }'
seed one-extend-lease 0 ExtendLease 'run_id: "0123456789abcdef0123456789abcdef" lease_token: "tok" lease_duration { seconds: 20 }'

# Sequences.
seed seq-jobs 0 \
  AddJob "$CRON" AddJob "$REMOTE" AddJob "$DATE" AddJob "$CAL" AddJob "$COMBO" \
  GetJob 'job_id: "r"' ListJobs 'page_size: 2' ListJobs 'jobstore: "extra" label_selector: "env"' \
  GetScheduler ''
seed seq-mutate 0 \
  AddJob "$CRON" ModifyJob 'job { id: "a" trigger { date { run_date { seconds: 2114456000 } } } overlap_policy: OVERLAP_POLICY_SKIP } update_mask { paths: "trigger" paths: "overlap_policy" }' \
  PauseJob 'job_id: "a"' ListJobs 'paused: true' ResumeJob 'job_id: "a"' \
  RescheduleJob 'job_id: "a" trigger { cron { crontab: "*/10 * * * *" } } request_id: "rs1"' \
  RescheduleJob 'job_id: "a" trigger { cron { crontab: "*/10 * * * *" } } request_id: "rs1"' \
  RemoveJob 'job_id: "a" request_id: "rm"' RemoveJob 'job_id: "a" request_id: "rm"' GetJob 'job_id: "a"'
seed seq-replace 0 \
  AddJob "$CRON" AddJob "$CRON" AddJob "$CRON replace_existing: true" \
  AddJob "$DATE request_id: \"same\"" AddJob "$DATE request_id: \"same\"" RemoveAllJobs ''
seed seq-workers 4 \
  AddJob "$REMOTE" Acquire 'worker_id: "w1" max_in_flight: 4' RunJobNow 'job_id: "r"' \
  ExtendLease 'run_id: "@" lease_token: "@" lease_duration { seconds: 120 }' \
  Complete 'run_id: "@" lease_token: "@" return_value { struct_value { fields { key: "ok" value { bool_value: true } } } }' \
  RunJobNow 'job_id: "r"' \
  Complete 'run_id: "@" lease_token: "@" error { type: "ValueError" message: "bad" traceback: "tb" }' \
  Complete 'run_id: "@" lease_token: "@"'
seed seq-workers-replace 4 \
  AddJob "$CAL" Acquire 'worker_id: "w1" queue: "default"' Acquire 'worker_id: "w1" tasks: "t"' \
  RunJobNow 'job_id: "c"' RunJobNow 'job_id: "c"' Complete 'run_id: "@" lease_token: "wrong"'
seed seq-backfill 0 \
  AddJob "$REMOTE" Backfill 'job_id: "r" start_time { seconds: 2114366000 } end_time { seconds: 2114380000 } max_runs: 5' \
  Backfill 'job_id: "r" start_time { seconds: 2114366000 } end_time { seconds: 2114380000 } max_runs: 5 validate_only: true' \
  GetJob 'job_id: "r" view: JOB_VIEW_FULL'
seed seq-events 0 \
  SubscribeEvents 'send_bookmarks: true' AddJob "$CRON" AddJob "$REMOTE" PauseScheduler '' \
  ResumeScheduler '' SubscribeEvents 'after_sequence: 0 job_ids: "a"' RemoveJob 'job_id: "a"'
seed seq-events-slow 3 \
  AddJob "$CRON" AddJob "$REMOTE" AddJob "$DATE" AddJob "$CAL" AddJob "$COMBO" \
  SubscribeEvents 'after_sequence: 0' PauseJob 'job_id: "a"' ResumeJob 'job_id: "a"' \
  PauseJob 'job_id: "r"' ResumeJob 'job_id: "r"' SubscribeEvents '' SubscribeEvents ''
seed seq-preview 0 \
  PreviewTrigger "$(sed -n 's/^job { id: "x" trigger \(.*\) target.*$/trigger \1/p' <<<"$COMBO")" \
  PreviewTrigger 'trigger { calendar_interval { years: 1 } } count: 1000' \
  PreviewTrigger 'trigger { interval { microseconds: 1 end_date { seconds: 2114380801 } } }' \
  PreviewTrigger 'trigger { date { } }'
small() { # a small job with id $1 in store $2
  echo "job { id: \"$1\" jobstore: \"$2\" trigger { interval { hours: 1 } } target { remote { task: \"t\" } } labels { key: \"n\" value: \"$1\" } }"
}
seed seq-list-pages 4 \
  AddJob "$(small j1 default)" AddJob "$(small j2 extra)" AddJob "$(small j3 default)" \
  AddJob "$(small j4 extra)" AddJob "$(small j5 default)" \
  ListJobs 'page_size: 2' ListJobs 'page_size: 2 page_token: "@"' \
  ListJobs 'page_size: 2 page_token: "@"' ListJobs 'page_size: 1 label_selector: "n in (j2,j4)"' \
  ListJobs 'page_size: 1 page_token: "@" label_selector: "n in (j2,j4)"'
seed seq-restricted 0 \
  AddJob 'job { id: "e1" executor: "restricted" trigger { interval { hours: 1 } } target { command { argv: "/usr/bin/env" } } }' \
  AddJob 'job { id: "e2" executor: "restricted" trigger { interval { hours: 1 } } target { command { argv: "ls" } } }' \
  AddJob 'job { id: "e3" executor: "restricted" trigger { interval { hours: 1 } } target { command { argv: "/bin/true" } } }' \
  AddJob 'job { id: "e4" executor: "restricted" trigger { interval { hours: 1 } } target { command { argv: "/etc/passwd" } } }' \
  AddJob 'job { id: "e5" executor: "workers" trigger { interval { hours: 1 } } target { command { argv: "/bin/true" } } }' \
  AddJob 'job { id: "e6" executor: "nope" trigger { interval { hours: 1 } } target { remote { task: "t" } } }' \
  ModifyJob 'job { id: "e1" executor: "default" } update_mask { paths: "executor" }' \
  ModifyJob 'job { id: "e1" executor: "workers" } update_mask { paths: "executor" }'
seed seq-modify-all 0 \
  AddJob "$CRON" \
  ModifyJob 'job { id: "a" name: "n" trigger { interval { seconds: 30 } } target { remote { task: "x" queue: "q" } } executor: "workers" misfire_grace_time { unlimited: true } coalesce: true max_instances: 3 overlap_policy: OVERLAP_POLICY_QUEUE_ALL labels { key: "a" value: "b" } next_run_time { seconds: 2114390000 } } update_mask { paths: "name" paths: "trigger" paths: "target" paths: "executor" paths: "misfire_grace_time" paths: "coalesce" paths: "max_instances" paths: "overlap_policy" paths: "labels" paths: "next_run_time" }' \
  ModifyJob 'job { id: "a" } update_mask { paths: "coalesce" paths: "max_instances" paths: "misfire_grace_time" paths: "next_run_time" paths: "labels" }' \
  ModifyJob 'job { id: "a" jobstore: "extra" } update_mask { paths: "jobstore" }' \
  ModifyJob 'job { id: "a" } update_mask { paths: "stats" }' \
  ModifyJob 'job { id: "a" } update_mask { paths: "nope" }' \
  ModifyJob 'job { id: "a" name: "only-fields" }' \
  GetJob 'job_id: "a" view: JOB_VIEW_FULL'
ls "$out" | wc -l
