"""Active learning to a reference level on a label budget: explore (biased MD with a committee) -> select
(calibrated spread in a trust window, farthest points in MACE descriptor space, per xi bin) -> label (any
labeller, resumable) -> calibrate -> retrain (fine-tune the committee) -> report, until a stop criterion."""

from mlff.learn.config import LearnConfig, load_learn_config
from mlff.learn.loop import run_learning

__all__ = ["LearnConfig", "load_learn_config", "run_learning"]
