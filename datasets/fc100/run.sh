#!/bin/sh
# Prepare FC100 (CIFAR-100 by superclass) from CIFAR-100's python version you hold:
#   FC100_SOURCE=DIR sh datasets/fc100/run.sh
# DIR: the extracted cifar-100-python.tar.gz (cifar-100-python/ with train, test, meta).
set -e
case "$0" in
    */*) HERE=$(cd "${0%/*}" && pwd) ;;
    *) HERE=$(pwd) ;;
esac
set -- "$HERE/prepare.py" "$@"
. "$HERE/../run_python.sh"  # finds the project's Python and runs prepare.py with it
