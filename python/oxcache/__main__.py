"""`python -m oxcache`: the command-line tool (see `oxcache.cli`)."""

import sys

from oxcache.cli import main

sys.exit(main())
