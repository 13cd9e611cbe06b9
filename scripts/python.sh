# Sourced by scripts/test and scripts/quickstart: finds a Python 3.10+ with pip as $PY and defines
# pip_install, which turns pip's PEP 668 refusal into one line saying what to do.

say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for candidate in python python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            PY="$candidate"
            break
        fi
    done
fi
if [ -z "$PY" ]; then
    say "no Python 3.10 or newer found as python or python3; install one, or set PYTHON=/path/to/python"
    exit 1
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    say "$PY has no pip; make a venv (python3 -m venv .venv && . .venv/bin/activate; on Debian: apt-get install python3-venv) and run again"
    exit 1
fi

pip_install() {
    local log status=0
    log="$(mktemp)"
    "$PY" -m pip install -q --disable-pip-version-check "$@" 2>"$log" || status=$?
    if [ "$status" -ne 0 ] && grep -q externally-managed-environment "$log"; then
        say "$PY is managed by the system (PEP 668); make a venv and run again: $PY -m venv .venv && . .venv/bin/activate && $0"
    else
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}
