#!/usr/bin/env bash
# Writes the seed corpus of reflection_fuzz.c into service/fuzz/corpus.
# Run from the repository root (needs protoc). Seeds:
#   req-*  mode byte 0x00, then requests framed by a length byte: each kind
#          of request, known and unknown names, one stream per seed;
#   set-*  mode byte 0x01, then a FileDescriptorSet: the extension test set
#          and a small set without source info.
set -euo pipefail
out=service/fuzz/corpus/reflection
mkdir -p "$out"
enc() { # text-format ServerReflectionRequest -> binary on stdout
    protoc --encode=grpc.reflection.v1.ServerReflectionRequest -Iproto \
        grpc/reflection/v1/reflection.proto <<<"$1"
}
frame() { # one framed request from text format
    local f
    f=$(mktemp)
    enc "$1" >"$f"
    local n
    n=$(stat -c %s "$f")
    ((n < 256)) || { echo "request too long: $1" >&2; exit 1; }
    printf "\\x$(printf %02x "$n")"
    cat "$f"
    rm -f "$f"
}
seed() { # name, then text-format requests
    local name=$1
    shift
    { printf '\x00'; for r in "$@"; do frame "$r"; done; } >"$out/req-$name"
}
seed list 'host: "localhost" list_services: "*"'
seed symbol 'file_containing_symbol: "apsd.v1.Scheduler"' \
    'file_by_filename: "apsd/v1/workers.proto"' \
    'file_containing_symbol: "apsd.v1.Scheduler.AddJob"'
seed nested 'file_containing_symbol: "google.protobuf.Struct.FieldsEntry"' \
    'file_containing_symbol: ".grpc.health.v1.HealthCheckResponse.ServingStatus"'
seed files 'file_by_filename: "google/protobuf/timestamp.proto"' \
    'file_by_filename: "grpc/reflection/v1alpha/reflection.proto"' \
    'file_by_filename: "nope.proto"'
seed extension 'file_containing_extension { containing_type: "apsd.v1.Job" extension_number: 100 }' \
    'all_extension_numbers_of_type: "apsd.v1.Job"' \
    'all_extension_numbers_of_type: "apsd.v1.OverlapPolicy"'
seed unknown 'file_containing_symbol: "apsd.v1.NoSuch"' 'host: "h"'
# Found by the fuzzer: field number 0 in a two-byte key, which protobuf-c
# 1.4 accepts (reflection.c rejects it).
printf '\x36\x31\x80\x00\x2a' >"$out/req-field-zero"
# Found by the fuzzer: a service whose name is not UTF-8 was listed, then
# a request for it by that name was rejected. Such a set is now refused.
printf '\x01\x0a\x1a\x0a\x07a.proto\x32\x0f\x0a\x02S\xf4\x12\x09\x0a\x01m\x12\x01M\x1a\x01M' \
    >"$out/set-name-not-utf8"
# Found by the fuzzer: a service whose name starts with a NUL byte (empty
# to C) was listed as "", and a request for "" was rejected. Refused now.
printf '\x01\x0a\x1a\x0a\x07a.proto\x32\x0f\x0a\x0d\x00\x00\x00\x00\x00\x00\x00\x12\x01M\x1a\x01M' \
    >"$out/set-name-empty"

{ printf '\x01'; protoc --include_imports --descriptor_set_out=/dev/stdout \
    -Iservice/tests/testdata -I/usr/include ext_user.proto; } >"$out/set-ext"
{ printf '\x01'; protoc --include_imports --descriptor_set_out=/dev/stdout \
    -Iproto grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto; } >"$out/set-grpc"
ls -l "$out"
