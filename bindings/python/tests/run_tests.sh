#!/usr/bin/env bash
# Runs the Python binding's tests against the real daemon.
#   bazel test //bindings/python:python_test     (the assembled package)
#   bindings/python/tests/run_tests.sh [unittest args]   (from a checkout: the
#       sources, with the generated modules and the daemon from bazel-bin;
#       APSD_BIN=... picks another apsd binary)
# Debian's python3-grpcio/python3-protobuf are visible to /usr/bin/python3 only.
set -euo pipefail
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  tests="$PWD/bindings/python/tests"       # the runfiles tree
  export APSD_PY_PACKAGE="$PWD/bindings/python/pkg"
else
  tests=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fi
cd "$tests"
if (( $# )); then
  exec /usr/bin/python3 -m unittest -v "$@"
fi
# Fails when discovery finds nothing, instead of passing with "Ran 0 tests".
exec /usr/bin/python3 - <<'PY'
import sys
import unittest

suite = unittest.defaultTestLoader.discover(".", pattern="test_*.py")
result = unittest.TextTestRunner(verbosity=2).run(suite)
sys.exit(0 if result.wasSuccessful() and result.testsRun > 0 else 1)
PY
