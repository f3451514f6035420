"""Data: structures, the HDF5 dataset store, import/export, validation and DFT labelling."""

from mlff.data.io import KeyMap, read_structures, write_db, write_extxyz
from mlff.data.label import LabelSummary, label
from mlff.data.records import content_hash, geometry_hash, make_record, validate
from mlff.data.store import Dataset
from mlff.data.structures import water_box

__all__ = ["Dataset", "KeyMap", "LabelSummary", "content_hash", "geometry_hash", "label", "make_record",
           "read_structures", "validate", "water_box", "write_db", "write_extxyz"]
