"""``python -m devtools.funchost``: serve the app locally, like ``func start`` (see the package doc)."""

import sys

from devtools.funchost import main

sys.exit(main())
