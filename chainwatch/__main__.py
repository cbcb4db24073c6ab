import sys

from chainwatch.cli.parser import main

sys.exit(main())
