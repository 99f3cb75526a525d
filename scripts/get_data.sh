#!/usr/bin/env bash
# Make Fashion-MNIST available: Debian's package when we are root, else a note on how to get it.
# Never fails the build: the tests that need the real data skip without it.
set -u
system_dir=/usr/share/datasets/fashion-mnist
has_data() { ls "$1"/train-images-idx3-ubyte* >/dev/null 2>&1; }

if [ -n "${DISTILLSCOPE_DATA:-}" ] && { has_data "$DISTILLSCOPE_DATA" || has_data "$DISTILLSCOPE_DATA/fashion-mnist"; }; then
  exit 0
fi
has_data "$system_dir" && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Fashion-MNIST (apt-get install dataset-fashion-mnist) ..."
  if apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    exit 0
  fi
  echo "note: apt-get could not install dataset-fashion-mnist; the demo needs it."
else
  echo "note: Fashion-MNIST not found. Install it with 'sudo apt-get install dataset-fashion-mnist'," \
       "or set DISTILLSCOPE_DATA to a folder holding the IDX files (or pass --data-root)."
fi
exit 0
