"""The reference model of guest memory: what the guest and the host must read after each step.

Why a model and not recorded expectations: a scenario says "the guest writes seed 7, converts
a page, punches a hole"; the model replays those operations with the rules of QEMU and KVM
(:mod:`qmpgmem.model.rules`, docs/memory-model.md) and predicts every later read, so a
scenario needs no hand-computed hashes and a deviation names the rule it broke.

Each region keeps three interval maps over its offsets: ``shared`` (the backing the host maps;
for an mmap'd guest_memfd the guest_memfd itself), ``private`` (the guest-only layer: the
guest_memfd of a split region, or the decrypted view of an SEV guest) and the KVM memory
attribute of every page. A read by the guest or the host picks a layer per page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from qmpgmem.errors import ScenarioError
from qmpgmem.guest.protocol import WORD
from qmpgmem.model.content import (
    ZERO,
    Attr,
    Content,
    Pattern,
    Unknown,
    describe_content,
)
from qmpgmem.model.intervals import IntervalMap
from qmpgmem.model.predict import segments_bytes, segments_hash
from qmpgmem.model.rules import (
    ModelContext,
    RegionKind,
    RegionSpec,
    ResetSemantics,
    discards_shared,
    fresh_private,
    initial_attr,
    initial_private,
    initial_shared,
    region_kind,
    reset_semantics,
)

__all__ = ["PAGE", "MemoryModel", "ModelRangeError", "View"]

PAGE = 4096
View: TypeAlias = Literal["guest", "host"]

# Reasons the model gives when a read cannot be predicted; docs/memory-model.md explains each.
NO_GMEM_PRIVATE = "private access to memory without guest_memfd exits with KVM_EXIT_MEMORY_FAULT"
HOST_PRIVATE_INPLACE = "host access to a private page of an mmap'd guest_memfd faults (SIGBUS)"
HOST_WRITE_STOPPED = "host write stopped at a private page of an mmap'd guest_memfd"
UNPUNCHED_PRIVATE = "private content after a to-shared conversion that did not punch it"
INPLACE_CONVERSION = "conversion of an mmap'd (in-place) guest_memfd"
ENCRYPTED_CONVERSION = "conversion on an encrypted (SEV/SEV-ES) guest"
ENCRYPTED_GUEST_WRITE = "guest-written bytes of an encrypted guest as the host sees them"
ENCRYPTED_HOST_WRITE = "host-written bytes as an encrypted guest reads them"
INPLACE_REBUILD = "mmap'd guest_memfd after QEMU rebuilt the VM on reset"
UNRESOLVED_FLAVOUR = "QEMU flavour auto: the engine did not say which flavour it used"


class ModelRangeError(ScenarioError):
    """An operation names a region the model does not have or a range that does not fit it."""


@dataclass
class _Region:
    spec: RegionSpec
    kind: RegionKind
    shared: IntervalMap[Content]
    private: IntervalMap[Content]
    attrs: IntervalMap[Attr]


#: A piece of a range and the layer a reader reaches there; None: no layer (``reason`` says why).
_Piece: TypeAlias = tuple[int, int, IntervalMap[Content] | None, str]


class MemoryModel:
    """Content and attributes of every region; operations in, predictions out.

    Offsets and sizes are region-relative bytes, multiples of 8; conversions, punches and
    allocations work on whole 4 KiB pages. Every method raises :class:`ModelRangeError` for a
    range outside its region.
    """

    def __init__(self, regions: Iterable[RegionSpec], ctx: ModelContext) -> None:
        self.ctx = ctx
        self._regions: dict[str, _Region] = {}
        for spec in regions:
            if spec.id in self._regions:
                raise ModelRangeError(f"region {spec.id!r} is given twice")
            if spec.size <= 0 or spec.size % PAGE:
                raise ModelRangeError(
                    f"region {spec.id!r}: size {spec.size:#x} is not a positive multiple of 4K"
                )
            kind = region_kind(spec, ctx)
            self._regions[spec.id] = _Region(
                spec=spec,
                kind=kind,
                shared=IntervalMap(spec.size, initial_shared(spec)),
                private=IntervalMap(spec.size, initial_private(kind, ctx)),
                attrs=IntervalMap(spec.size, initial_attr(spec, kind, ctx)),
            )

    # -- facts ------------------------------------------------------------------------------

    @property
    def region_ids(self) -> list[str]:
        return list(self._regions)

    def kind(self, region: str) -> RegionKind:
        return self._get(region).kind

    def attributes(self, region: str, off: int, size: int) -> list[tuple[int, int, Attr]]:
        """The attribute runs of a range, as ``(offset, size, attr)``."""
        r = self._range(region, off, size)
        return [(lo, hi - lo, a) for lo, hi, a in r.attrs.segments(off, off + size)]

    def runs(self, region: str) -> int:
        """How many runs the region's maps hold (for tests of the bookkeeping)."""
        r = self._get(region)
        return len(r.shared) + len(r.private) + len(r.attrs)

    # -- operations -------------------------------------------------------------------------

    def write(self, region: str, off: int, size: int, seed: int) -> None:
        """The guest fills the range with the pattern of ``seed`` (R5)."""
        r = self._range(region, off, size)
        content = Pattern(seed)
        for lo, hi, layer, _ in self._guest_pieces(r, off, off + size):
            if layer is not None:  # else the access exits to userspace and writes nothing
                layer.assign(lo, hi, content)
        if r.kind is RegionKind.ENCRYPTED:
            r.shared.assign(off, off + size, Unknown(ENCRYPTED_GUEST_WRITE))

    def host_write(self, region: str, off: int, size: int, seed: int) -> None:
        """The host fills the range with the pattern of ``seed`` through its mapping (R6)."""
        r = self._range(region, off, size)
        content = Pattern(seed)
        for lo, hi, layer, _ in self._host_pieces(r, off, off + size):
            if layer is None:
                # The first private page faults; nothing from there on is known to be written.
                r.shared.assign(lo, off + size, Unknown(HOST_WRITE_STOPPED))
                break
            layer.assign(lo, hi, content)
        if r.kind is RegionKind.ENCRYPTED:
            r.private.assign(off, off + size, Unknown(ENCRYPTED_HOST_WRITE))

    def convert(self, region: str, off: int, size: int, to_private: bool, outcome_ok: bool) -> None:
        """Apply a conversion the host carried out (``outcome_ok``) or refused (R8-R13)."""
        r = self._range(region, off, size, page=True)
        if not outcome_ok:
            return  # R8: a refused conversion changes nothing
        lo, hi = off, off + size
        r.attrs.assign(lo, hi, Attr.PRIVATE if to_private else Attr.SHARED)
        if r.kind is RegionKind.SPLIT:
            if to_private:
                if discards_shared(r.spec, self.ctx):  # R9
                    r.shared.assign(lo, hi, ZERO)
            elif self.ctx.conversion_policy().punch_private_on_shared:  # R10
                r.private.assign(lo, hi, fresh_private(self.ctx))
            else:  # R11
                r.private.assign(lo, hi, Unknown(UNPUNCHED_PRIVATE))
        elif r.kind is RegionKind.IN_PLACE:  # R13
            r.shared.assign(lo, hi, Unknown(INPLACE_CONVERSION))
        elif r.kind is RegionKind.ENCRYPTED:  # R21
            r.shared.assign(lo, hi, Unknown(ENCRYPTED_CONVERSION))
            r.private.assign(lo, hi, Unknown(ENCRYPTED_CONVERSION))
        # RegionKind.PLAIN: only the attribute changes (R12)

    def punch_hole(self, region: str, off: int, size: int) -> None:
        """fallocate(PUNCH_HOLE) on the region's guest_memfd (R14)."""
        r = self._gmem_range(region, off, size, "punch a hole in")
        if r.kind is RegionKind.IN_PLACE:
            r.shared.assign(off, off + size, ZERO)
        else:
            r.private.assign(off, off + size, fresh_private(self.ctx))

    def allocate(self, region: str, off: int, size: int) -> None:
        """fallocate(KEEP_SIZE) on the region's guest_memfd: no content changes (R15)."""
        self._gmem_range(region, off, size, "allocate in")

    def stop(self) -> None:
        """Pausing the vCPUs changes no memory (R16)."""

    def cont(self) -> None:
        """Resuming the vCPUs changes no memory (R16)."""

    def reset(self, semantics: ResetSemantics | None = None) -> None:
        """A system reset; ``semantics`` defaults to what this engine and QEMU do (R17-R20)."""
        sem = semantics if semantics is not None else reset_semantics(self.ctx)
        if sem is ResetSemantics.KEEP:
            return
        if sem is ResetSemantics.TERMINATES:
            self.forget("QEMU cannot reset this confidential guest and exits")
            return
        if sem is ResetSemantics.UNKNOWN:
            self.forget("reset on a QEMU whose version the model does not know")
            return
        for r in self._regions.values():  # R19: a new VM fd and new guest_memfds
            whole = (0, r.spec.size)
            r.attrs.assign(*whole, initial_attr(r.spec, r.kind, self.ctx))
            if r.kind is RegionKind.SPLIT:
                r.private.assign(*whole, fresh_private(self.ctx))
            elif r.kind is RegionKind.IN_PLACE:
                r.shared.assign(*whole, Unknown(INPLACE_REBUILD))
            elif r.kind is RegionKind.ENCRYPTED:
                r.shared.assign(*whole, Unknown(INPLACE_REBUILD))
                r.private.assign(*whole, Unknown(INPLACE_REBUILD))

    def forget(self, reason: str, region: str | None = None) -> None:
        """Mark every layer of one region (or all) Unknown; for effects the model cannot follow."""
        targets = [self._get(region)] if region is not None else list(self._regions.values())
        for r in targets:
            r.shared.assign(0, r.spec.size, Unknown(reason))
            r.private.assign(0, r.spec.size, Unknown(reason))

    def forget_range(self, region: str, off: int, size: int, reason: str) -> None:
        """Mark both layers of one range Unknown (e.g. bytes two vCPUs raced on)."""
        r = self._range(region, off, size)
        r.shared.assign(off, off + size, Unknown(reason))
        r.private.assign(off, off + size, Unknown(reason))

    def observe(self, region: str, off: int, size: int, content: Content, view: View) -> None:
        """Record what a reader verified (e.g. a passing verify of a range the model had as
        Unknown); only the layers that reader reaches change."""
        r = self._range(region, off, size)
        pieces = self._pieces(r, off, off + size, view)
        for lo, hi, layer, _ in pieces:
            if layer is not None:
                layer.assign(lo, hi, content)

    # -- predictions ------------------------------------------------------------------------

    def expected_content(
        self, region: str, off: int, size: int, view: View = "guest"
    ) -> list[tuple[int, int, Content]]:
        """What ``view`` reads over the range, as merged ``(offset, size, content)`` runs."""
        r = self._range(region, off, size)
        runs: list[tuple[int, int, Content]] = []
        for lo, hi, layer, reason in self._pieces(r, off, off + size, view):
            parts: Iterable[tuple[int, int, Content]] = (
                layer.segments(lo, hi) if layer is not None else [(lo, hi, Unknown(reason))]
            )
            for a, b, c in parts:
                if runs and runs[-1][2] == c and runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], b, c)
                else:
                    runs.append((a, b, c))
        return [(a, b - a, c) for a, b, c in runs]

    def expected_hash(self, region: str, off: int, size: int, view: View = "guest") -> int | None:
        """The range hash ``view`` must compute; None when any part is Unknown."""
        return segments_hash(self.expected_content(region, off, size, view))

    def expected_bytes(self, region: str, off: int, size: int, view: View = "guest") -> bytes:
        """The bytes ``view`` must read (small ranges).

        :raise UnpredictableContent: some part of the range is Unknown.
        """
        return segments_bytes(self.expected_content(region, off, size, view))

    def describe(self, region: str, off: int, size: int, view: View = "guest") -> str:
        """``"pattern seed 7 over [0x0, 0x10000), zero over [0x10000, 0x20000)"``."""
        return describe_content(self.expected_content(region, off, size, view))

    # -- internals --------------------------------------------------------------------------

    def _get(self, region: str) -> _Region:
        try:
            return self._regions[region]
        except KeyError:
            known = ", ".join(repr(k) for k in self._regions) or "none"
            raise ModelRangeError(f"no region {region!r} (the model has {known})") from None

    def _range(self, region: str, off: int, size: int, page: bool = False) -> _Region:
        r = self._get(region)
        align = PAGE if page else WORD
        if off < 0 or size <= 0 or off % align or size % align:
            raise ModelRangeError(
                f"range [{off:#x}, +{size:#x}) of {region!r}: offset and size must be "
                f"multiples of {align} and size positive"
            )
        if off + size > r.spec.size:
            raise ModelRangeError(
                f"range [{off:#x}, {off + size:#x}) does not fit region {region!r} "
                f"of size {r.spec.size:#x}"
            )
        return r

    def _gmem_range(self, region: str, off: int, size: int, what: str) -> _Region:
        r = self._range(region, off, size, page=True)
        if r.kind not in (RegionKind.SPLIT, RegionKind.IN_PLACE, RegionKind.UNRESOLVED):
            raise ModelRangeError(f"cannot {what} region {region!r}: it has no guest_memfd")
        return r

    def _pieces(self, r: _Region, lo: int, hi: int, view: View) -> list[_Piece]:
        it = self._guest_pieces(r, lo, hi) if view == "guest" else self._host_pieces(r, lo, hi)
        return list(it)

    def _guest_pieces(self, r: _Region, lo: int, hi: int) -> Iterator[_Piece]:
        """Which layer the guest reaches, page run by page run (R7)."""
        if r.kind is RegionKind.UNRESOLVED:
            yield lo, hi, None, UNRESOLVED_FLAVOUR
            return
        if r.kind is RegionKind.IN_PLACE:
            yield lo, hi, r.shared, ""
            return
        if r.kind is RegionKind.ENCRYPTED:
            yield lo, hi, r.private, ""
            return
        for a, b, attr in r.attrs.segments(lo, hi):
            if attr is Attr.SHARED:
                yield a, b, r.shared, ""
            elif r.kind is RegionKind.SPLIT:
                yield a, b, r.private, ""
            else:
                yield a, b, None, NO_GMEM_PRIVATE

    def _host_pieces(self, r: _Region, lo: int, hi: int) -> Iterator[_Piece]:
        """Which layer the host's mapping reaches (R6)."""
        if r.kind is RegionKind.UNRESOLVED:
            yield lo, hi, None, UNRESOLVED_FLAVOUR
            return
        if r.kind is not RegionKind.IN_PLACE:
            yield lo, hi, r.shared, ""
            return
        for a, b, attr in r.attrs.segments(lo, hi):
            if attr is Attr.SHARED:
                yield a, b, r.shared, ""
            else:
                yield a, b, None, HOST_PRIVATE_INPLACE
