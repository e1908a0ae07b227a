"""Images in, tensors out: datasets, the paper's training transforms and the training-set statistics.

- `datasets`: image folders, CIFAR python batches, the built-in digits; items are (RGB PIL image or None, label)
- `fetch`: datasets by name (imagenette, cifar10, ...), downloaded once and unpacked safely
- `transforms`: section 3.1's rescale to S, random crop, flip, PCA colour shift, mean subtraction, seeded per image
- `stats`: the mean RGB and RGB-covariance eigen-decomposition of a training set
- `batched`: the same transforms on batches of JPEGs decoded with torch, on the CPU or a GPU (`--decode`)
- `resample`: Pillow's bilinear resize in torch, bit for bit, for the batched path
"""

from .batched import BatchedImages, batch_loader, decode_device
from .datasets import (
    CIFAR_LAYOUTS,
    IMAGE_EXTENSIONS,
    Cifar,
    Digits,
    ImageFolder,
    find_cifar,
    item_name,
    open_dataset,
    open_image,
    read_cifar_batch,
    scan_image_folder,
    to_rgb,
)
from .fetch import dataset_folder, extract_tar, fetch_dataset
from .stats import RGBStats, compute_stats
from .transforms import (
    Draw,
    EvalTransform,
    Item,
    TensorItems,
    TrainTransform,
    Transformed,
    check_rescale,
    collate_skipping,
    open_rescalable,
    rescale,
    rescaled_crop,
    rescaled_size,
    to_tensor_minus_mean,
    to_uint8_tensor,
)

__all__ = [
    "CIFAR_LAYOUTS",
    "IMAGE_EXTENSIONS",
    "BatchedImages",
    "Cifar",
    "Digits",
    "Draw",
    "EvalTransform",
    "ImageFolder",
    "Item",
    "RGBStats",
    "TensorItems",
    "TrainTransform",
    "Transformed",
    "check_rescale",
    "open_rescalable",
    "batch_loader",
    "collate_skipping",
    "compute_stats",
    "decode_device",
    "find_cifar",
    "item_name",
    "open_dataset",
    "dataset_folder",
    "extract_tar",
    "fetch_dataset",
    "open_image",
    "read_cifar_batch",
    "rescale",
    "rescaled_crop",
    "rescaled_size",
    "scan_image_folder",
    "to_rgb",
    "to_tensor_minus_mean",
    "to_uint8_tensor",
]
