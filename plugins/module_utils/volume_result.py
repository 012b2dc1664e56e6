# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an import or an export reports: the target's state before, the counts in its actions, the result dict.

Also the time in the names of what is kept aside, and the one line an OS error is told in.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import time

from ansible_collections.hal9000.dind.plugins.module_utils.manifest import is_empty, summary


def _timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def _counts(manifest):
    info = summary(manifest)
    return f"{info['files']} files, {info['bytes']} bytes"


def _state(before, diffs, compared):
    if before is None:
        return "missing"
    if compared and not diffs:
        return "matching"
    return "empty" if is_empty(before) else "different"


def _os_message(exc):
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _result(volume, path, state, source, before, after, actions, kept, verified, diffs, warnings):
    return {
        "changed": bool(actions),
        "volume": volume,
        "path": path,
        "target_state": state,
        "source": summary(source),
        "target_before": summary(before) if before is not None else None,
        "target": summary(after),
        "verified": verified,
        "kept_aside": kept,
        "actions": actions,
        "differences": diffs,
        "warnings": warnings,
    }
