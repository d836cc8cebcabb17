"""Datasets in one record shape (`Problem`), loaded by name with `load_problems`."""

from rftt.data.benchmarks import BENCHMARKS, DATA_ENVIRONMENT_VARIABLE
from rftt.data.records import DataError, Problem, Problems
from rftt.data.registry import DEFAULT_DATASET, PRESETS, DatasetSpec, dataset_names, load_problems

__all__ = [
    "BENCHMARKS",
    "DATA_ENVIRONMENT_VARIABLE",
    "DEFAULT_DATASET",
    "PRESETS",
    "DataError",
    "DatasetSpec",
    "Problem",
    "Problems",
    "dataset_names",
    "load_problems",
]
