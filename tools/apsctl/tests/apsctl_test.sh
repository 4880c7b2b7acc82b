#!/usr/bin/env bash
# apsctl against the real apsd: every subcommand, tables and --json, exit
# codes, --help, bearer tokens, and `events --follow` resuming across a
# daemon restart. Loopback only; every wait is bounded; every daemon started
# is stopped on exit.
#
#   bazel test //tools/apsctl:apsctl_test
#   tools/apsctl/tests/apsctl_test.sh bazel-bin/tools/apsctl/apsctl bazel-bin/service/apsd
set -uo pipefail
APSCTL=$(realpath "${1:?usage: apsctl_test.sh APSCTL APSD}")
APSD_BIN=$(realpath "${2:?usage: apsctl_test.sh APSCTL APSD}")
PY=/usr/bin/python3
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/apsctl.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
unset APSD APSD_SERVER APSD_TOKEN

checks=0
probe_flags=()
fail() {
  echo "FAIL: $*"
  echo "--- stdout:"; cat "$tmp/out" 2>/dev/null
  echo "--- stderr:"; cat "$tmp/err" 2>/dev/null
  echo "--- apsd log:"; tail -n 30 "$tmp"/*.log 2>/dev/null
  exit 1
}
# run RC ARGS...: runs apsctl, expects exit code RC; stdout in $tmp/out.
run() {
  local want=$1; shift
  "$APSCTL" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [[ $rc -eq $want ]] || fail "apsctl $* exited $rc, want $want"
  checks=$((checks + 1))
}
has() { grep -qF -- "$1" "$tmp/out" || fail "stdout lacks: $1"; checks=$((checks + 1)); }
err_has() { grep -qF -- "$1" "$tmp/err" || fail "stderr lacks: $1"; checks=$((checks + 1)); }
# pyjson 'python code using d': asserts on the JSON on stdout (one line).
pyjson() {
  "$PY" -c "import json,sys
d = json.loads(open(sys.argv[1]).read())
$1" "$tmp/out" || fail "JSON check failed: $1"
  checks=$((checks + 1))
}
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# start_daemon NAME PORT [ARGS...]: starts apsd; its pid in $daemon_pid.
start_daemon() {
  local name=$1 port=$2; shift 2
  "$APSD_BIN" --listen "127.0.0.1:$port" --data-dir "$tmp/$name" "$@" >>"$tmp/$name.log" 2>&1 &
  daemon_pid=$!
  pids+=("$daemon_pid")
  for _ in $(seq 100); do
    "$APSCTL" --server "127.0.0.1:$port" "${probe_flags[@]}" --timeout 1s state >/dev/null \
      2>"$tmp/probe" && return 0
    grep -q UNAUTHENTICATED "$tmp/probe" && return 0
    kill -0 "$daemon_pid" 2>/dev/null || fail "apsd $name exited"
    sleep 0.1
  done
  fail "apsd $name did not answer"
}
stop_daemon() {
  kill "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  local rc=$?
  [[ $rc -eq 0 ]] || fail "apsd exited with $rc"
}

port=$(free_port)
start_daemon main "$port"
export APSD_SERVER=127.0.0.1:$port

# --- help and usage errors ---------------------------------------------------
run 0 --help
has "Exit codes:"
has "apsctl add seed-cron --cron 'second=*/5' -- /bin/echo 定时任务"
has "15 NOT_FOUND"
cp "$tmp/out" "$tmp/help"
for c in add get list modify reschedule pause resume run remove remove-all preview backfill \
         events state pause-scheduler resume-scheduler; do
  grep -qE "^  $c +[a-z]" "$tmp/help" || fail "apsctl --help does not list $c"
  run 0 "$c" --help
  has "Usage: apsctl $c"
  has "Exit codes:"
done
run 0 add --help
has "--cron 'FIELD=EXPR ...'"
has "--interval DURATION"
run 0 events -h
has "--after SEQ"
run 2
run 2 bogus
err_has "unknown command 'bogus'"
run 2 list --cron 'hour=1'
err_has "unknown option --cron"
run 2 add x --interval 3s /bin/echo hi
err_has "put the program after --"
run 2 add x --interval 3 -- /bin/true
err_has "--interval: expected a duration"
run 2 add x --cron 'hourx=1' -- /bin/true
err_has "unknown field 'hourx'"
run 2 add x --cron 'hour=1' --interval 3s -- /bin/true
run 2 add x --interval 3s
err_has "give the command after --"
run 2 get
run 2 --timeout nope state
run 2 add x --date 'next tuesday' -- /bin/true
run 2 add x --cron hour=9 --timezone Mars/Olympus -- /bin/true
err_has "unknown time zone"

# --- the seed's jobs, exactly as in `apsctl --help` ---------------------------
run 0 add seed-cron --cron 'second=*/5' -- /bin/echo 定时任务
has "cron[second='*/5']"
has "target              /bin/echo 定时任务"
run 0 add seed-once --date +12s -- /bin/echo 一次性任务
has "date["
run 0 add seed-interval --interval 3s -- /bin/echo 循环任务
has "interval[0:00:03]"
run 16 add seed-cron --cron 'second=*/5' -- /bin/echo again
err_has "ALREADY_EXISTS: job.id"
run 13 add bad --cron 'hour=25' -- /bin/true
err_has "INVALID_ARGUMENT: job.trigger.cron.hour"
run 0 add seed-cron --replace --json --cron 'second=*/5' -- /bin/echo 定时任务
pyjson 'assert d["id"] == "seed-cron" and d["trigger"]["cron"]["second"] == "*/5", d'

# Options of add: APScheduler keywords and the job fields.
run 0 add --json berlin --cron 'day_of_week=mon-fri hour=9,17 minute=30' --timezone Europe/Berlin \
  --jitter 2s --misfire-grace-time unlimited --no-coalesce --max-instances 3 --overlap queue-one \
  --label team=a --label tier=x --env GREETING=hi --cwd /tmp --command-timeout 1m \
  --max-output-bytes 1000 --name greeter -- /bin/sh -c 'echo $GREETING'
pyjson '
j = d
c = j["trigger"]["cron"]
assert (c["day_of_week"], c["hour"], c["minute"], c["timezone"]) == ("mon-fri", "9,17", "30", "Europe/Berlin"), c
assert j["trigger"]["jitter"] == "2s"
assert j["misfire_grace_time"] == {"unlimited": True}
assert j["coalesce"] is False and j["max_instances"] == 3
assert j["overlap_policy"] == "OVERLAP_POLICY_QUEUE_ONE"
assert j["labels"] == {"team": "a", "tier": "x"}
cmd = j["target"]["command"]
assert cmd["argv"] == ["/bin/sh", "-c", "echo $GREETING"] and cmd["env"] == {"GREETING": "hi"}
assert cmd["cwd"] == "/tmp" and cmd["timeout"] == "60s" and cmd["max_output_bytes"] == 1000
assert j["name"] == "greeter"'
run 0 add --json kw --interval 'hours=2 minutes=30' --start-date '2026-01-01 08:00' \
  --timezone Europe/Berlin -- /bin/true
pyjson '
i = d["trigger"]["interval"]
assert (i["hours"], i["minutes"]) == (2, 30), i
assert i["start_date"] == "2026-01-01T07:00:00Z", i'
run 0 add --json ct --crontab '*/5 * * * *' --paused -- /bin/true
pyjson 'assert d["trigger"]["cron"]["crontab"] == "*/5 * * * *" and d["paused"] is True'
run 0 add --json cal --calendar 'months=1 hour=9' -- /bin/true
pyjson 'assert d["trigger"]["calendar_interval"]["months"] == 1 and d["trigger"]["calendar_interval"]["hour"] == 9'
run 0 add --json dt --date '2030-11-23T10:00:00+01:00' -- /bin/true
pyjson 'assert d["next_run_time"] == "2030-11-23T09:00:00Z", d'
run 0 add --json both --trigger-json '{"any_of": {"triggers": [{"cron": {"hour": "9"}}, {"cron": {"hour": "17"}}]}}' -- /bin/true
pyjson 'assert len(d["trigger"]["any_of"]["triggers"]) == 2'
run 0 add --json remote1 --interval 1h --remote mod:func --args '[1, "two"]' --kwargs '{"k": true}' --queue q1
pyjson '
r = d["target"]["remote"]
assert r == {"task": "mod:func", "args": [1.0, "two"], "kwargs": {"k": True}, "queue": "q1"}, r'
run 0 add --json --job-json '{"id": "fromjson", "trigger": {"interval": {"seconds": 30}}, "target": {"command": {"argv": ["/bin/true"]}}}' --name overridden
pyjson 'assert d["id"] == "fromjson" and d["name"] == "overridden" and d["trigger"]["interval"]["seconds"] == 30'
run 0 remove berlin kw ct cal dt both remote1 fromjson
has "removed fromjson"

# --- get, list -----------------------------------------------------------------
run 0 get seed-cron
has "trigger             cron[second='*/5']"
has "stats"
run 0 get seed-cron --json
pyjson 'assert d["id"] == "seed-cron" and d["paused"] is False and isinstance(d["stats"]["runs"], str)'
run 0 get seed-cron --view basic --json
pyjson 'assert "stats" not in d'
run 15 get nope
err_has "NOT_FOUND: job_id: no job with id"
run 0 list
has "seed-cron"
has "seed-interval"
has "seed-once"
has "3 jobs"
run 0 list --json
pyjson 'assert [j["id"] for j in d["jobs"]] == ["seed-cron", "seed-interval", "seed-once"], d'
run 0 list --page-size 1 --limit 2 --json
pyjson 'assert len(d["jobs"]) == 2'
run 0 list --paused
has "0 jobs"
run 13 list --selector '==='

# --- modify, reschedule, pause, resume, run -------------------------------------------
run 0 modify seed-cron --name heartbeat --max-instances 2 --label team=a --json
pyjson 'assert d["name"] == "heartbeat" and d["max_instances"] == 2 and d["labels"] == {"team": "a"}'
run 0 list --selector team=a --json
pyjson 'assert [j["id"] for j in d["jobs"]] == ["seed-cron"]'
run 2 modify seed-cron
err_has "nothing to change"
run 15 modify nope --name x
run 0 modify seed-cron --json -- /bin/echo changed
pyjson 'assert d["target"]["command"]["argv"] == ["/bin/echo", "changed"]'
run 0 reschedule seed-cron --cron 'second=*/10' --json
pyjson 'assert d["trigger"]["cron"]["second"] == "*/10"'
run 2 reschedule seed-cron
run 0 pause seed-cron
has "paused seed-cron: next run - (paused)"
run 0 list --paused --json
pyjson 'assert [j["id"] for j in d["jobs"]] == ["seed-cron"]'
run 0 resume seed-cron --json
pyjson 'assert d["paused"] is False and "next_run_time" in d'
run 15 pause nope
run 0 run seed-cron
has "run "
run 0 run seed-cron --json
pyjson 'assert len(d["run_id"]) == 32 and "scheduled_run_time" in d'
run 15 run nope

# --- preview, backfill ---------------------------------------------------------------
run 0 preview --cron 'day=last fri hour=5' --count 3 --start 2026-01-01T00:00:00Z
has "cron[day='last fri', hour='5']"
has "   1  2026-01-30T05:00:00Z"
has "   3  2026-03-27T05:00:00Z"
run 0 preview --crontab '30 9 * * 1-5' --timezone Europe/Berlin --start 2026-11-27T00:00:00Z --count 2 --json
pyjson 'assert d["fire_times"] == ["2026-11-27T08:30:00Z", "2026-11-30T08:30:00Z"], d'
run 0 preview --date '2026-12-24 18:00' --timezone Europe/Berlin --json
pyjson 'assert d["fire_times"] == ["2026-12-24T17:00:00Z"], d'
run 13 preview --cron 'hour=9' --count 5000
run 2 preview
run 0 backfill seed-interval --start -20s --end -5s --dry-run --json
pyjson 'assert "run_ids" in d'
run 15 backfill nope --start -10s
run 2 backfill seed-interval

# --- events --------------------------------------------------------------------------
run 0 events
has "JOB_ADDED          seed-cron"
run 0 events --json --type added --job seed-once
"$PY" - "$tmp/out" <<'EOF' || fail "events --json"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert lines and all(l["event"]["type"] == "EVENT_TYPE_JOB_ADDED" for l in lines), lines
assert all(l["event"]["job_id"] == "seed-once" for l in lines)
EOF
# The interval job runs every 3 s: wait for two runs (bounded by timeout).
timeout 30 "$APSCTL" events --follow --json --type executed --job seed-interval --count 2 \
  >"$tmp/out" 2>"$tmp/err" || fail "events --follow --count 2"
"$PY" - "$tmp/out" <<'EOF' || fail "events --follow output"
import base64, json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(lines) == 2, lines
for l in lines:
    e = l["event"]
    assert e["type"] == "EVENT_TYPE_JOB_EXECUTED" and e["job_id"] == "seed-interval", e
    assert base64.b64decode(e["outcome"]["stdout_tail"]).decode() == "循环任务\n", e
EOF
checks=$((checks + 1))
run 0 events --after 3 --count 1 --json
pyjson 'assert d["event"]["sequence"] == "4", d'
run 2 events --type bogus
run 21 events --after 999999999

# --- the scheduler ------------------------------------------------------------------------
run 0 state
has "state               running"
has "JOBSTORE"
has "processpool"
run 0 pause-scheduler
has "state               paused"
run 0 state --json
pyjson 'assert d["state"] == "SCHEDULER_STATE_PAUSED" and d["default_timezone"] == "UTC"'
run 19 run seed-cron
err_has "FAILED_PRECONDITION"
run 0 resume-scheduler --json
pyjson 'assert d["state"] == "SCHEDULER_STATE_RUNNING"'

# --- remove -----------------------------------------------------------------------------
run 0 add gone --date +1h -- /bin/true
run 0 remove gone
has "removed gone"
run 15 remove gone
err_has "NOT_FOUND"

# --- events --follow across a daemon restart --------------------------------------------------
# From the newest sequence on (not live only), so that no race with the
# subscription can lose the JOB_ADDED.
run 0 state --json
last=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["event_log"]["last_sequence"])' "$tmp/out")
"$APSCTL" events --follow --json --job r-1 --after "$last" >"$tmp/follow" 2>"$tmp/follow.err" &
follow=$!
pids+=("$follow")
run 0 add r-1 --interval 1h -- /bin/true
stop_daemon "$daemon_pid"
start_daemon main "$port"
run 0 remove r-1
for _ in $(seq 300); do
  grep -q EVENT_TYPE_JOB_REMOVED "$tmp/follow" && break
  sleep 0.1
done
kill -TERM "$follow"
wait "$follow"
rc=$?
[[ $rc -eq 0 ]] || fail "events --follow exited $rc after SIGTERM: $(cat "$tmp/follow.err")"
"$PY" - "$tmp/follow" <<'EOF' || fail "events --follow across a restart: $(cat "$tmp/follow")"
import json, sys
evs = [json.loads(l)["event"] for l in open(sys.argv[1]) if l.strip()]
types = [e["type"] for e in evs]
assert types == ["EVENT_TYPE_JOB_ADDED", "EVENT_TYPE_JOB_REMOVED"], types
seqs = [int(e["sequence"]) for e in evs]
assert seqs == sorted(set(seqs)), seqs
EOF
checks=$((checks + 1))

# --- remove-all, then an unreachable daemon ------------------------------------------------
# seed-cron, seed-interval, and seed-once unless its run (12 s after it was
# added) has removed it already.
run 0 remove-all --json
pyjson 'assert d["removed_count"] in (2, 3), d'
run 0 remove-all
has "removed 0 jobs"
run 0 list
has "0 jobs"
dead=$(free_port)
run 24 --server "127.0.0.1:$dead" state
err_has "UNAVAILABLE"

# --- the examples of `apsctl --help` (and of add, preview, modify, reschedule)
# work as printed, in order (the remote-daemon one aside).
mkdir -p "$tmp/bin"
ln -s "$APSCTL" "$tmp/bin/apsctl"
run_examples() {
  local n=0 line
  while IFS= read -r line; do
    [[ $line == *apsd.example* ]] && continue
    PATH="$tmp/bin:$PATH" timeout 30 bash -c "$line" >"$tmp/out" 2>"$tmp/err" ||
      fail "the example of apsctl $1 --help failed: $line"
    n=$((n + 1))
  done < <("$APSCTL" $1 --help | awk '/^Examples/ {on = 1; next} /^$/ {on = 0} on' |
           sed -e :a -e '/\\$/N; s/\\\n//; ta')
  [[ $n -gt 0 ]] || fail "apsctl $1 --help has no examples"
  checks=$((checks + n))
}
run_examples ""
run_examples modify
run_examples reschedule
run_examples preview
run 0 remove-all
run_examples add
run 0 remove-all

# --- bearer tokens -------------------------------------------------------------------------
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
printf 'read %s\nwrite %s\n' "$(sha reader-token)" "$(sha writer-token)" >"$tmp/tokens"
sport=$(free_port)
start_daemon secure "$sport" --token-file "$tmp/tokens"
run 26 --server "127.0.0.1:$sport" state
err_has "UNAUTHENTICATED"
run 0 --server "127.0.0.1:$sport" --token reader-token state
APSD_TOKEN=reader-token run 17 --server "127.0.0.1:$sport" add t --interval 1h -- /bin/true
err_has "PERMISSION_DENIED"
printf 'writer-token\n' >"$tmp/token-file"
run 0 --server "127.0.0.1:$sport" --token-file "$tmp/token-file" add t --interval 1h -- /bin/true
run 1 --server "127.0.0.1:$sport" --token-file "$tmp/missing" state
stop_daemon "$daemon_pid"

# --- TLS (when openssl can make a certificate) ----------------------------------------------
if openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 \
     -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost >/dev/null 2>&1; then
  tport=$(free_port)
  probe_flags=(--tls-ca "$tmp/cert.pem")
  start_daemon tls "$tport" --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" \
    --token-file "$tmp/tokens"
  probe_flags=()
  run 0 --server "127.0.0.1:$tport" --tls-ca "$tmp/cert.pem" --token writer-token state
  has "state               running"
  # (127.0.0.1, not localhost: a name lookup goes through c-ares, whose 10-byte
  # leak LeakSanitizer reports under --config=asan.)
  run 0 --server "127.0.0.1:$tport" --tls-ca "$tmp/cert.pem" --tls-server-name localhost \
    --token writer-token --json add tls-1 --interval 1h -- /bin/true
  pyjson 'assert d["id"] == "tls-1"'
  run 24 --server "127.0.0.1:$tport" --token writer-token state    # plaintext to a TLS port
  run 1 --server "127.0.0.1:$tport" --tls-ca "$tmp/nonexistent.pem" state
  run 2 --server "127.0.0.1:$tport" --tls-cert "$tmp/cert.pem" state   # no --tls-key
  stop_daemon "$daemon_pid"
else
  echo "no openssl: TLS not tested"
fi

echo "apsctl: $checks checks passed"
echo "1 passed, 0 failed"
