import sys

from chatms.entrypoints.cli import main

sys.exit(main())
