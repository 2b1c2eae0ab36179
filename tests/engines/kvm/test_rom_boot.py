"""guest_entry.RomBoot: what of a ROM a VM maps at start, and where vCPU 0 begins."""

from __future__ import annotations

import pytest

from qmpgmem.engines.kvm.guest_entry import RomBoot


@pytest.mark.parametrize(
    ("boot", "at_cpl3", "preload"), [("auto", True, True), ("rom", False, False)]
)
def test_the_micro_guest(microguest_rom: bytes, boot: str, at_cpl3: bool, preload: bool) -> None:
    plan = RomBoot.of(microguest_rom, boot)
    assert (plan.at_cpl3, plan.preload, plan.alias) == (at_cpl3, preload, False)


def test_an_older_rom_enters_in_the_rom(microguest_rom: bytes) -> None:
    """A header without payload_entry (0): CPL3 at the ROM's entry, so the ROM is mapped."""
    rom = microguest_rom[:0xFFEC] + bytes(4) + microguest_rom[0xFFF0:]
    plan = RomBoot.of(rom, "auto")
    assert plan.header is not None and plan.header.payload_entry == 0
    assert (plan.at_cpl3, plan.preload, plan.alias) == (True, False, False)


def test_a_foreign_rom_boots_at_the_reset_vector_with_the_alias(minirom: bytes) -> None:
    plan = RomBoot.of(minirom, "auto")
    assert (plan.header, plan.at_cpl3, plan.preload, plan.alias) == (None, False, False, True)
