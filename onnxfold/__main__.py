"""``python -m onnxfold``: the command line (same as the ``onnxfold`` script)."""

import sys

from onnxfold.cli.commands import main

sys.exit(main())
