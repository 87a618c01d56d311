"""`python -m chainette` runs the command line."""

import sys

from chainette.cli import main

sys.exit(main())
