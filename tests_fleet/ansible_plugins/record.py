"""An ansible callback for the fleet tier's assertions: every task's result per host, and
the stats, into the JSON file $QMPGMEM_FLEET_RECORD (ansible-core has no json callback of
its own). The human output stays ansible's default."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: record
    type: aggregate
    short_description: task results per host into a JSON file, for tests_fleet
    description: every task's result per host and the stats, into $QMPGMEM_FLEET_RECORD
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[dict[str, Any]] = []

    def _record(self, result: Any, **flags: bool) -> None:
        self.tasks.append({
            "task": result._task.get_name(),
            "host": result._host.get_name(),
            "result": {**self._clean(result._result), **flags},
        })

    @staticmethod
    def _clean(res: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(res, default=str))

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        doc = {
            "tasks": self.tasks,
            "stats": {h: stats.summarize(h) for h in sorted(stats.processed)},
        }
        with open(os.environ["QMPGMEM_FLEET_RECORD"], "w") as f:
            json.dump(doc, f, indent=1)
