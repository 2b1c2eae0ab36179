"""``python -m qmpgmem.cli``: the same as the ``qmpgmem`` console script."""

from qmpgmem.cli.main import main

main()
