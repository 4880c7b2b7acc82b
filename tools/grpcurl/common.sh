# Shared by the grpcurl scripts: which grpcurl, which server.
#   APSD=HOST:PORT   the server (default 127.0.0.1:50051)
#   GRPCURL=PATH     the grpcurl binary (default: on PATH, else ../shared's)
#   GRPCURL_FLAGS    e.g. "-H 'authorization: Bearer TOKEN'" or TLS flags
APSD=${APSD:-127.0.0.1:50051}
if [[ -z "${GRPCURL:-}" ]]; then
  if command -v grpcurl >/dev/null 2>&1; then
    GRPCURL=grpcurl
  else
    GRPCURL=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/shared/tools/grpcurl/grpcurl
  fi
fi
# rpc METHOD JSON: one call, plaintext unless GRPCURL_FLAGS say otherwise.
rpc() {
  local method=$1 body=${2:-'{}'}
  # shellcheck disable=SC2086
  "$GRPCURL" ${GRPCURL_FLAGS:--plaintext} -d "$body" "$APSD" "apsd.v1.Scheduler/$method"
}
