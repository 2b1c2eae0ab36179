"""The reference model of guest memory: replays a scenario's steps and predicts every read.

docs/memory-model.md lists each rule with its source in QEMU or the kernel selftests.
"""

from qmpgmem.model.content import ZERO, Attr, Content, Pattern, Unknown, Zero
from qmpgmem.model.intervals import IntervalMap
from qmpgmem.model.lifecycle import PausedGuestStep, paused_guest_steps
from qmpgmem.model.memory import MemoryModel, ModelRangeError, View
from qmpgmem.model.predict import UnpredictableContent
from qmpgmem.model.rules import (
    KVM_ENGINE_CONVERSION,
    QEMU_CONVERSION,
    SELFTEST_ATTRIBUTES_ONLY,
    SELFTEST_WITH_FALLOCATE,
    ConversionPolicy,
    ModelContext,
    RegionKind,
    RegionSpec,
    ResetSemantics,
    reset_semantics,
)
from qmpgmem.model.steps import (
    ScenarioModel,
    apply_step,
    context_for_vm,
    model_for_run,
    model_for_vm,
    region_spec,
)

__all__ = [
    "KVM_ENGINE_CONVERSION",
    "QEMU_CONVERSION",
    "SELFTEST_ATTRIBUTES_ONLY",
    "SELFTEST_WITH_FALLOCATE",
    "ZERO",
    "Attr",
    "Content",
    "ConversionPolicy",
    "IntervalMap",
    "MemoryModel",
    "ModelContext",
    "ModelRangeError",
    "Pattern",
    "PausedGuestStep",
    "RegionKind",
    "RegionSpec",
    "ResetSemantics",
    "ScenarioModel",
    "Unknown",
    "UnpredictableContent",
    "View",
    "Zero",
    "apply_step",
    "context_for_vm",
    "model_for_run",
    "model_for_vm",
    "paused_guest_steps",
    "region_spec",
    "reset_semantics",
]
