"""Locate the trained models shipped with the package.

Shipped models are package data under ``jec_coffea/shipped_models/`` with fixed names
(DESIGN.md, "Real components"): ``deepsets.onnx`` (Deep Sets on PF candidates and secondary
vertices), ``particlenet.onnx`` and ``mlp_nanoaod.onnx`` (jet-level inputs that plain NanoAOD
has). Each ONNX file carries its feature list, preprocessing and validity range in its
metadata, so locating the file is all an analysis needs;
:meth:`jec_coffea.corrector.DNNJetCorrector.from_shipped` builds a corrector from the name.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from .errors import ConfigError, InputFileError, closest

__all__ = ["SHIPPED_MODELS", "shipped_dir", "shipped_models", "shipped_path"]

log = logging.getLogger(__name__)

SHIPPED_MODELS: dict[str, str] = {
    "deepsets": "Deep Sets (particle-flow network) on charged and neutral PF candidates and SVs",
    "particlenet": "ParticleNet (EdgeConv on the constituent point cloud)",
    "mlp_nanoaod": "dense network on the jet-level inputs that plain NanoAOD provides",
}
"""Fixed names of the models the package may ship (file ``<name>.onnx``) and what each is."""


def shipped_dir() -> Path:
    """Folder of the shipped models inside the installed package (may not exist yet)."""
    return Path(str(resources.files("jec_coffea") / "shipped_models"))


def shipped_models() -> list[str]:
    """Names of :data:`SHIPPED_MODELS` whose ONNX file is installed, in table order."""
    folder = shipped_dir()
    return [name for name in SHIPPED_MODELS if (folder / f"{name}.onnx").is_file()]


def shipped_path(name: str) -> Path:
    """Path of the shipped model ``name`` (``"deepsets"`` or ``"deepsets.onnx"``).

    Raises
    ------
    ConfigError
        ``name`` is not one of the fixed names of :data:`SHIPPED_MODELS` (lists them and the
        nearest match).
    InputFileError
        The name is known but its file is not installed; the message lists the shipped
        models that are present.
    """
    key = name.removesuffix(".onnx")
    if key not in SHIPPED_MODELS:
        hint = closest(key, SHIPPED_MODELS)
        msg = f"unknown shipped model {name!r}"
        msg += f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
        msg += f" (shipped model names: {', '.join(SHIPPED_MODELS)})"
        raise ConfigError(msg)
    path = shipped_dir() / f"{key}.onnx"
    if not path.is_file():
        present = shipped_models()
        cause = (
            f"shipped model {key!r} is not installed in this jec-coffea; installed shipped "
            f"models: {', '.join(present) if present else 'none'}; use "
            "DNNJetCorrector.from_onnx(path) for a model file of your own"
        )
        raise InputFileError(str(path), cause)
    log.debug("shipped model %s at %s", key, path)
    return path
