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
set -- "$HERE/prepare.py" "$@"
. "$HERE/../run_python.sh"  # finds the project's Python and runs prepare.py with it
