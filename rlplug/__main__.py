"""``python -m rlplug``: the ``rlplug`` command (e.g. under ``accelerate launch -m rlplug train``)."""

import sys

from rlplug.cli import main

sys.exit(main())
