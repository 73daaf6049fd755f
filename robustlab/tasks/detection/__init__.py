"""Object detection as a task plug-in: procedural multi-shape scenes and COCO-format folders, a small
one-stage detector trained here (torchvision's detectors where torchvision imports), detection
objectives (vanishing, fabrication, mislabelling, box shift, untargeted) with exact per-image success,
mAP and recall; attacks, training and checks are the shared engine's."""
from .boxes import Detections, box_iou, decode, detections_of, nms, truth
from .data import DetectionDataset, coco_folder, synthetic_scenes
from .losses import detection_loss
from .metrics import detection_metrics, mean_average_precision, recall_at
from .model import TinyDetector
from .objectives import BoxShift, Fabrication, Mislabel, Untargeted, Vanishing, relabelled, shifted

__all__ = ["BoxShift", "DetectionDataset", "Detections", "Fabrication", "Mislabel", "TinyDetector", "Untargeted",
           "Vanishing", "box_iou", "coco_folder", "decode", "detection_loss", "detection_metrics", "detections_of",
           "mean_average_precision", "nms", "recall_at", "relabelled", "shifted", "synthetic_scenes", "truth"]
