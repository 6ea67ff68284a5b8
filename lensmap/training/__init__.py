"""Selective SFT: fine-tune only the layers lensmap recommends, and compare with baselines."""

from lensmap.training.delta import load_delta, save_delta, snapshot
from lensmap.training.items import SFTItem, load_items, sample_items_path
from lensmap.training.prompts import Example, build_example, build_examples
from lensmap.training.selection import TrainableSet, from_layers, from_modules, from_recommendation, full, random_like
from lensmap.training.trainer import SFTSettings, TrainResult, train_sft

__all__ = [
    "Example", "SFTItem", "SFTSettings", "TrainResult", "TrainableSet", "build_example", "build_examples",
    "from_layers", "from_modules", "from_recommendation", "full", "load_delta", "load_items", "random_like",
    "sample_items_path", "save_delta", "snapshot", "train_sft",
]
