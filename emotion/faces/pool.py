"""Objects lent to one caller at a time: what a face finder runs that is not safe to share.

OpenCV's Haar cascade and BlazeFace's LiteRT interpreter both hold state while they run, so
each concurrent caller (the webcam's threads, the page's visitors, the API's requests) borrows
one of its own; both are costly to make (parsing a cascade's XML, planning an interpreter), so
they are kept for reuse rather than made per call. A key tells apart objects that cannot stand
in for one another (an interpreter planned for one input shape).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class LendingPool(Generic[K, T]):
    """Objects made by `make(key)` when none is free for that key, lent by `borrow`; thread-safe.

    max_keys: free objects are kept for this many keys, those used last (None: every key).
    """

    def __init__(self, make: Callable[[K], T], max_keys: int | None = None):
        self._make = make
        self._max_keys = max_keys
        self._free: OrderedDict[K, list[T]] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, key: K = None, keep: bool = True) -> Iterator[T]:
        """A free object for `key`, or a new one, given back afterwards; keep=False: one made
        for this call alone and dropped (an input too large to keep an interpreter for)."""
        item = self._take(key) if keep else None
        if item is None:
            item = self._make(key)
        try:
            yield item
        finally:
            if keep:
                with self._lock:
                    self._free.setdefault(key, []).append(item)

    def _take(self, key: K) -> T | None:
        """A free object for this key, or None; forgets the keys used longest ago."""
        with self._lock:
            free = self._free.setdefault(key, [])
            self._free.move_to_end(key)
            while self._max_keys is not None and len(self._free) > self._max_keys:
                self._free.popitem(last=False)
            return free.pop() if free else None
