#!/usr/bin/env bash
# Sets up everything the product, its demo and its tests need on a fresh Debian machine:
# Debian packages (Dovecot for the local demo mailbox and the tests; Cyrus IMAP for the tests), the Python venv in
# .venv, pinned packages, the pinned azure-mgmt-* wheels whose REST API models the infra tests check the Bicep against.
# With --with-azurite (what .ci/run uses) also Node.js/npm and the Azure Storage emulator Azurite, pinned, in
# .tools/azurite (the tests of the Azure side start it themselves).
# With --runtime-only (scripts/quickstart.sh with your own accounts.yaml) only what importing needs: the venv with
# requirements.txt; no Dovecot, no test tools, no wheels for the infra tests.
# SETUP_PLAN=1 prints what would be installed and changes nothing.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest Azurite that runs on Node 18/20 (3.36 and later need Node 21+), as Debian 12 and this image have.
AZURITE_VERSION=3.35.0
with_azurite=0
runtime_only=0
for arg in "$@"; do
  case "$arg" in
    --with-azurite) with_azurite=1 ;;
    --runtime-only) runtime_only=1 ;;
    *) echo "setup: unknown option $arg (known: --with-azurite, --runtime-only)" >&2; exit 2 ;;
  esac
done

need_apt=()
if [ "$runtime_only" -eq 0 ]; then
  command -v dovecot >/dev/null 2>&1 || need_apt+=(dovecot-imapd dovecot-pop3d)
fi
if [ "$with_azurite" -eq 1 ]; then
  command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
fi
# Cyrus IMAP next to Dovecot, for the tests. Debian's cyrus-imapd CONFLICTS with dovecot-imapd (both provide
# imap-server): installing it would remove Dovecot's IMAP server. So: cyrus-common (master, ctl_cyrusdb; no conflict)
# and sasl2-bin (saslpasswd2) installed WITHOUT recommends (they recommend cyrus-imapd), and cyrus-imapd's imapd only
# unpacked into .tools/cyrus, the same version as cyrus-common. tests/support/cyrus.py runs it from there.
# Not with --runtime-only: importing needs none of it.
cyrus_imapd=.tools/cyrus/usr/lib/cyrus/bin/imapd
need_cyrus=()
unpack_cyrus=0
if [ "$runtime_only" -eq 0 ]; then
  [ -x /usr/lib/cyrus/bin/master ] || need_cyrus+=(cyrus-common)
  [ -x /usr/sbin/saslpasswd2 ] || need_cyrus+=(sasl2-bin)
  [ -x "$cyrus_imapd" ] || unpack_cyrus=1
fi
if [ "${SETUP_PLAN:-0}" = 1 ]; then
  echo "setup plan: Debian packages: ${need_apt[*]:-none}"
  if [ "${#need_cyrus[@]}" -gt 0 ]; then
    echo "setup plan: Cyrus IMAP for the tests: Debian packages ${need_cyrus[*]} (without recommends)"
  fi
  if [ "$unpack_cyrus" -eq 1 ]; then echo "setup plan: Cyrus IMAP for the tests: cyrus-imapd unpacked into .tools/cyrus"; fi
  if [ "$runtime_only" -eq 1 ]; then echo "setup plan: Python: requirements.txt"; else echo "setup plan: Python: requirements-dev.txt"; fi
  exit 0
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: packages missing; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]} (Debian packages)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${#need_cyrus[@]}" -gt 0 ] || [ "$unpack_cyrus" -eq 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: Cyrus IMAP for the tests missing; run this script as root" >&2
    exit 1
  fi
  if [ "${#need_cyrus[@]}" -gt 0 ]; then
    echo "setup: installing ${need_cyrus[*]} (Debian packages, without recommends)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_cyrus[@]}" >/dev/null
  fi
  if [ ! -x "$cyrus_imapd" ]; then
    version=$(dpkg-query -W -f='${Version}' cyrus-common)
    echo "setup: unpacking cyrus-imapd $version into .tools/cyrus (not installed: it conflicts with Dovecot)" >&2
    download=$(mktemp -d)
    chmod 755 "$download"  # apt's download sandbox user must be able to write there
    (cd "$download" && { apt-get download -qq "cyrus-imapd=$version" 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq "cyrus-imapd=$version"; }; })
    mkdir -p .tools/cyrus
    dpkg-deb -x "$download"/cyrus-imapd_*.deb .tools/cyrus
    rm -rf "$download"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt constraints-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$runtime_only" -eq 1 ]; then
  runtime_stamp=.venv/.runtime.sha256
  runtime_want=$(sha256sum < requirements.txt | cut -d' ' -f1)
  if { [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; } \
    && { [ ! -f "$runtime_stamp" ] || [ "$(cat "$runtime_stamp")" != "$runtime_want" ]; }; then
    echo "setup: installing the product's Python packages (pinned)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
      | grep -v "^WARNING: Location" >&2 || true
    echo "$runtime_want" > "$runtime_stamp"
  fi
  exit 0
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (pinned)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -m pip check >/dev/null
  echo "$want" > "$stamp"
fi

# Azure's published REST API models for the infra schema tests (tests/infra/test_schema.py): pinned azure-mgmt-*
# wheels, downloaded, never installed (the tests read them with ast).
wheel_dir=.tools/azure-mgmt-wheels
mkdir -p "$wheel_dir"
while read -r spec; do
  spec="${spec%%#*}"; spec="${spec// /}"
  [ -n "$spec" ] || continue
  wheel="$wheel_dir/$(echo "${spec%%==*}" | tr - _)-${spec##*==}-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    echo "setup: downloading $spec (REST API models for the infra tests)" >&2
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$wheel_dir" "$spec" 2>&1 \
      | grep -v "^WARNING: Location" >&2 || true
    [ -f "$wheel" ] || { echo "setup: $spec did not download to $wheel" >&2; exit 1; }
  fi
done < tests/infra/azure-mgmt-wheels.txt

if [ "$with_azurite" -eq 1 ]; then
  azurite_dir=.tools/azurite
  installed=$(node -p "require('./$azurite_dir/node_modules/azurite/package.json').version" 2>/dev/null || true)
  if [ "$installed" != "$AZURITE_VERSION" ]; then
    echo "setup: installing Azurite $AZURITE_VERSION (npm) into $azurite_dir" >&2
    mkdir -p "$azurite_dir"
    npm install --prefix "$azurite_dir" --no-audit --no-fund --save-exact --loglevel=error \
      "azurite@$AZURITE_VERSION" >&2
  fi
fi
