"""PASCAL VOC: its 21 classes (background and 20 objects)."""

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def default_class_names(num_classes: int) -> list[str]:
    """VOC's names for 21 classes; otherwise 'background', 'class 1', 'class 2', ..."""
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return ["background", *(f"class {i}" for i in range(1, num_classes))]
