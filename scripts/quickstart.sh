#!/usr/bin/env bash
# Quick start: set up, then one import pass. With ./accounts.yaml (or $INGEST_CONFIG) it imports your mailboxes;
# without one it runs the local demo (loopback Dovecot + local DOC² server) so you can watch the whole flow.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${INGEST_CONFIG:-}" ] || [ -f accounts.yaml ]; then
  bash scripts/setup.sh --runtime-only   # your mailboxes need no Dovecot and no test tools
  .venv/bin/python -m ingest check
  exec .venv/bin/python -m ingest import "$@"
fi
bash scripts/setup.sh
echo "No accounts.yaml here: running the local demo (nothing leaves this machine)." >&2
exec .venv/bin/python scripts/demo.py
