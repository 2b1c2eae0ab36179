"""``python -m qmpgmem``: the same command line as the ``qmpgmem`` script (the lab runs
qmpgmem inside L1 this way, with the interpreter of the venv it was started from)."""

from qmpgmem.cli import main

main()
