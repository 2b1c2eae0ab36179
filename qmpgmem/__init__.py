"""qmpgmem: test guest_memfd-backed virtual machines against scenario files.

A scenario (YAML) describes a VM and steps; an engine (QEMU over QMP, or KVM driven
directly) runs it on the built-in micro guest; the runner checks what guest and host
see against what the scenario says they must see.
"""

import logging

__version__ = "0.1.0"
__all__ = ["__version__"]

logging.getLogger("qmpgmem").addHandler(logging.NullHandler())
