"""Training DPA1 energy models: data, losses, the training loop, compiled training and the gradient doctor.

Data come from ASE-readable files or DeePMD-kit systems (:mod:`.deepmd_data`), settings from Python, the
command line or a DeePMD-kit input.json (:mod:`.deepmd_input`); runs restart exactly from their checkpoint
and scale over processes with torch's DistributedDataParallel (:mod:`.distributed`).

Needs torch, ASE (data files, the EMT demo data), tqdm and h5py: ``pip install graphdesc[train]``.
"""

from .batch import Batch, GraphCache, iterate_batches
from .compiled import MODES, TrainingForward, strip_saved_output_detach, trace_training_forward
from .data import Dataset, Frame
from .emt import emt_dataset
from .loss import COMPONENTS, LossConfig, Metrics, label_counts, loss_terms
from .schedule import ExpDecay
from .trainer import CHECKPOINT, History, TrainConfig, TrainingDiverged, evaluate, fit_statistics, match_type_map, train

__all__ = [
    "Frame", "Dataset", "emt_dataset",
    "Batch", "GraphCache", "iterate_batches",
    "LossConfig", "loss_terms", "label_counts", "Metrics", "COMPONENTS",
    "ExpDecay",
    "MODES", "TrainingForward", "trace_training_forward", "strip_saved_output_detach",
    "TrainConfig", "History", "train", "evaluate", "fit_statistics", "match_type_map", "TrainingDiverged",
    "CHECKPOINT",
]
