"""Make the working tree importable as ansible_collections.hal9000.dind (as the tests do), and the test helpers."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(1, str(REPO_ROOT / "tests" / "integration"))

import conftest  # noqa: E402  (links the working tree and sets sys.path)

COLLECTIONS_ROOT = conftest.COLLECTIONS_ROOT
