#!/bin/sh
# Prepare miniImageNet for the miniImageNet configs, from a copy you hold:
#   MINIIMAGENET_SOURCE=DIR sh datasets/miniimagenet/run.sh
# DIR: images/ + train.csv, val.csv, test.csv (Ravi & Larochelle), or
# mini-imagenet-cache-{train,validation,test}.pkl (learn2learn). Idempotent and atomic; see prepare.py.
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
