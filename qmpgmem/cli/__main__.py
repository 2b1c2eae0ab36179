"""``python -m qmpgmem.cli``: the same as the ``qmpgmem`` console script."""

from qmpgmem.cli.entry import main

main()
