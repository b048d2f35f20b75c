"""``python -m popfuse``: the ``popfuse`` command."""

import sys

from .cli import main

sys.exit(main())
