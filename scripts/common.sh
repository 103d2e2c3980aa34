# Paths the benchmark scripts share: `source "$(dirname "${BASH_SOURCE[0]}")/common.sh"`.
# REPO: this checkout; HOME_DIR: $LABELFLEET_HOME (the venv and models); PY: the venv's python;
# DATA: the human-judged data (../shared/data unless LABELFLEET_DATA); BIN: the release binary.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${LABELFLEET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/labelfleet}"
PY="$HOME_DIR/venv/bin/python"
DATA="${LABELFLEET_DATA:-$REPO/../shared/data}"
BIN="$REPO/target/release/labelfleet"
