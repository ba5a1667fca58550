import sys

from ..cli.uq import main  # the entry point lives with the other command lines (hpcquests.cli)

sys.exit(main())
