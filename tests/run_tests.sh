#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv and run it. Usage: bash tests/run_tests.sh [pytest args]
# On a fresh Debian machine (as root) it also installs the reference components the oracle tests use:
# real DIALS and OpenMPI from apt, OM's compiled peakfinder8 from PyPI. Without them those tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,om]"
.venv/bin/python -m pip install -q --no-deps ondamonitor==23.8.3 || echo "note: OM's peakfinder8 oracle not installed"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! [ -x /usr/bin/dials.find_spots ] || ! command -v mpirun >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dials openmpi-bin libopenmpi-dev >/dev/null) \
      || echo "note: apt could not install DIALS/OpenMPI; those tests will skip"
  fi
fi
if command -v mpicc >/dev/null; then
  .venv/bin/python -m pip install -q "mpi4py>=3.1" || echo "note: mpi4py not installed; MPI tests will skip"
fi
.venv/bin/python -m ruff check .
# comparisons/ and plugins/ are checked as the top-level packages they are in the repository (mypy cannot
# follow the package-dir mapping that installs them inside sfx_cnnhit).
.venv/bin/python -m mypy --strict sfx_cnnhit comparisons plugins
exec .venv/bin/python -m pytest "$@"
