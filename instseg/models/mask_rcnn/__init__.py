"""Mask R-CNN on torchvision's detection components: the model (:mod:`.model`), its
crowd-aware RPN / RoI heads (:mod:`.crowd`), the zoo's variants (:mod:`.variants`) and
torchvision's own layout (:mod:`.torchvision_compat`)."""

from instseg.models.mask_rcnn.model import MaskPostConfig, MaskRCNN, MaskRCNNRaw, paste_detections

__all__ = ["MaskPostConfig", "MaskRCNN", "MaskRCNNRaw", "paste_detections"]
