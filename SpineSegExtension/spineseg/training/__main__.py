"""``python -m spineseg.training TASK ...`` (also under torchrun) is ``spineseg train TASK ...``."""

from .command import main

raise SystemExit(main())
