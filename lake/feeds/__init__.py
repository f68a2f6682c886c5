"""The lake's feeds: one class per kind (CDC, clickstream, ...), chosen by the ``feed`` of the contract.

Ask a contract's feed object (:func:`feed_of`) for anything that depends on its kind. A new kind is one module
in this package holding one subclass of :class:`Feed` with a ``kind``: the package imports every module in it,
and the subclass registers itself, so nothing else changes.
"""

import importlib
import pkgutil

from lake.feeds.base import FEED_KINDS, Feed, SilverTable, feed_of, pending_steps

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FEED_KINDS", "Feed", "SilverTable", "feed_of", "pending_steps"]
