import sys

from .scan import main

sys.exit(main())
