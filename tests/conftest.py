"""Shared test set-up: the working tree as the hal9000.dind collection."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS_ROOT = REPO_ROOT / ".ansible" / "collections"


def _link_working_tree():
    """Make `ansible_collections.hal9000.dind` resolve to this checkout."""
    namespace = COLLECTIONS_ROOT / "ansible_collections" / "hal9000"
    namespace.mkdir(parents=True, exist_ok=True)
    link = namespace / "dind"
    if not link.is_symlink() or link.resolve() != REPO_ROOT:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(REPO_ROOT)
    for package in (COLLECTIONS_ROOT / "ansible_collections", namespace):
        (package / "__init__.py").touch()


_link_working_tree()
sys.path.insert(0, str(COLLECTIONS_ROOT))
os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS_ROOT)
