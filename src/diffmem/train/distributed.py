"""The distributed helpers now live in the bottom layer, `diffmem.utils.distributed`; re-exported here."""

from diffmem.utils.distributed import (World, barrier, broadcast_object, check_batch, gather_in_order, init_world,
                                       local_slice)

__all__ = ["World", "init_world", "barrier", "broadcast_object", "local_slice", "check_batch", "gather_in_order"]
