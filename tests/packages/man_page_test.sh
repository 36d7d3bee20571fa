#!/usr/bin/env bash
# docs/sip-capture.8 is written by hand; the keys come from src/config.rs.
# Every key `sip-capture --help` lists must have its entry in the man page,
# and man must format the page without a warning.
#
#   man_page_test.sh BINARY
set -euo pipefail
binary=${1:?usage: man_page_test.sh BINARY}
page=$(cd "$(dirname "$0")/../.." && pwd)/docs/sip-capture.8
missing=0
for key in $("$binary" --help | awk '/^Keys:/ { keys = 1; next } keys && NF { print $1 }'); do
  grep -qF "\\fB$key\\fR" "$page" || { echo "FAIL docs/sip-capture.8 has no entry for $key"; missing=$((missing + 1)); }
done
warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
[ -z "$warnings" ] || { echo "FAIL man warns about docs/sip-capture.8:"; echo "$warnings"; missing=$((missing + 1)); }
[ "$missing" = 0 ] && echo "ok   docs/sip-capture.8: every key of --help, no man warning"
[ "$missing" = 0 ]
