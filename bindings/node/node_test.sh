#!/usr/bin/env bash
# Runs the Node binding's tests (bindings/node/test/*.test.js, `node --test`)
# against the runfiles' apsd, from the package's real source directory so that
# the node_modules/ installed there by tools/bootstrap is used. Prints node's
# TAP summary ("# pass N", "# fail M") and exits non-zero on any failure.
set -uo pipefail

runfiles=$PWD
pkg_json=$(readlink -f "$runfiles/bindings/node/package.json") || pkg_json=
if [[ -z "$pkg_json" || ! -f "$pkg_json" ]]; then
  echo "node_test: cannot find bindings/node/package.json in the runfiles ($runfiles)" >&2
  exit 1
fi
pkg=$(dirname "$pkg_json")
apsd=$runfiles/service/apsd
[[ -x "$apsd" ]] || { echo "node_test: no apsd at $apsd" >&2; exit 1; }
command -v node >/dev/null || { echo "node_test: node is not installed: run tools/bootstrap" >&2; exit 1; }

for m in @grpc/grpc-js @grpc/proto-loader; do
  if [[ ! -f "$pkg/node_modules/$m/package.json" ]]; then
    echo "node_test: $pkg/node_modules/$m is missing: run tools/bootstrap" \
         "(it runs \`npm ci\` in bindings/node)" >&2
    echo "# pass 0"
    echo "# fail 1"
    exit 1
  fi
done
if [[ -f "$pkg/node_modules/.apsd-installed-lock" ]] &&
   ! cmp -s "$pkg/package-lock.json" "$pkg/node_modules/.apsd-installed-lock"; then
  echo "node_test: warning: node_modules was installed from another package-lock.json;" \
       "run tools/bootstrap to update it" >&2
fi

export APSD=$apsd
proto=$(readlink -f "$runfiles/proto/apsd/v1/scheduler.proto")
export APSD_PROTO_DIR=${proto%/apsd/v1/scheduler.proto}
export TMPDIR=${TEST_TMPDIR:-${TMPDIR:-/tmp}}
cd "$pkg" || exit 1
log=$TMPDIR/node-test.tap
# node prints TAP; keep it all in the test log, then repeat the summary.
node --test --test-reporter=tap --test-concurrency=2 test/*.test.js 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "---- node --test summary (bindings/node) ----"
grep -E '^# (tests|pass|fail|cancelled|skipped|todo|duration_ms) ' "$log"
exit "$rc"
