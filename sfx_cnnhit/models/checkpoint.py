"""Checkpoints: one file holds everything inference needs, plus the training state for resuming.

A checkpoint is a ``torch.save`` dict of plain types and tensors (loaded with ``weights_only=True``):

- ``format``: :data:`CHECKPOINT_FORMAT`;
- ``spec``: the :class:`~sfx_cnnhit.models.zoo.ModelSpec` as a dict (architecture name and keyword
  arguments, task, class names, preprocessing, Grad-CAM layer);
- ``state_dict``: the weights;
- ``recipe``: how the training data was made (free-form: simulator seeds, files, augmentation);
- ``metrics``: evaluation results (free-form);
- ``code``: ``sfx_cnnhit.__version__``, the git commit and whether the tree was dirty;
- ``created``: ISO 8601 UTC time;
- ``training``: optimizer, scheduler, epoch, RNG states and history (absent in shipped weights).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import sfx_cnnhit
from sfx_cnnhit.errors import InputError, NotAvailableError
from sfx_cnnhit.io.atomic import atomic_output
from sfx_cnnhit.models.calibration import FALLBACK_THRESHOLD as FALLBACK_THRESHOLD  # re-exported
from sfx_cnnhit.models.calibration import frame_thresholds
from sfx_cnnhit.models.hitnet import fuse_conv_bn_
from sfx_cnnhit.models.zoo import ModelSpec, build_model

CHECKPOINT_FORMAT = 1
#: Shipped weights live in ``sfx_cnnhit/weights/<name>.pt``.
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: The shipped model every command uses unless told otherwise.
DEFAULT_MODEL = "spotnet_hitmiss"


def code_version() -> dict[str, Any]:
    """``{"version", "git_commit", "git_dirty"}`` of the running code (commit None outside a git tree)."""
    root = Path(sfx_cnnhit.__file__).resolve().parent
    info: dict[str, Any] = {"version": sfx_cnnhit.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def plain(value: Any) -> Any:
    """``value`` as JSON-compatible Python types (numpy scalars and arrays, tuples, paths converted)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray | torch.Tensor):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")

    return json.loads(json.dumps(value, default=default))


@dataclass
class Checkpoint:
    """A loaded checkpoint (see the module docstring for the fields)."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    recipe: dict[str, Any]
    metrics: dict[str, Any]
    code: dict[str, Any]
    created: str
    training: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-compatible (for provenance files and ``info``)."""
        n_params = sum(int(t.numel()) for t in self.state_dict.values() if t.is_floating_point())
        return {
            "spec": self.spec.to_dict(),
            "recipe": self.recipe,
            "metrics": self.metrics,
            "code": self.code,
            "created": self.created,
            "parameters": n_params,
            "epoch": None if self.training is None else self.training.get("epoch"),
        }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    spec: ModelSpec,
    *,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (``<path>.inprogress``, fsynced, then renamed).

    Args:
        model: the network (its ``state_dict`` is saved on the CPU).
        spec: the model's spec.
        recipe: training-data recipe (free-form, JSON-compatible after :func:`plain`).
        metrics: evaluation metrics (free-form).
        training: optimizer/scheduler/RNG state for resuming (tensors allowed); None for shipped weights.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "recipe": plain(recipe or {}),
        "metrics": plain(metrics or {}),
        "code": code_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if training is not None:
        payload["training"] = training
    with atomic_output(path) as tmp, tmp.open("wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())  # on the disk before the rename: a crash leaves the old file or the new one
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises:
        InputError: the file is missing, not a checkpoint, or of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: not a readable sfx-cnnhit checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise InputError(f"{path}: not an sfx-cnnhit checkpoint (no spec/state_dict)")
    if payload.get("format", 0) > CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {payload['format']} is newer than this sfx-cnnhit")
    return Checkpoint(
        spec=ModelSpec.from_dict(payload["spec"]),
        state_dict=payload["state_dict"],
        recipe=payload.get("recipe", {}),
        metrics=payload.get("metrics", {}),
        code=payload.get("code", {}),
        created=payload.get("created", ""),
        training=payload.get("training"),
    )


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package (``sfx_cnnhit/weights/*.pt``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def resolve_model_path(path_or_name: str | os.PathLike[str] | None = None) -> Path:
    """A checkpoint path from a file path, a shipped model name, or None (the default model)."""
    if path_or_name is None:
        path_or_name = DEFAULT_MODEL
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = WEIGHTS_DIR / f"{path_or_name}.pt"
    if path.suffix == "" and shipped.is_file():
        return shipped
    if path.suffix or os.sep in str(path_or_name):
        raise InputError(f"{path}: checkpoint not found")
    known = ", ".join(shipped_models()) or "none"
    raise NotAvailableError(
        f"no shipped model {str(path_or_name)!r} (shipped: {known}); train one with `sfx-cnnhit train` "
        "and pass its checkpoint path"
    )


def decision_threshold(metrics: dict[str, Any], bin_factor: int | None = None) -> float:
    """The hit threshold on P(hit) a checkpoint's ``metrics`` record from its calibration on the
    validation set (:mod:`sfx_cnnhit.models.calibration`), else :data:`FALLBACK_THRESHOLD`; for frames
    of ``bin_factor`` 1 (not binned into the input) the unbinned frames' own threshold where one was
    fitted (:func:`~sfx_cnnhit.models.calibration.frame_thresholds`)."""
    return float(frame_thresholds(metrics, [bin_factor or 0])[0])


def model_threshold(path_or_name: str | os.PathLike[str] | None = None, bin_factor: int | None = None) -> float:
    """:func:`decision_threshold` of a checkpoint file or shipped model name (None: the default)."""
    return decision_threshold(load_checkpoint(resolve_model_path(path_or_name)).metrics, bin_factor)


def model_from_checkpoint(
    ckpt: Checkpoint, *, source: str | os.PathLike[str] = "checkpoint", device: str | torch.device = "cpu",
    optimize: bool = False,
) -> nn.Module:
    """The network of a loaded checkpoint, in eval mode (see :func:`load_model`; ``source`` names it in errors)."""
    model = build_model(ckpt.spec)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as err:
        raise InputError(f"{source}: weights do not match architecture {ckpt.spec.name!r}: {err}") from None
    model.eval()
    if optimize:
        fuse_conv_bn_(model)
        model.to(memory_format=torch.channels_last)
    return model.to(device)


def load_model(
    path_or_name: str | os.PathLike[str] | None = None, *, device: str | torch.device = "cpu", optimize: bool = False
) -> tuple[nn.Module, ModelSpec]:
    """A ready model in eval mode and its spec.

    Args:
        path_or_name: a checkpoint file, a shipped model name, or None for :data:`DEFAULT_MODEL`.
        device: where to put the model.
        optimize: fold batch norm into the convolutions and use channels_last (faster inference, same
            results up to float rounding); leave False where bit-identical outputs matter.
    """
    path = resolve_model_path(path_or_name)
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, source=path, device=device, optimize=optimize), ckpt.spec
