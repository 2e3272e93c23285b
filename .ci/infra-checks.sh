#!/usr/bin/env bash
# Static checks of the Bicep in infra/ with checkov, offline.
#
# checkov pins many packages of its own, so it lives in its own venv (.tools/checkov-venv, git-ignored),
# never in the project's .venv. Every finding must be fixed in the Bicep or suppressed inline next to the
# resource with `#checkov:skip=CKV_...: reason`; this script fails on any failed check.
#
# Usage: .ci/infra-checks.sh            (from anywhere; works on the repository root)
set -euo pipefail

CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/checkov-venv"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/checkov" ]] || [[ "$("$VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
    echo "infra-checks: installing checkov $CHECKOV_VERSION into $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

cd "$ROOT"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# BC_SKIP_MAPPING: do not fetch Bridgecrew's policy mapping; --skip-download: no policy download either.
# checkov exits 1 when any check fails (soft-fail is never set here).
status=0
BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" \
    -d infra \
    --framework bicep \
    --skip-download \
    --quiet \
    --compact \
    "$@" | tee "$report" || status=$?

# checkov reports a file it cannot parse but still exits 0; an unparsed file is an unchecked file.
if grep -q "Parsing errors:" "$report"; then
    echo "infra-checks: checkov could not parse a Bicep file (run checkov without --quiet to see which)" >&2
    status=1
fi
if ! grep -q "Passed checks:" "$report"; then
    echo "infra-checks: checkov printed no result summary" >&2
    status=1
fi
exit "$status"
