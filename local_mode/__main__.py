import sys

from local_mode.cli import main

sys.exit(main())
