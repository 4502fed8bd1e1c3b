"""Spin's old-SDK `spin_http` module, as coil provides it.

`Request` and `Response` are coil's own classes (see coil._http), so
`from spin_http import Response` in an unmodified Spin app works.
"""
from coil._http import Request, Response

__all__ = ["Request", "Response"]
