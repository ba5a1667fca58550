import sys

from ..cli.trajectory import main  # the entry point lives with the other command lines (hpcquests.cli)

sys.exit(main())
