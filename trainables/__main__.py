"""Run one pipeline without Ray:  python -m trainables run CONFIG [key=value ...] [--json FILE]"""

import sys

from trainables.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
