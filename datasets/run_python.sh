# Sourced by datasets/*/run.sh after `set -- PREPARE.PY ARGS...`: runs them with the
# project's Python (sourced, not run, so that no other program is needed on PATH).
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    PYTHON=python
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: no python3 or python on PATH (set PYTHON=/path/to/python)" >&2
        exit 1
    fi
fi
exec "$PYTHON" "$@"
