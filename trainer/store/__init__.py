"""The storage seam: one small interface over a local directory and any S3 API.

Import the store from here (``from trainer.store import Store, open_store``); the key
layout it is used with is trainer.contract.layout. ``base`` is the interface, ``local`` a
directory with the same key layout, ``s3`` the S3 implementation and the URL parser, and
``lease`` the run lease built on the store's conditional writes (``liveness``: whether
its holder is known to have exited).
"""

from trainer.store.base import Store
from trainer.store.local import LocalStore
from trainer.store.s3 import STORE_ENV, S3Store, open_store

__all__ = ["STORE_ENV", "LocalStore", "S3Store", "Store", "open_store"]
