#!/usr/bin/env bash
# Mutation testing on demand (not in CI): installs mutmut beside the project (never into its venv
# or requirements.lock), then runs scripts/mutation.py. Arguments pass through, e.g.
#   scripts/mutation.sh functional/agreement.py attacks/deepfool.py --workers 2
# See docs/testing.md for how to read benchmarks/results/mutation.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
tools=${MUTATION_TOOLS:-$PWD/.mutation/tools}
tool=mutmut==3.8.1
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "scripts/mutation.sh needs Python 3.11 or later (tomllib); set PYTHON=" >&2; exit 2; }
if [ ! -f "$tools/.installed-$tool" ]; then
  echo "installing $tool into $tools (once)"
  rm -rf "$tools" && mkdir -p "$tools"
  # keep the project's own versions of shared dependencies (pytest, pluggy, ...)
  "$python" -m pip freeze --exclude-editable > "$tools/constraints.txt"
  "$python" -m pip install -q --disable-pip-version-check --target "$tools" \
    -c "$tools/constraints.txt" "$tool"
  touch "$tools/.installed-$tool"
fi
export MUTATION_TOOLS=$tools
PYTHONPATH="$tools:$PWD/src" exec nice -n 10 "$python" scripts/mutation.py "$@"
