"""Test support: puts the package on sys.path and runs the real daemon on a
free 127.0.0.1 port with a temporary data directory (Daemon, Collector and
wait_for of tests/harness/apsd_harness.py, shared with tests/e2e and
tests/security). Every wait is bounded."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)                      # bindings/python
ROOT = os.path.dirname(os.path.dirname(SRC))     # the workspace

sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
import apsd_harness  # noqa: E402
from apsd_harness import SANITIZED, Collector, free_port, wait_for  # noqa: E402,F401 (for the tests)


def _runfile(rel):
    try:
        return apsd_harness.find_runfile(rel, (ROOT,))
    except FileNotFoundError:
        return None


def _setup_path():
    """The assembled package (bazel test, or $APSD_PY_PACKAGE), else the
    source tree (whose __init__ finds the generated modules in bazel-bin)."""
    pkg = os.environ.get("APSD_PY_PACKAGE") or (
        os.environ.get("TEST_SRCDIR") and _runfile("bindings/python/pkg/apsd/__init__.py"))
    root = os.path.dirname(os.path.dirname(pkg)) if pkg and pkg.endswith(".py") else (pkg or SRC)
    if root not in sys.path:
        sys.path.insert(0, root)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    return root


PACKAGE_ROOT = _setup_path()
APSD = apsd_harness.APSD


class Daemon(apsd_harness.Daemon):
    """One apsd process on 127.0.0.1 in a new temporary directory (`tmp`,
    removed by cleanup()). restart() keeps the port and the data. The tests
    bring their own clients (the package's), so no channel stays open."""

    def __init__(self, extra=()):
        # A client connection left open makes SIGTERM wait the whole grace
        # (default 5 s) even when idle: keep restarts short.
        super().__init__(None, ["--shutdown-grace", "1"] + list(extra), keep_channel=False,
                         prefix="apsd-py-")
