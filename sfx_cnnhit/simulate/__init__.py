"""Physics-based serial-crystallography frames with ground truth (DiffraNet's five classes).

See ``docs/simulator.md`` for the model, its equations and parameter ranges.
"""

from sfx_cnnhit.simulate.config import (
    CLASS_NAMES,
    NAMED_CONFIGS,
    BackgroundConfig,
    BeamConfig,
    ClassConfig,
    CrystalConfig,
    DetectorConfig,
    SimulationConfig,
)
from sfx_cnnhit.simulate.detectors import DETECTORS, DetectorModel, build_detector
from sfx_cnnhit.simulate.output import simulate_to_file
from sfx_cnnhit.simulate.simulator import (
    FrameParams,
    RenderedFrame,
    SimulatedBatch,
    Simulator,
    class_fractions_for,
    frame_seed,
)

__all__ = [
    "CLASS_NAMES",
    "DETECTORS",
    "NAMED_CONFIGS",
    "BackgroundConfig",
    "BeamConfig",
    "ClassConfig",
    "CrystalConfig",
    "DetectorConfig",
    "DetectorModel",
    "FrameParams",
    "RenderedFrame",
    "SimulatedBatch",
    "SimulationConfig",
    "Simulator",
    "build_detector",
    "class_fractions_for",
    "frame_seed",
    "simulate_to_file",
]
