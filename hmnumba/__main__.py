import sys

from hmnumba.cli import main

sys.exit(main())
