"""``python -m onprem`` is the ``onprem`` command."""

import sys

from onprem.cli import main

sys.exit(main())
