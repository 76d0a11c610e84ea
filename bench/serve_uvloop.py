"""`python -m collab` on uvloop's event loop, for measuring it (bench/load.py --loops, bench/profile.py --loop).

    .venv/bin/python bench/serve_uvloop.py serve --db /tmp/x.db ...   # the same arguments as `collab`

It installs uvloop's event loop policy, then runs collab.cli.main unchanged:
`asyncio.run` in the CLI then makes a uvloop loop. The server itself has no
setting for this yet; uvloop is not one of collab's dependencies
(`pip install uvloop` to use this).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402

from collab.cli import main  # noqa: E402

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main()
