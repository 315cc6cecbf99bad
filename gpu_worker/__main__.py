"""``python -m gpu_worker``: run the worker daemon."""

import sys

from gpu_worker.daemon import main

sys.exit(main())
