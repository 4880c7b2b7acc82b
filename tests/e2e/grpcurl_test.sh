#!/usr/bin/env bash
# The grpcurl scripts of tools/grpcurl against the real apsd: add the seed's
# three jobs, list, pause, resume, follow the events of a job until it ran,
# remove. Loopback only; every wait is bounded.
set -euo pipefail
root=$PWD
export GRPCURL=${GRPCURL:-$root/external/shared/tools/grpcurl/grpcurl}
[[ -x "$GRPCURL" ]] || GRPCURL=$(command -v grpcurl)
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/grpcurl.XXXXXX")
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export APSD=127.0.0.1:$port
"$root/service/apsd" --listen "$APSD" --data-dir "$tmp/data" 2>"$tmp/apsd.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
  "$GRPCURL" -plaintext "$APSD" list >/dev/null 2>&1 && break
  sleep 0.1
done
fail() { echo "FAIL: $*"; cat "$tmp/apsd.log"; exit 1; }
scripts=$root/tools/grpcurl

out=$("$scripts/add-seed-jobs") || fail "add-seed-jobs"
for id in seed-cron seed-once seed-interval; do
  grep -q "\"id\": \"$id\"" <<<"$out" || fail "add-seed-jobs did not add $id"
done
out=$("$scripts/list-jobs") || fail "list-jobs"
[[ $(grep -c '"id": "seed-' <<<"$out") -eq 3 ]] || fail "list-jobs: $out"
out=$("$scripts/pause-job" seed-cron) || fail "pause-job"
grep -q '"paused": true' <<<"$out" || fail "pause-job: $out"
out=$("$scripts/resume-job" seed-cron) || fail "resume-job"
grep -q '"next_run_time"' <<<"$out" || fail "resume-job: $out"
# The 3 s interval job runs within ~3 s: its JOB_EXECUTED carries the output.
out=$(timeout 8 "$scripts/follow-events" seed-interval 0 || true)
grep -q 'EVENT_TYPE_JOB_ADDED' <<<"$out" || fail "follow-events: no JOB_ADDED: $out"
grep -q 'EVENT_TYPE_JOB_EXECUTED' <<<"$out" || fail "follow-events: no JOB_EXECUTED: $out"
# "循环任务\n" in base64.
grep -q '"stdout_tail": "5b6q546v5Lu75YqhCg=="' <<<"$out" || fail "follow-events: output: $out"
out=$("$scripts/remove-job" seed-cron) || fail "remove-job"
out=$("$scripts/remove-job" seed-cron 2>&1) && fail "removing twice succeeded"
grep -q 'NotFound' <<<"$out" || fail "remove-job twice: $out"
out=$("$scripts/pause-job" 2>&1) && fail "pause-job without id succeeded"
echo "grpcurl scripts: 1 passed, 0 failed"
