import sys

from tensorgpt.cli import main

sys.exit(main())
