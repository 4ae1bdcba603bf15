"""Datasets in memory, splits and the pool state. See datasets.py for the registry."""
from data.base import DataUnavailable, Dataset, DatasetSpec
from data.datasets import DATASETS, load_dataset
from data.images import Images
from data.pool import PoolState
from data.splits import Splits, initial_positions, split_train, stratified_draw

__all__ = ["DATASETS", "DataUnavailable", "Dataset", "DatasetSpec", "Images", "PoolState", "Splits",
           "initial_positions", "load_dataset", "split_train", "stratified_draw"]
