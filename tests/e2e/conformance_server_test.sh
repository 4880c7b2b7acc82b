#!/usr/bin/env bash
# tools/conformance --server: every shared trigger vector through the real
# apsd's PreviewTrigger RPC (the same answers as the engine gives directly).
set -euo pipefail
root=$PWD
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/conf.XXXXXX")
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/service/apsd" --listen "127.0.0.1:$port" --data-dir "$tmp/data" 2>"$tmp/apsd.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
vectors=$root/external/shared/conformance/triggers.jsonl
[[ -f "$vectors" ]] || vectors=$root/../shared/conformance/triggers.jsonl
for _ in $(seq 100); do
  /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
out=$(PYTHONPATH="$root/proto" /usr/bin/python3 "$root/tools/conform/preview_client.py" \
      "127.0.0.1:$port" "$vectors") || { echo "$out" | tail -20; cat "$tmp/apsd.log"; exit 1; }
echo "$out" | tail -1
[[ "$(echo "$out" | tail -1)" == "3000 passed, 0 failed" ]]
