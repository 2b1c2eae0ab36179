"""Random operation sequences: the interval model against a brute-force model of every word.

The reference below keeps one entry per 8-byte word (and one attribute per page) and applies
each rule of docs/memory-model.md with numpy masks; the start values come from the rule
functions, which test_model_rules.py checks table by table. Any disagreement is a bug in the
run bookkeeping (splitting, merging, clipping, view assembly) or in a rule's application.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from qmpgmem.guest import protocol
from qmpgmem.model import (
    SELFTEST_ATTRIBUTES_ONLY,
    SELFTEST_WITH_FALLOCATE,
    MemoryModel,
    ModelContext,
    Pattern,
    RegionKind,
    RegionSpec,
    ResetSemantics,
    Unknown,
)
from qmpgmem.model.content import ZERO, Attr, Content
from qmpgmem.model.rules import (
    discards_shared,
    fresh_private,
    initial_attr,
    initial_private,
    initial_shared,
    region_kind,
    reset_semantics,
)

PAGE = 4096
PAGES = 16
SIZE = PAGES * PAGE
WORDS = SIZE // 8
Z, P, U = 0, 1, 2  # word codes: zero, pattern, unknown


class Layer:
    """One value per word: a code and, for patterns, the seed."""

    def __init__(self, content: Content) -> None:
        self.code = np.zeros(WORDS, dtype=np.int8)
        self.seed = np.zeros(WORDS, dtype=np.uint64)
        self.set(np.arange(WORDS), content)

    def set(self, idx: np.ndarray, content: Content) -> None:
        if isinstance(content, Pattern):
            self.code[idx] = P
            self.seed[idx] = content.seed
        else:
            self.code[idx] = U if isinstance(content, Unknown) else Z
            self.seed[idx] = 0


class Reference:
    """Brute force: every word, every page."""

    def __init__(self, spec: RegionSpec, ctx: ModelContext) -> None:
        self.spec, self.ctx = spec, ctx
        self.kind = region_kind(spec, ctx)
        self.shared = Layer(initial_shared(spec))
        self.private = Layer(initial_private(self.kind, ctx))
        self.attr = np.full(PAGES, initial_attr(spec, self.kind, ctx) is Attr.PRIVATE)

    @staticmethod
    def words(off: int, size: int) -> np.ndarray:
        return np.arange(off // 8, (off + size) // 8)

    def private_at(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.attr[(idx * 8) // PAGE], dtype=bool)

    def write(self, off: int, size: int, seed: int) -> None:
        idx, k = self.words(off, size), self.kind
        if k is RegionKind.IN_PLACE:
            self.shared.set(idx, Pattern(seed))
        elif k is RegionKind.ENCRYPTED:
            self.private.set(idx, Pattern(seed))
            self.shared.set(idx, Unknown(""))
        else:
            priv = self.private_at(idx)
            self.shared.set(idx[~priv], Pattern(seed))
            if k is RegionKind.SPLIT:
                self.private.set(idx[priv], Pattern(seed))

    def host_write(self, off: int, size: int, seed: int) -> None:
        idx = self.words(off, size)
        if self.kind is RegionKind.IN_PLACE:
            priv = self.private_at(idx)
            stop = int(np.argmax(priv)) if priv.any() else len(idx)
            self.shared.set(idx[:stop], Pattern(seed))
            self.shared.set(idx[stop:], Unknown(""))
            return
        self.shared.set(idx, Pattern(seed))
        if self.kind is RegionKind.ENCRYPTED:
            self.private.set(idx, Unknown(""))

    def convert(self, off: int, size: int, to_private: bool, ok: bool) -> None:
        if not ok:
            return
        idx = self.words(off, size)
        self.attr[off // PAGE : (off + size) // PAGE] = to_private
        if self.kind is RegionKind.SPLIT:
            if to_private:
                if discards_shared(self.spec, self.ctx):
                    self.shared.set(idx, ZERO)
            elif self.ctx.conversion_policy().punch_private_on_shared:
                self.private.set(idx, fresh_private(self.ctx))
            else:
                self.private.set(idx, Unknown(""))
        elif self.kind is RegionKind.IN_PLACE:
            self.shared.set(idx, Unknown(""))
        elif self.kind is RegionKind.ENCRYPTED:
            self.shared.set(idx, Unknown(""))
            self.private.set(idx, Unknown(""))

    def punch_hole(self, off: int, size: int) -> None:
        idx = self.words(off, size)
        if self.kind is RegionKind.IN_PLACE:
            self.shared.set(idx, ZERO)
        else:
            self.private.set(idx, fresh_private(self.ctx))

    def reset(self, sem: ResetSemantics) -> None:
        every = np.arange(WORDS)
        if sem is ResetSemantics.KEEP:
            return
        if sem in (ResetSemantics.TERMINATES, ResetSemantics.UNKNOWN):
            self.shared.set(every, Unknown(""))
            self.private.set(every, Unknown(""))
            return
        self.attr[:] = initial_attr(self.spec, self.kind, self.ctx) is Attr.PRIVATE
        if self.kind is RegionKind.SPLIT:
            self.private.set(every, fresh_private(self.ctx))
        elif self.kind is RegionKind.IN_PLACE:
            self.shared.set(every, Unknown(""))
        elif self.kind is RegionKind.ENCRYPTED:
            self.shared.set(every, Unknown(""))
            self.private.set(every, Unknown(""))

    def observe(self, off: int, size: int, content: Content, view: str) -> None:
        idx = self.words(off, size)
        priv = self.private_at(idx)
        k = self.kind
        if view == "host":
            if k is RegionKind.IN_PLACE:
                self.shared.set(idx[~priv], content)
            else:
                self.shared.set(idx, content)
        elif k is RegionKind.IN_PLACE:
            self.shared.set(idx, content)
        elif k is RegionKind.ENCRYPTED:
            self.private.set(idx, content)
        else:
            self.shared.set(idx[~priv], content)
            if k is RegionKind.SPLIT:
                self.private.set(idx[priv], content)

    def view(self, view: str) -> tuple[np.ndarray, np.ndarray]:
        """(code, seed) per word of what ``view`` reads."""
        every = np.arange(WORDS)
        priv = self.private_at(every)
        code, seed = self.shared.code.copy(), self.shared.seed.copy()
        k = self.kind
        if view == "host":
            if k is RegionKind.IN_PLACE:
                code[priv] = U
        elif k is RegionKind.ENCRYPTED:
            code, seed = self.private.code.copy(), self.private.seed.copy()
        elif k is RegionKind.SPLIT:
            code[priv], seed[priv] = self.private.code[priv], self.private.seed[priv]
        elif k is RegionKind.PLAIN:
            code[priv] = U
        if k is RegionKind.UNRESOLVED:
            code[:] = U
        seed[code != P] = 0
        return code, seed


def flatten(runs: list[tuple[int, int, Content]]) -> tuple[np.ndarray, np.ndarray]:
    code = np.concatenate([np.full(s // 8, _code(c), dtype=np.int8) for _, s, c in runs])
    seed = np.concatenate(
        [
            np.full(s // 8, c.seed if isinstance(c, Pattern) else 0, dtype=np.uint64)
            for _, s, c in runs
        ]
    )
    return code, seed


def _code(c: Content) -> int:
    return P if isinstance(c, Pattern) else U if isinstance(c, Unknown) else Z


def reference_bytes(code: np.ndarray, seed: np.ndarray, off: int) -> bytes:
    words = np.zeros(len(code), dtype=np.uint64)
    for s in np.unique(seed[code == P]):
        full = protocol.pattern_words(int(s), off, len(code) * 8)
        mask = (code == P) & (seed == s)
        words[mask] = full[mask]
    return words.astype("<u8").tobytes()


Q10 = (10, 0, 2)
Q11 = (11, 1, 3)
SETUPS: list[tuple[ModelContext, RegionSpec]] = [
    (ModelContext(engine="qemu", qemu_version=Q10), RegionSpec("r", SIZE, "memfd")),
    (ModelContext(engine="qemu", qemu_version=Q10), RegionSpec("r", SIZE, "file")),
    (
        ModelContext(engine="qemu", qemu_version=Q10, vm_type="sev-snp"),
        RegionSpec("r", SIZE, "memfd"),
    ),
    (ModelContext(engine="qemu", qemu_version=Q11, vm_type="tdx"), RegionSpec("r", SIZE, "ram")),
    (
        ModelContext(engine="qemu", qemu_version=Q10, vm_type="sw-protected"),
        RegionSpec("r", SIZE, "guest_memfd", flavour="memfd-private"),
    ),
    (
        ModelContext(engine="qemu", qemu_version=Q10, vm_type="sw-protected"),
        RegionSpec("r", SIZE, "guest_memfd", flavour="memfd-private", hugetlb=True),
    ),
    (
        ModelContext(engine="qemu", qemu_version=Q11, change_vmfd_on_reset=True),
        RegionSpec("r", SIZE, "guest_memfd", flavour="guest-memfd-property"),
    ),
    (ModelContext(engine="kvm", kvm_backend="kvm_pvm"), RegionSpec("r", SIZE, "guest_memfd")),
    (ModelContext(engine="qemu", qemu_version=Q10), RegionSpec("r", SIZE, "guest_memfd")),
    (ModelContext(engine="kvm"), RegionSpec("r", SIZE, "guest_memfd", gmem_flags=("mmap",))),
    (
        ModelContext(engine="kvm", vm_type="sw-protected"),
        RegionSpec("r", SIZE, "guest_memfd", gmem_flags=()),
    ),
    (
        ModelContext(engine="kvm", vm_type="sw-protected", conversion=SELFTEST_ATTRIBUTES_ONLY),
        RegionSpec("r", SIZE, "guest_memfd", gmem_flags=()),
    ),
    (
        ModelContext(engine="kvm", vm_type="sw-protected", conversion=SELFTEST_WITH_FALLOCATE),
        RegionSpec("r", SIZE, "guest_memfd", gmem_flags=()),
    ),
    (ModelContext(engine="kvm", vm_type="sw-protected"), RegionSpec("r", SIZE, "memfd")),
    (ModelContext(engine="qemu", qemu_version=Q10, vm_type="sev"), RegionSpec("r", SIZE, "memfd")),
]


def random_range(rng: random.Random, page: bool) -> tuple[int, int]:
    align = PAGE if page else 8
    if not page and rng.random() < 0.5:
        # page-ish boundaries make runs meet attribute boundaries often
        align = rng.choice((8, 0x800, PAGE))
    n = SIZE // align
    lo = rng.randrange(n)
    hi = rng.randrange(lo + 1, n + 1)
    return lo * align, (hi - lo) * align


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("setup", range(len(SETUPS)))
def test_random_sequences_match_brute_force(setup: int, seed: int) -> None:
    ctx, spec = SETUPS[setup]
    rng = random.Random(setup * 1000 + seed)
    model = MemoryModel([spec], ctx)
    ref = Reference(spec, ctx)
    state = model._regions["r"]  # the maps themselves, to check they stay maximal
    gmem = model.kind("r") in (RegionKind.SPLIT, RegionKind.IN_PLACE, RegionKind.UNRESOLVED)
    ops = ["write", "host_write", "convert", "observe", "reset"] + (
        ["punch_hole", "allocate"] if gmem else []
    )
    weights = [6, 3, 5, 1, 1] + ([2, 1] if gmem else [])
    log: list[str] = []
    for _ in range(50):
        op = rng.choices(ops, weights)[0]
        if op in ("write", "host_write"):
            off, size = random_range(rng, page=False)
            s = rng.randrange(4)
            getattr(model, op)("r", off, size, s)
            getattr(ref, op)(off, size, s)
            log.append(f"{op}({off:#x}, {size:#x}, {s})")
        elif op == "convert":
            off, size = random_range(rng, page=True)
            to_private, ok = rng.random() < 0.5, rng.random() < 0.8
            model.convert("r", off, size, to_private, ok)
            ref.convert(off, size, to_private, ok)
            log.append(f"convert({off:#x}, {size:#x}, private={to_private}, ok={ok})")
        elif op in ("punch_hole", "allocate"):
            off, size = random_range(rng, page=True)
            getattr(model, op)("r", off, size)
            if op == "punch_hole":
                ref.punch_hole(off, size)
            log.append(f"{op}({off:#x}, {size:#x})")
        elif op == "observe":
            off, size = random_range(rng, page=False)
            choices: list[Content] = [ZERO, Pattern(rng.randrange(4))]
            content = rng.choice(choices)
            view = rng.choice(["guest", "host"])
            model.observe("r", off, size, content, view)  # type: ignore[arg-type]
            ref.observe(off, size, content, view)
            log.append(f"observe({off:#x}, {size:#x}, {content}, {view})")
        else:
            sem = rng.choice([None, *ResetSemantics])
            model.reset(sem)
            ref.reset(sem if sem is not None else reset_semantics(ctx))
            log.append(f"reset({sem})")
        for view in ("guest", "host"):
            code, seed_ = ref.view(view)
            got_code, got_seed = flatten(model.expected_content("r", 0, SIZE, view))  # type: ignore[arg-type]
            assert np.array_equal(got_code, code), f"{view} view after {log}"
            assert np.array_equal(got_seed, seed_), f"{view} view after {log}"
        for layer in (state.shared, state.private, state.attrs):
            runs = layer.runs()  # maximal runs: neighbours always differ
            assert all(a[2] != b[2] for a, b in itertools.pairwise(runs)), log
    # predictions over random sub-ranges agree with bytes built from the reference
    for _ in range(20):
        off, size = random_range(rng, page=False)
        view = rng.choice(["guest", "host"])
        code, seed_ = ref.view(view)
        sl = slice(off // 8, (off + size) // 8)
        expect = (
            None
            if (code[sl] == U).any()
            else protocol.hash_bytes(reference_bytes(code[sl], seed_[sl], off))
        )
        assert model.expected_hash("r", off, size, view) == expect  # type: ignore[arg-type]
