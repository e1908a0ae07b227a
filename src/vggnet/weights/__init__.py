"""Weights on disk: the project's own format, importers for every public source, safe loading.

- format.py: the project format (safetensors + JSON metadata), `Preprocessing`, `WeightsMeta`,
  features-only models, building a model from tensors.
- torchvision.py, timm.py, keras.py, caffe.py: one module per public source, each turning its
  files into torchvision-named tensors (the conventions are in PAPER.md, "Public implementations").
- infer.py: the configuration (Table 1 column, BN, width, classes, head) read from the tensors.
- sources.py: recognising a file's source, `read_weights` (a local file), `import_weights`, `convert`.
- resolve.py: the one resolver of a weights argument (file, run folder, catalogue name, URL) and `load_weights`.
- compression.py: factorised (low-rank) FC layers and int8-stored weights, as files hold them.
- integrity.py: content hashes (sha256 of tensors, of files), recorded on write and checked on read.

Nothing here ever unpickles arbitrary objects.
"""

from .caffe import CAFFE_V1_TYPES, CaffeLayer, caffe_state, read_caffemodel
from .compression import LowRankLinear, has_low_rank, stored_bytes
from .format import (
    CAFFE_MEAN_BGR,
    FORMAT_KEY,
    HASH_KEY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NoClassifier,
    Preprocessing,
    WeightsMeta,
    aligned,
    has_classifier,
    load_state_checked,
    read_meta,
    save_weights,
)
from .infer import infer_config
from .integrity import IntegrityError, digest, file_sha256
from .keras import keras_state, read_keras_h5
from .resolve import cached_weights, load_weights, resolve_weights
from .sources import (
    SOURCE_PREPROCESSING,
    SOURCES,
    TORCH_SUFFIXES,
    convert,
    detect_source,
    import_weights,
    read_weights,
    weights_meta,
)
from .timm import timm_state
from .torchvision import read_torch_state

__all__ = [
    "CAFFE_MEAN_BGR",
    "CAFFE_V1_TYPES",
    "CaffeLayer",
    "FORMAT_KEY",
    "HASH_KEY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IntegrityError",
    "LowRankLinear",
    "NoClassifier",
    "Preprocessing",
    "SOURCES",
    "SOURCE_PREPROCESSING",
    "TORCH_SUFFIXES",
    "WeightsMeta",
    "aligned",
    "caffe_state",
    "cached_weights",
    "convert",
    "detect_source",
    "digest",
    "file_sha256",
    "has_classifier",
    "has_low_rank",
    "import_weights",
    "infer_config",
    "keras_state",
    "load_state_checked",
    "load_weights",
    "read_weights",
    "read_caffemodel",
    "read_keras_h5",
    "read_meta",
    "read_torch_state",
    "resolve_weights",
    "save_weights",
    "stored_bytes",
    "timm_state",
    "weights_meta",
]
