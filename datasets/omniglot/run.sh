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
set -- "$HERE/prepare.py" "$@"
. "$HERE/../run_python.sh"  # finds the project's Python and runs prepare.py with it
