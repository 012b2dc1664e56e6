"""Make the working tree importable as ansible_collections.hal9000.dind (as the tests do), the test helpers,
and Goals: how every benchmark records its goal checks and turns them into its exit status."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(1, str(REPO_ROOT / "tests" / "integration"))

import conftest  # noqa: E402  (links the working tree and sets sys.path)

COLLECTIONS_ROOT = conftest.COLLECTIONS_ROOT

# When set, each goal is appended to this file as one JSON line (scripts/bench.sh builds its table from them).
RESULTS_ENV = "HAL9000_BENCH_RESULTS"
MET, MISSED, FAILED = 0, 1, 2  # exit statuses


class Goals:
    """The goal checks of one benchmark run.

    ``run(main)`` runs the benchmark, then prints one line per goal and returns the exit status:
    0 every goal met, 1 a goal missed, 2 the benchmark failed before it finished (its goals so far are kept).
    """

    def __init__(self, script, results_path=None):
        self.script = Path(script).stem
        self.results_path = os.environ.get(RESULTS_ENV) if results_path is None else results_path
        self.results = []
        self.error = None

    def check(self, figure, value, goal, met):
        """Record one goal: the figure's name, the measured value with its unit, the goal, and whether it is met."""
        met = bool(met)
        self.results.append({"script": self.script, "figure": figure, "value": value, "goal": goal, "met": met})
        return met

    def at_most(self, figure, value, limit, unit, digits=1):
        """The common goal: ``value <= limit``, both in ``unit``."""
        return self.check(figure, f"{value:.{digits}f} {unit}".rstrip(), f"<= {limit} {unit}".rstrip(), value <= limit)

    @property
    def missed(self):
        return [result for result in self.results if not result["met"]]

    def exit_status(self):
        if self.error is not None:
            return FAILED
        return MISSED if self.missed else MET

    def report(self, out=None):
        """Print the goal lines and append them (and a failure, if any) to the results file."""
        out = out or sys.stdout
        print(f"\ngoals of {self.script}: {len(self.results) - len(self.missed)} of {len(self.results)} met", file=out)
        for result in self.results:
            verdict = "met" if result["met"] else "MISSED"
            print(f"  {verdict:<6} {result['figure']}: {result['value']} (goal {result['goal']})", file=out)
        if self.error is not None:
            print(f"  FAILED before it finished: {self.error}", file=out)
        out.flush()
        if self.results_path:
            lines = list(self.results)
            if self.error is not None:
                lines.append({"script": self.script, "failed": self.error})
            with open(self.results_path, "a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(line) + "\n" for line in lines)

    def run(self, main):
        """Run ``main()``, report, and return the exit status (for ``sys.exit``)."""
        try:
            main()
        except Exception as error:  # pylint: disable=broad-exception-caught
            # reported as a failed benchmark, with the goals recorded so far
            traceback.print_exc()
            self.error = f"{type(error).__name__}: {error}".splitlines()[0]
        self.report()
        return self.exit_status()
