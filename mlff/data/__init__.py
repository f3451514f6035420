"""Structures and (later) datasets: builders, stores, labellers."""

from mlff.data.structures import water_box

__all__ = ["water_box"]
