"""SOLOv2: the model (:mod:`.model`), its heads (:mod:`.heads`), training targets
(:mod:`.assign`, :mod:`.targets`, :mod:`.prior`), losses (:mod:`.losses`), Matrix NMS
(:mod:`.nms`), post-processing (:mod:`.post`), the zoo's variants (:mod:`.variants`) and the
data-adaptive settings (:mod:`.config`)."""

from instseg.models.solov2.model import GRIDS, SCALE_RANGES, STRIDES, SOLOv2, to_instances
from instseg.models.solov2.post import PostConfig, SOLOv2Raw

__all__ = [
    "GRIDS",
    "SCALE_RANGES",
    "STRIDES",
    "PostConfig",
    "SOLOv2",
    "SOLOv2Raw",
    "to_instances",
]
