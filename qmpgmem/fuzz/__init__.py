"""Seeded random scenarios run against the memory model; a mismatch is shrunk to a small YAML.

The pieces, in the order a fuzz run uses them: :mod:`.target` (what runs on this host and
engine), :mod:`.generate` (scenario i of seed N), :mod:`.dump` (the YAML a scenario is run
from and written as), :mod:`.execute` (one run through the ordinary runner), :mod:`.shrink`
(delta debugging, then field by field), :mod:`.campaign` (the loop). docs/fuzzing.md tells
the story for users.
"""

from qmpgmem.fuzz.campaign import CaseResult, FuzzOptions, FuzzReport, Mismatch, run_fuzz
from qmpgmem.fuzz.dump import RoundTripError, scenario_yaml, write_scenario
from qmpgmem.fuzz.execute import Executor, Failure, failure_of
from qmpgmem.fuzz.generate import DEFAULT_STEPS, generate_scenario
from qmpgmem.fuzz.shrink import FAILING_STEP, Shrinker, ShrinkResult, mark_step
from qmpgmem.fuzz.target import FuzzTarget, VmVariant, fuzz_target

__all__ = [
    "DEFAULT_STEPS",
    "FAILING_STEP",
    "CaseResult",
    "Executor",
    "Failure",
    "FuzzOptions",
    "FuzzReport",
    "FuzzTarget",
    "Mismatch",
    "RoundTripError",
    "ShrinkResult",
    "Shrinker",
    "VmVariant",
    "failure_of",
    "fuzz_target",
    "generate_scenario",
    "mark_step",
    "run_fuzz",
    "scenario_yaml",
    "write_scenario",
]
