"""``python -m analysis.audit``: runs the audit command, :mod:`commands.audit`."""

import sys

if __name__ == "__main__":
    from commands.audit import main

    sys.exit(main())
