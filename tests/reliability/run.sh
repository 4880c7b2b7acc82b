#!/usr/bin/env bash
# Runs one reliability test script: run.sh SCRIPT [ARGS...]. Debian's
# python3-grpcio/python3-protobuf are visible to /usr/bin/python3 only.
script=$1
shift
exec /usr/bin/python3 "tests/reliability/$script" "$@"
