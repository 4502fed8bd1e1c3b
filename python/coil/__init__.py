"""coil: the Python side of the coil runtime.

What a function may import from here:
  Request, Response   the Spin (old SDK) handler model; `spin_http` exports the same classes.
  before_snapshot     decorator: run this in the template, after the code is imported and
                      before instances are forked from it (warm caches, load models).
  after_restore       decorator: run this in every new instance, before it serves (reopen
                      sockets and connections made at import, reseed what was seeded then).

Instances are forks of one template: whatever the import created is shared by all of
them. Python's `random` is reseeded in each instance, and `os.urandom`/`uuid.uuid4`/
`secrets` are always fresh; a generator seeded at import by other means (numpy's
global RandomState, a seeded `random.Random(...)` of your own) is not, nor is a socket
or a database connection opened at import: reopen those in an `after_restore` hook.
"""
from coil._http import Request, Response

# Hooks, in registration order. Filled at import of the function's code.
_before_snapshot = []
_after_restore = []


def before_snapshot(fn):
    """Register `fn()` to run once in the template, before any instance is forked."""
    if not callable(fn):
        raise TypeError("before_snapshot expects a callable")
    _before_snapshot.append(fn)
    return fn


def after_restore(fn):
    """Register `fn()` to run in every new instance, before it serves a request."""
    if not callable(fn):
        raise TypeError("after_restore expects a callable")
    _after_restore.append(fn)
    return fn


__all__ = ["Request", "Response", "before_snapshot", "after_restore"]
