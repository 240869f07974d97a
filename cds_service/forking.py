"""State a process forked from this one must not inherit from the parent's threads.

A writer thread's lock, queue and "writing" flag describe the parent's threads; a child
(a prefork server, a worker pool) has none of them, so it must start with fresh ones: a lock
held by the parent's writer at the fork would never be released in the child, and the
parent's queued work is the parent's to do.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def reset_in_forked_child(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in every child forked from this process while ``owner`` lives
    (held weakly: registering keeps nothing alive). Nothing where ``fork`` does not exist."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(owner)

    def after_in_child() -> None:
        alive = ref()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=after_in_child)
