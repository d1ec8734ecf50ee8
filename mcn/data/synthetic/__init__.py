"""Synthetic SEM micrographs of calcite microcrystals: the suite's embedded default data set.

It stands in for the private lmcDB of the paper (48 SEM images, 1,852 labelled crystals, four
classes): crystals rendered from 3-D habits (rhombohedra for RES; scalenohedra, prisms, plates and
truncated rhombs for PES; lumpy blobs for AA; rough ellipsoids for RA) in random orientation, with
secondary-electron shading, occlusion, a rough matrix and the instrument's noise and artefacts.
`generate` writes the scene format; `default_dataset_dir` caches the default set;
`python -m mcn.data.synthetic --out DIR` is the command line.
"""

import mcn  # noqa: F401  (sets the Keras backend before anything else is imported)
from mcn.data.synthetic.build import GENERATOR_VERSION, default_dataset_dir, generate
from mcn.data.synthetic.config import CLASSES, SHAPES, SceneConfig

__all__ = ["CLASSES", "GENERATOR_VERSION", "SHAPES", "SceneConfig", "default_dataset_dir", "generate"]
