"""Whole-image segmentation of SEM micrographs into crystal instances: the paper's preprocessing
chain, Segment Anything (tiled, fine-tunable) and a classical watershed segmenter, with segmentation
metrics. Every segmenter returns a uint16 instance label image (0 = matrix)."""

import mcn  # noqa: F401  (sets the Keras backend before anything else is imported)
from mcn.segment.classical import ClassicalSegmenter
from mcn.segment.metrics import (match_instances, merges_and_splits, pool_metrics, segmentation_metrics,
                                 size_agreement)
from mcn.segment.postprocess import MaskCandidate, border_flags, filter_labels, masks_to_labels
from mcn.segment.databar import find_data_bar, segment_without_data_bar
from mcn.segment.factory import make_segmenter
from mcn.segment.preprocess import Preprocessor, snr_db

__all__ = ["ClassicalSegmenter", "MaskCandidate", "Preprocessor", "border_flags", "filter_labels",
           "find_data_bar", "make_segmenter", "masks_to_labels", "match_instances", "merges_and_splits",
           "pool_metrics", "segment_without_data_bar", "segmentation_metrics", "size_agreement", "snr_db"]
