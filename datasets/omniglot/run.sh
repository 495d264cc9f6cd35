#!/bin/sh
# Fetch, verify and prepare full Omniglot for the bigdata configs.
#   sh datasets/omniglot/run.sh                       # downloads the official zips
#   OMNIGLOT_SOURCE=DIR sh datasets/omniglot/run.sh   # offline: the two zips from DIR
# Idempotent and atomic; see prepare.py. Needs only sh and the project's Python.
set -e
case "$0" in
    */*) HERE=$(cd "${0%/*}" && pwd) ;;
    *) HERE=$(pwd) ;;
esac
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    PYTHON=python
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: no python3 or python on PATH (set PYTHON=/path/to/python)" >&2
        exit 1
    fi
fi
exec "$PYTHON" "$HERE/prepare.py" "$@"
