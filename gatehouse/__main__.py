"""
C{python -m gatehouse}: the C{gatehouse} command, for when the console
script is not on PATH (for example right after C{pip install} under pyenv).
"""

import sys

from gatehouse.cli import main

sys.exit(main())
