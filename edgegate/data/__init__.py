"""Calibration and evaluation sources: .npz/.npy, image folders with preprocessing, synthetic."""

from edgegate.data.sources import Dataset, ModelData, TensorSpec, prepare_data

__all__ = ["Dataset", "ModelData", "TensorSpec", "prepare_data"]
