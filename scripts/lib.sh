# Shared by quickstart.sh and test.sh: the virtualenv, the collection and the engine.
# shellcheck shell=bash
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HAL9000_VENV:-$REPO_ROOT/.venv}
export PATH="$VENV/bin:$PATH"
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}

log() { printf '\n==> %s\n' "$*"; }

# Create the virtualenv and install the pinned requirements (again only when they change).
ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum "$REPO_ROOT/requirements.txt" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  log "Installing the Python requirements into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$REPO_ROOT/requirements.txt"
  echo "$want" > "$stamp"
}

# Build the collection tarball into $1 and print its path.
build_collection() {
  local out=$1
  mkdir -p "$out"
  rm -f "$out"/hal9000-dind-*.tar.gz
  ansible-galaxy collection build --force --output-path "$out" "$REPO_ROOT" >/dev/null
  ls "$out"/hal9000-dind-*.tar.gz
}

# Install the collection the way a user does: from the built tarball.
install_collection() {
  local tarball
  tarball=$(build_collection "$REPO_ROOT/.ansible/build")
  log "Installing $(basename "$tarball")"
  ansible-galaxy collection install --force "$tarball" "$@" >/dev/null
}

# Point Ansible at the working tree (tests run what is checked out, not an installed copy).
# ANSIBLE_HOME too: ansible-lint and molecule (ansible-compat) put $ANSIBLE_HOME/collections first,
# ahead of ANSIBLE_COLLECTIONS_PATH, and reinstall the project there unless it holds this very link;
# with the default ~/.ansible they read, and overwrote, the copy a user installed.
use_working_tree_collection() {
  local root="$REPO_ROOT/.ansible/collections"
  mkdir -p "$root/ansible_collections/hal9000"
  ln -sfn "$REPO_ROOT" "$root/ansible_collections/hal9000/dind"
  export ANSIBLE_COLLECTIONS_PATH="$root"
  export ANSIBLE_HOME="$REPO_ROOT/.ansible"
}

docker_answers() {
  python3 - <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
try:
    s.connect("/var/run/docker.sock")
    s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    sys.exit(0 if b" 200 " in s.recv(64) else 1)
except OSError:
    sys.exit(1)
PY
}

# The engine step: the collection's engine role installs and starts dockerd when none answers.
ensure_engine() {
  if docker_answers; then
    return
  fi
  log "No Docker Engine answers: installing and starting one"
  use_working_tree_collection
  (cd "$REPO_ROOT" && ansible-playbook playbooks/engine.yml)
}
