#!/usr/bin/env bash
# Command (b) of the README: the whole test suite, against a real Docker Engine.
# It fails (never skips) when no engine answers: start one with scripts/quickstart.sh --engine-only.
#   scripts/test.sh [unit|integration|lint|sanity|molecule|package]...   (default: all, in that order)
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_venv
use_working_tree_collection

# Fails, never skips, without an engine; then makes the images the tests start containers from
# (the base image, the parent and both worker flavours; nothing is rebuilt when they are up to date).
require_engine() {
  if ! docker_answers; then
    echo "FAIL: no Docker Engine answers on /var/run/docker.sock; run scripts/quickstart.sh --engine-only" >&2
    exit 1
  fi
  local log
  log=$(mktemp)
  if ! ansible-playbook playbooks/build_images.yml -e '{"images_worker_flavours": ["minimal", "ultramin"]}' >"$log" 2>&1; then
    cat "$log"
    exit 1
  fi
  rm -f "$log"
}

run_unit() {
  log "Unit tests"
  python -m pytest -q tests/unit
}

run_integration() {
  require_engine
  log "Integration tests (real Docker Engine)"
  python -m pytest -q --durations=40 tests/integration
}

run_lint() {
  log "ansible-lint (production profile) and changelog fragments"
  ansible-lint
  antsibull-changelog lint
}

# ansible-test needs the collection under ansible_collections/<namespace>/<name>
# and an offline stand-in for the pip bootstrap script it would download.
run_sanity() {
  log "ansible-test sanity"
  local pip_version tree
  pip_version=$(grep -oP "pip='\K[0-9.]+" "$VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
  mkdir -p ~/.ansible/test/cache
  cp scripts/ansible-test-get-pip.py ~/.ansible/test/cache/get_pip_${pip_version//./_}.py
  tree=$(mktemp -d)/ansible_collections/hal9000/dind
  mkdir -p "$tree"
  git ls-files -co --exclude-standard | grep -v '^\.ansible/' | tar -cf - -T - | tar -C "$tree" -xf -
  for ignore in "$tree"/tests/sanity/ignore-*.txt; do
    if [ -s "$ignore" ]; then
      echo "FAIL: $ignore is not empty: fix the code instead" >&2
      exit 1
    fi
  done
  (cd "$tree" && ansible-test sanity --requirements --python 3.11 --color no)
  rm -rf "${tree%/ansible_collections/hal9000/dind}"
}

run_molecule() {
  require_engine
  log "Molecule scenarios"
  local scenario
  for scenario in molecule/*/; do
    molecule test -s "$(basename "$scenario")"
  done
}

# Build the tarball, install it into an empty collections path and run site.yml from it, twice;
# and prove every step runs the working tree even with another hal9000.dind in ~/.ansible/collections.
run_package() {
  require_engine
  log "Collection build, install and site.yml from the tarball; every step runs the working tree"
  python -m pytest -q tests/package
}

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
  steps=(unit integration lint sanity molecule package)
fi
# Every step runs even after a failure, so one CI run shows every problem.
failed=()
for step in "${steps[@]}"; do
  # Not inside `if`: bash would switch errexit off in the step.
  set +e
  (set -e; "run_$step")
  status=$?
  set -e
  [ $status -eq 0 ] || failed+=("$step")
done
log "Test steps failed: ${failed[*]:-none}"
echo "steps: $((${#steps[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
