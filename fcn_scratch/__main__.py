import sys

from fcn_scratch.cli import main

sys.exit(main())
