"""Building and caching the micro guest images (qmpgmem.guest.image), and what they contain."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from qmpgmem.errors import SetupError
from qmpgmem.guest import image, protocol
from qmpgmem.guest.rom_header import rom_header

ROM_BASE = 0xFFFF0000


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the sources, selected through QMPGMEM_MICROGUEST_SRC."""
    src = tmp_path / "src"
    shutil.copytree(image.source_dir(), src, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setenv(image.SOURCE_ENV, str(src))
    return src


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def leftovers(cache: Path) -> list[str]:
    return (
        sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) if cache.exists() else []
    )


def test_digest_follows_the_sources(sources: Path) -> None:
    original = image.image_sources_digest(image.source_dir())
    assert image.image_sources_digest() == original  # a faithful copy hashes the same
    (sources / "build").mkdir()
    (sources / "build" / "junk.o").write_bytes(b"x")
    assert image.image_sources_digest() == original  # build output is not a source
    with (sources / "mem.c").open("a") as f:
        f.write("\n/* changed */\n")
    assert image.image_sources_digest() != original


def test_build_then_reuse(sources: Path, cache: Path) -> None:
    rom = image.guest_image("rom", cache=cache)
    elf = image.guest_image("pvh", cache=cache)
    assert rom.parent == elf.parent == cache / image.image_sources_digest()
    assert rom.stat().st_size == 64 * 1024
    stamp = rom.stat().st_mtime_ns
    assert image.guest_image("rom", cache=cache) == rom
    assert rom.stat().st_mtime_ns == stamp  # not rebuilt
    with (sources / "uart.c").open("a") as f:
        f.write("\n")
    rebuilt = image.guest_image("rom", cache=cache)
    assert rebuilt.parent != rom.parent and rebuilt.read_bytes() == rom.read_bytes()
    assert leftovers(cache) == []


def test_rom_layout(sources: Path, cache: Path) -> None:
    """The header at 0xffc0 and the reset vector agree with docs/guest-protocol.md."""
    rom = image.guest_image("rom", cache=cache).read_bytes()
    magic, hver, pver, e16, e32, sys_size, payload, nbytes = struct.unpack_from(
        "<8s7I", rom, 0xFFC0
    )
    assert magic == b"QMGUEST\0" and hver == 1 and pver == protocol.PROTOCOL_VERSION
    assert sys_size == protocol.SYS_SIZE and payload == 0x100000
    assert 0 < nbytes <= 0xF000 and rom[nbytes:0xF000] == bytes(0xF000 - nbytes)
    assert ROM_BASE + 0xF000 <= e32 < ROM_BASE + 0xFFC0
    (idle_rip,) = struct.unpack_from("<I", rom, 0xFFE4)
    assert payload < idle_rip < payload + nbytes  # the RIP after the idle hlt, in the payload
    assert rom[idle_rip - payload - 1] == 0xF4  # hlt
    assert rom_header(rom) is not None and rom_header(rom).idle_rip == idle_rip  # type: ignore[union-attr]
    (user_entry,) = struct.unpack_from("<I", rom, 0xFFE8)
    assert ROM_BASE + 0xF000 <= user_entry < ROM_BASE + 0xFFC0  # boot code, run in place
    assert rom_header(rom).user_entry == user_entry  # type: ignore[union-attr]
    (payload_entry,) = struct.unpack_from("<I", rom, 0xFFEC)
    assert payload <= payload_entry < payload + nbytes  # mg_user_start, in the payload
    assert rom_header(rom).payload_entry == payload_entry  # type: ignore[union-attr]
    assert rom_header(rom).payload_image(rom) == rom[:nbytes]  # type: ignore[union-attr]
    assert 0xF000 <= e16 < 0xFFC0
    assert rom[0xFFF0] == 0xE9  # jmp rel16 to the real-mode entry
    (rel,) = struct.unpack_from("<h", rom, 0xFFF1)
    assert (0xFFF3 + rel) & 0xFFFF == e16


def elf_segments(data: bytes) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    """(e_entry, [(p_type, p_offset, p_paddr, p_filesz, p_memsz)]) of an ELF64 file."""
    assert data[:4] == b"\x7fELF" and data[4] == 2
    e_entry, e_phoff = struct.unpack_from("<QQ", data, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    segs = []
    for i in range(e_phnum):
        p_type, _flags, off, _vaddr, paddr, filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", data, e_phoff + i * e_phentsize
        )
        segs.append((p_type, off, paddr, filesz, memsz))
    return e_entry, segs


def test_pvh_elf(sources: Path, cache: Path) -> None:
    data = image.guest_image("pvh", cache=cache).read_bytes()
    entry, segs = elf_segments(data)
    loads = [s for s in segs if s[0] == 1]
    notes = [s for s in segs if s[0] == 4]
    assert len(loads) == 1
    _, _, paddr, filesz, memsz = loads[0]
    # inside the guest's own area, clear of 0xa0000-0xfffff and of the user stack
    assert paddr == 0x100000 and filesz <= memsz and paddr + memsz <= 0x200000
    found = []
    for _, off, _, notesz, _ in notes:
        pos = off
        while pos < off + notesz:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name = data[pos + 12 : pos + 12 + namesz]
            desc = pos + 12 + (namesz + 3) // 4 * 4
            if name == b"Xen\0" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                found.append(struct.unpack_from("<I", data, desc)[0])
            pos = desc + (descsz + 3) // 4 * 4
    assert found == [entry]
    assert paddr <= entry < paddr + filesz


def test_concurrent_builds_share_one_result(sources: Path, cache: Path) -> None:
    code = (
        "import json, sys; from pathlib import Path; from qmpgmem.guest.image import guest_image;"
        "p = guest_image('rom', cache=Path(sys.argv[1]));"
        "print(json.dumps([str(p), p.read_bytes().hex()]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len({tuple(r) for r in results}) == 1
    assert len(bytes.fromhex(results[0][1])) == 64 * 1024
    assert leftovers(cache) == []
    assert [p.name for p in cache.iterdir()] == [image.image_sources_digest()]


def test_build_failure_carries_the_compiler_output(sources: Path, cache: Path) -> None:
    with (sources / "mem.c").open("a") as f:
        f.write('\n#error "deliberately broken for a test"\n')
    with pytest.raises(SetupError, match="deliberately broken for a test") as info:
        image.guest_image("rom", cache=cache)
    assert "make" in str(info.value)
    assert list(cache.iterdir()) == []  # no half-built cache entry, no temp dir


def test_missing_tools(
    sources: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SetupError, match="not found on PATH: make, gcc, ld, objcopy"):
        image.guest_image("pvh", cache=cache)


def test_missing_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(image.SOURCE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SetupError, match=image.SOURCE_ENV):
        image.guest_image("rom")


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown micro guest image kind"):
        image.guest_image("iso")  # type: ignore[arg-type]


def test_default_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert image.cache_root() == tmp_path / "qmpgmem" / "microguest"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert image.cache_root() == Path(os.path.expanduser("~/.cache/qmpgmem/microguest"))


def test_read_only_cache_builds_privately(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's L1 sees the host's home read-only: a needed build goes under TMPDIR."""
    import tempfile

    from qmpgmem.guest.image import guest_image

    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/qmpgmem-not-writable")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rom = guest_image("rom")
    assert rom.is_relative_to(tmp_path / "qmpgmem-microguest")
    assert rom.stat().st_size == 64 * 1024
    assert guest_image("rom") == rom
