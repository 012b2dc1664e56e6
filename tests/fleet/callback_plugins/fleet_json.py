# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: every task's per-host results and the stats as one JSON document.

ansible-core 2.19 moved its json callback to ansible.posix, which is not installed here.
"""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: fleet_json
type: stdout
short_description: Per-task, per-host results and the stats as JSON (the fleet tests read them)
description:
  - Prints one JSON document at the end of the run.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "fleet_json"

    def __init__(self):
        super().__init__()
        self.tasks = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks.append({"task": {"name": task.get_name()}, "hosts": {}})

    def _record(self, result, **flags):
        if self.tasks:
            data = dict(result._result, **flags)
            self.tasks[-1]["hosts"][result._host.get_name()] = json.loads(json.dumps(data, default=str))

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed)
        summary = {host: stats.summarize(host) for host in hosts}
        self._display.display(json.dumps({"plays": [{"tasks": self.tasks}], "stats": summary}, default=str))
