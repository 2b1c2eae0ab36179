"""The guest channel: wire format, the pattern function and the range hash.

Why here and nowhere else: the micro guest (images/microguest) implements the same pattern
and hash in C; both engines and the host-side checks use this module, so a hash the guest
reports can be compared with one the host computes from bytes it read. docs/guest-protocol.md
is the prose form; tests/guest/test_protocol_vectors.py pins the values.

Transport: one text line per message on the guest's first 16550 UART (port 0x3f8).
Host -> guest requests (numbers in hex, no 0x):

    PING                         -> OK PONG
    WRITE <gpa> <size> <seed> <off>  -> OK            (fill with pattern, see pattern_words)
    HASH <gpa> <size>            -> OK <hash16>
    ZERO <gpa> <size>            -> OK ZERO | OK NONZERO <gpa of first non-zero 8-byte word>
    CONVERT <gpa> <size> <P|S>   -> OK RET <rax as signed decimal>   (KVM_HC_MAP_GPA_RANGE)
    EXIT <code>                  -> (no reply; isa-debug-exit at port 0xf4)

Several vCPUs (the BSP, vCPU 0, owns this line and hands jobs to the others):

    SMP <n>                      -> OK SMP <apic of vCPU 0> ... <apic of vCPU n-1>
    @<k> <request>               -> @<apic> <the request's reply>   (run on vCPU k, waited for)
    ARM <k> <request>            -> OK ARMED                         (a job for vCPU k, not run)
    GO                           -> OK GO <jobs>       (all armed jobs at once; waits for all)
    RESULT <k>                   -> @<apic> <reply of vCPU k's job>

Guest -> host, unsolicited, once per boot:

    HELLO microguest <version> sys=<base>-<end> cpl=<n> vendor=<AMD|Intel|other> mbox=<gpa>

``mbox``: the guest also takes requests through a mailbox page at that GPA (guest/mailbox.py).

Errors: ``ERR <text>``. Lines end with ``\\n``; a request is at most 127 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROTOCOL_VERSION = 1
MAX_LINE = 127
WORD = 8  # the pattern and the hash work on little-endian 64-bit words

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
HASH_MUL = 0xFF51AFD7ED558CCD

SERIAL_PORT = 0x3F8
DEBUG_EXIT_PORT = 0xF4
# The micro guest keeps its page tables, stack and code (PVH) in the first SYS_SIZE bytes of
# guest-physical memory; scenario regions start right after it.
SYS_SIZE = 4 << 20

KVM_HC_MAP_GPA_RANGE = 12


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on an array of uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


def pattern_words(seed: int, offset: int, size: int) -> np.ndarray:
    """The pattern of ``seed`` over [offset, offset+size) of a region, as uint64 words.

    Word at region offset ``o`` (a multiple of 8) is ``mix64(seed * GOLDEN + o)`` mod 2**64,
    so any sub-range of a written range has the same words whatever the range was.
    """
    _check_aligned(offset, size)
    base = (seed * GOLDEN + offset) & MASK64
    with np.errstate(over="ignore"):
        idx = np.arange(size // WORD, dtype=np.uint64) * np.uint64(WORD)
        return _mix64(idx + np.uint64(base))


def pattern_bytes(seed: int, offset: int, size: int) -> bytes:
    """Pattern as little-endian bytes (what the guest writes)."""
    return pattern_words(seed, offset, size).astype("<u8").tobytes()


_CHUNK_WORDS = 1 << 21  # 16 MiB per numpy pass keeps host memory flat for big ranges


def hash_words(words: np.ndarray, start_index: int = 0, acc: int = 0) -> int:
    """Accumulate the range hash over ``words``; see :func:`hash_bytes` for the definition."""
    with np.errstate(over="ignore"):
        for lo in range(0, len(words), _CHUNK_WORDS):
            w = words[lo : lo + _CHUNK_WORDS].astype(np.uint64, copy=False)
            i = np.arange(start_index + lo, start_index + lo + len(w), dtype=np.uint64)
            v = (w ^ (i * np.uint64(GOLDEN))) * np.uint64(HASH_MUL)
            v ^= v >> np.uint64(32)
            acc = (acc + int(v.sum(dtype=np.uint64))) & MASK64
    return acc


def finish_hash(acc: int, nwords: int) -> int:
    return int(_mix64(np.array([acc ^ nwords], dtype=np.uint64))[0])


def hash_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The range hash: order-dependent, computable in parallel, identical in the guest.

    ``acc = sum_i f(w_i ^ (i * GOLDEN))`` with ``f(v) = (v * HASH_MUL) ^ ((v * HASH_MUL) >> 32)``,
    all mod 2**64, ``i`` the word index from the range start; the result is
    ``mix64(acc ^ number_of_words)``.
    """
    buf = np.frombuffer(data, dtype="<u8") if not isinstance(data, np.ndarray) else data
    return finish_hash(hash_words(buf), len(buf))


def pattern_hash(seed: int, offset: int, size: int) -> int:
    """Hash of the pattern over a range, computed in bounded memory."""
    _check_aligned(offset, size)
    acc, done = 0, 0
    step = _CHUNK_WORDS * WORD
    while done < size:
        n = min(step, size - done)
        acc = hash_words(pattern_words(seed, offset + done, n), done // WORD, acc)
        done += n
    return finish_hash(acc, size // WORD)


def zero_hash(size: int) -> int:
    """Hash of ``size`` zero bytes."""
    _check_aligned(0, size)
    acc, done, step = 0, 0, _CHUNK_WORDS * WORD
    while done < size:
        n = min(step, size - done)
        acc = hash_words(np.zeros(n // WORD, dtype=np.uint64), done // WORD, acc)
        done += n
    return finish_hash(acc, size // WORD)


def _check_aligned(offset: int, size: int) -> None:
    if offset % WORD or size % WORD:
        raise ValueError(f"offset {offset:#x} and size {size:#x} must be multiples of {WORD}")


# ---- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """What the guest announces once it is ready to take requests."""

    version: int
    sys_base: int
    sys_end: int
    cpl: int
    vendor: str
    #: GPA of the mailbox page the guest offers (guest/mailbox.py); None: serial only
    mbox: int | None = None


def parse_hello(line: str) -> Hello | None:
    """Parse a HELLO line; None when the line is something else (e.g. firmware output)."""
    parts = line.split()
    if len(parts) < 3 or parts[0] != "HELLO" or parts[1] != "microguest":
        return None
    fields = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
    base, _, end = fields.get("sys", "0-0").partition("-")
    return Hello(
        version=int(parts[2]),
        sys_base=int(base, 16),
        sys_end=int(end, 16),
        cpl=int(fields.get("cpl", "-1")),
        vendor=fields.get("vendor", "other"),
        mbox=int(fields["mbox"], 16) if "mbox" in fields else None,
    )


def request_write(gpa: int, size: int, seed: int, offset: int) -> str:
    return f"WRITE {gpa:x} {size:x} {seed & MASK64:x} {offset:x}"


def request_hash(gpa: int, size: int) -> str:
    return f"HASH {gpa:x} {size:x}"


def request_zero(gpa: int, size: int) -> str:
    return f"ZERO {gpa:x} {size:x}"


def request_convert(gpa: int, size: int, private: bool) -> str:
    return f"CONVERT {gpa:x} {size:x} {'P' if private else 'S'}"


def request_exit(code: int) -> str:
    return f"EXIT {code:x}"


def request_on(vcpu: int, line: str) -> str:
    """``line`` run on vCPU ``vcpu`` (the BSP waits for it)."""
    return f"@{vcpu:x} {line}"


def request_arm(vcpu: int, line: str) -> str:
    """``line`` armed for vCPU ``vcpu``; ``GO`` starts every armed job at once."""
    return f"ARM {vcpu:x} {line}"


def split_apic(reply: str) -> tuple[int | None, str]:
    """``"@<apic> rest"`` -> (apic, rest); any other line -> (None, line)."""
    if reply.startswith("@"):
        head, _, rest = reply.partition(" ")
        try:
            return int(head[1:], 16), rest
        except ValueError:
            pass
    return None, reply
