#!/usr/bin/env bash
# One entry point that sets up everything on a fresh Debian/Ubuntu machine, then runs a job:
#   ./run.sh demo [ARGS...]   run the main demo
#   ./run.sh test [ARGS...]   run the test suite (ARGS go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

job=${1:-}
case "$job" in
    demo|test) shift ;;
    *) echo "usage: ./run.sh demo|test [ARGS...]" >&2; exit 2 ;;
esac

say() { echo "run.sh: $*" >&2; }

# --- OS packages: Icarus Verilog for cocotb; g++, make and perl for Verilator builds. -----------
missing=()
command -v iverilog >/dev/null || missing+=(iverilog)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v perl >/dev/null || missing+=(perl)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing OS packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python >= 3.11 and the virtual environment. ------------------------------------------------
python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
[ -n "$python" ] || { say "error: puce needs Python 3.11 or newer on PATH"; exit 1; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $python"
    if ! "$python" -m venv .venv 2>/dev/null; then
        # Debian ships venv separately.
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python$ver-venv" >/dev/null
        rm -rf .venv
        "$python" -m venv .venv
    fi
fi

# Reinstall only when the pins change.
stamp=.venv/.puce-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing puce and its pinned dependencies into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[test]"
    echo "$want" > "$stamp"
fi

# YoWASP compiles its WebAssembly on first use; keep that cache across runs.
export YOWASP_CACHE_DIR=${YOWASP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/yowasp}

case "$job" in
    demo) exec .venv/bin/puce demo "$@" ;;
    test) exec .venv/bin/python -m pytest -n 2 "$@" ;;
esac
