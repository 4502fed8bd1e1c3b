"""coil: the Python side of the coil runtime.

What a function may import from here:
  Request, Response   the Spin (old SDK) handler model; `spin_http` exports the same classes.
"""
from coil._http import Request, Response

__all__ = ["Request", "Response"]
