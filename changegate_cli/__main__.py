"""`python -m changegate_cli ...`: the same as the `changegate` console script.

Absolute import on purpose: this file is also the entry point of the single-file
zipapp (docs/cli.md), where it sits beside the package, not inside it."""

import sys

from changegate_cli.main import main

sys.exit(main())
