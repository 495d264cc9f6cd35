#!/bin/sh
# Prepare CUB-200-2011 (100 / 50 / 50 classes, Chen et al. 2019's rule) from a copy you hold:
#   CUB_SOURCE=DIR sh datasets/cub/run.sh
# DIR: the extracted CUB_200_2011.tgz (CUB_200_2011/images/ with 200 class folders).
set -e
case "$0" in
    */*) HERE=$(cd "${0%/*}" && pwd) ;;
    *) HERE=$(pwd) ;;
esac
set -- "$HERE/prepare.py" "$@"
. "$HERE/../run_python.sh"  # finds the project's Python and runs prepare.py with it
