"""The features API's own answers for what does not exist (404 naming what does), on the
service's one error format (:mod:`cimtwin.api.errors`)."""

from __future__ import annotations

from cimtwin.api.errors import not_found
from cimtwin.api.inputs import shown
from cimtwin.errors import NotFoundError
from cimtwin.spatial.catalogue import COLLECTIONS, Layer, get_collection


def unknown_collection(collection_id: str) -> NotFoundError:
    return not_found(
        f"collection {collection_id!r} does not exist; see /collections "
        f"({', '.join(x.id for x in COLLECTIONS)})"
    )


def unknown_feature(layer: Layer, feature_id: str, integer_ids: bool = False) -> NotFoundError:
    more = " (ids of this collection are integers)" if integer_ids else ""
    return not_found(f"feature {shown(feature_id)} does not exist in {layer.id!r}{more}")


def layer_of(collection_id: str) -> Layer:
    """The catalogue layer of a collection id (the allow-list), or 404."""
    layer = get_collection(collection_id)
    if layer is None:
        raise unknown_collection(collection_id)
    return layer
