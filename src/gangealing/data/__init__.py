"""Data: reading images, the original's preprocessing, embedded datasets, prepared (cached) datasets."""
from .dataset import ImageDataset, PreparedDataset, default_cache_dir, load_prepared, prepare_dataset
from .embedded import EMBEDDED_NAMES, EmbeddedData, MissingDatasetError, is_embedded_name, load_embedded
from .images import (IMAGE_SUFFIXES, SkippedImage, UnreadableImage, iter_images, list_images, read_image,
                     save_image, to_tensor, to_uint8)
from .preprocess import PAD_MODES, PreprocessTransform, preprocess, preprocess_transform

__all__ = [
    "EMBEDDED_NAMES", "EmbeddedData", "IMAGE_SUFFIXES", "ImageDataset", "MissingDatasetError", "PAD_MODES",
    "PreparedDataset", "PreprocessTransform", "SkippedImage", "UnreadableImage", "default_cache_dir",
    "is_embedded_name", "iter_images", "list_images", "load_embedded", "load_prepared", "prepare_dataset",
    "preprocess", "preprocess_transform", "read_image", "save_image", "to_tensor", "to_uint8",
]
