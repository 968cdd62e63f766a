import sys

from igm_cli.cli import main

sys.exit(main())
