import sys

from steering_adapter.cli.main import main

sys.exit(main())
