# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: every task's result, in order, written as JSON to $HAL9000_TEST_RESULTS at the end.

The tests read module results from it; a copy task saving registered variables cost a second module run
(about 1 s) per task the tests run.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: task_results
type: notification
short_description: Every task's result, in order, as JSON in the file named by HAL9000_TEST_RESULTS
description:
  - Writes the file when the play ends; the integration tests read module results from it.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "task_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.results = []

    def _record(self, result, **flags):
        self.results.append(json.loads(json.dumps(dict(result._result, **flags), default=str)))

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result, failed=False)  # as a registered result says it

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("HAL9000_TEST_RESULTS")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self.results, handle)
