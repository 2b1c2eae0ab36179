"""``python -m qmpgmem.engines.kvm.contract [NAME...]``: run the checks, one line each."""

from qmpgmem.engines.kvm.contract.runner import main

raise SystemExit(main())
