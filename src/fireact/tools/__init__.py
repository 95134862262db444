"""Tools the agent acts with (recorded_search, serpapi, wikipedia), their call cache and observation noise.

Build them from the Hydra groups conf/tool and conf/noise with hydra.utils.instantiate.
"""

from fireact.tools.base import NO_RESULT, Tool, ToolError

__all__ = ["NO_RESULT", "Tool", "ToolError"]
