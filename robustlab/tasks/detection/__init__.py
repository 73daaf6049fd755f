"""Object detection as a task plug-in: procedural multi-shape scenes and COCO-format folders, a small
one-stage detector trained here, detection objectives (vanishing, fabrication, mislabelling, box
shift, untargeted), mAP through torchmetrics; attacks, training and checks are the shared engine's."""
from .boxes import Detections, box_iou, decode, detections_of, nms, truth
from .model import TinyDetector

__all__ = ["Detections", "TinyDetector", "box_iou", "decode", "detections_of", "nms", "truth"]
