#!/usr/bin/env bash
# Idempotent: make the gateway suite's venv and install requirements.txt into
# it unless every pin is already installed at its exact version. All progress
# goes to stderr; the last stdout line is the venv's python.
#
#   PY=$(bash tests/gateway/setup.sh | tail -n1)
#   "$PY" tests/gateway/suite.py --endpoint http://127.0.0.1:23791
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
venv="${CAIRN_GATEWAY_VENV:-$HOME/.cache/cairn/gateway-venv}"
py="$venv/bin/python"

if ! [ -x "$py" ] || ! "$py" -c 'import sys' >/dev/null 2>&1; then
    echo "setup.sh: creating venv $venv" >&2
    mkdir -p "$(dirname "$venv")"
    python3 -m venv --clear "$venv" >&2
fi

# Exit 0 when every "name==version" line of requirements.txt is installed.
satisfied() {
    "$py" - "$req" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        if version(name.strip()) != want.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYEOF
}

if ! satisfied; then
    echo "setup.sh: installing $req" >&2
    "$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    satisfied || { echo "setup.sh: requirements still not satisfied after install" >&2; exit 1; }
fi

echo "$py"
