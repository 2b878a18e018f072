"""``python -m robustct`` is the same as the ``robustct`` command."""
import sys

from .cli import main

sys.exit(main())
