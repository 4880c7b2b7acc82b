#!/usr/bin/env bash
# Debian's python3-grpcio/python3-protobuf are visible to /usr/bin/python3 only.
exec /usr/bin/python3 tests/load/test_firing.py
