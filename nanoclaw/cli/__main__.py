"""`python -m nanoclaw.cli`."""

import sys

from nanoclaw.cli.main import main

sys.exit(main())
