"""``python -m sim.graph state-diagram BASE``: write the state diagram generated from the table."""

import sys

from .render import main

sys.exit(main())
