#!/bin/sh
# Prepare the LEO authors' embeddings for models/multitask/leo's miniImageNet / tieredImageNet configs:
#   LEO_EMBEDDINGS_SOURCE=embeddings.zip sh datasets/leo_embeddings/run.sh
# (embeddings.zip from http://storage.googleapis.com/leo-embeddings/embeddings.zip, or the folder it
# extracts to). Checked, copied unchanged, atomic and idempotent; see prepare.py.
set -e
case "$0" in
    */*) HERE=$(cd "${0%/*}" && pwd) ;;
    *) HERE=$(pwd) ;;
esac
set -- "$HERE/prepare.py" "$@"
. "$HERE/../run_python.sh"  # finds the project's Python and runs prepare.py with it
