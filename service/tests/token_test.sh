#!/usr/bin/env bash
# apsd-token prints a base64url token of 32 bytes and its token-file line,
# whose hash is the SHA-256 of the token's characters; tokens differ.
set -euo pipefail
bin=service/apsd-token
out=$("$bin")
tok=$(sed -n 1p <<<"$out")
line=$(sed -n 2p <<<"$out")
[[ $(wc -l <<<"$out") -eq 2 ]] || { echo "want 2 lines: $out"; exit 1; }
[[ $tok =~ ^[A-Za-z0-9_-]{43}$ ]] || { echo "bad token: $tok"; exit 1; }
want="write $(printf %s "$tok" | sha256sum | cut -d' ' -f1)"
[[ $line == "$want" ]] || { echo "got '$line', want '$want'"; exit 1; }
read_line=$("$bin" read | sed -n 2p)
[[ $read_line =~ ^read\ [0-9a-f]{64}$ ]] || { echo "bad read line: $read_line"; exit 1; }
[[ $("$bin" | head -1) != "$tok" ]] || { echo "same token twice"; exit 1; }
if "$bin" admin 2>/dev/null; then echo "accepted role admin"; exit 1; fi
echo PASS
