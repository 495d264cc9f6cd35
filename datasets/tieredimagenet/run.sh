#!/bin/sh
# Prepare tieredImageNet (351 / 97 / 160 classes) from a copy you hold:
#   TIEREDIMAGENET_SOURCE=DIR sh datasets/tieredimagenet/run.sh
# DIR: <split>_images_png.pkl (Ren et al.) or <split>_images.npz, and <split>_labels.pkl, per split.
set -e
case "$0" in
    */*) HERE=$(cd "${0%/*}" && pwd) ;;
    *) HERE=$(pwd) ;;
esac
set -- "$HERE/prepare.py" "$@"
. "$HERE/../run_python.sh"  # finds the project's Python and runs prepare.py with it
