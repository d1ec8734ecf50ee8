"""Whole-image segmentation of SEM micrographs into crystal instances: the paper's preprocessing
chain, Segment Anything (tiled, fine-tunable) and a classical watershed segmenter, with segmentation
metrics. Every segmenter returns a uint16 instance label image (0 = matrix)."""

import mcn  # noqa: F401  (sets the Keras backend before anything else is imported)
from mcn.segment.classical import ClassicalSegmenter
from mcn.segment.metrics import match_instances, pool_metrics, segmentation_metrics
from mcn.segment.postprocess import MaskCandidate, border_flags, filter_labels, masks_to_labels
from mcn.segment.preprocess import Preprocessor, detect_databar, snr_db

__all__ = ["ClassicalSegmenter", "MaskCandidate", "Preprocessor", "border_flags", "detect_databar",
           "filter_labels", "masks_to_labels", "match_instances", "pool_metrics", "segmentation_metrics",
           "snr_db"]
