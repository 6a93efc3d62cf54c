"""``python -m jaxformer.cli``: the same as the ``jaxformer`` console script."""

import sys

from jaxformer.cli import main

sys.exit(main())
