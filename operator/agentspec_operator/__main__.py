"""``python -m agentspec_operator``: the same as ``agentspec operator``."""

import sys

from .main import main

sys.exit(main())
