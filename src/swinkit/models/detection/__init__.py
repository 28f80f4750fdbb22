"""Instance segmentation and object detection: Mask R-CNN / Faster R-CNN + FPN with a Swin backbone."""
