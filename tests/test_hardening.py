"""The bugs the peer study found in every other FastAPI cache, one test per bug, each named
after the bug it prevents (`../shared/research/peer-study.md` section 4; docs/peers.md maps
each to the peers' probes). Parametrized over real Redis and memory.
"""

from __future__ import annotations
