"""``python -m spineseg.training TASK ...`` (also under torchrun) is ``spineseg train TASK ...``."""

import sys

from ..cli import main

raise SystemExit(main(["train", *sys.argv[1:]]))
