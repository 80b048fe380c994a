"""``python -m gcln_fast.commands ...`` (what ``torchrun -m`` needs) is the ``gcln`` command."""

import sys

from .main import main

sys.exit(main())
