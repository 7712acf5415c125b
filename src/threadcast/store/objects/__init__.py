"""Object storage for results (the stats): a local folder by default, S3 in production."""

from threadcast.store.objects.base import InvalidKey, ObjectNotFound, ObjectStore, check_key
from threadcast.store.objects.factory import open_object_store
from threadcast.store.objects.local import FolderStore

__all__ = ["FolderStore", "InvalidKey", "ObjectNotFound", "ObjectStore", "check_key", "open_object_store"]
