"""``python -m pyattn.cli``: the ``pyattn`` command."""

import sys

from pyattn.cli import main

sys.exit(main())
