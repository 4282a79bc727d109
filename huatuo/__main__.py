import sys

from huatuo.cli import main

sys.exit(main())
