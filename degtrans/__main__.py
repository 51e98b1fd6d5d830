"""``python -m degtrans``: the command line, as the ``degtrans`` script runs it (and as a Ray job runs it:
``degtrans submit`` ships the package and makes this the job's entrypoint)."""

import sys

from degtrans.cli import main

if __name__ == "__main__":
    sys.exit(main())
