"""Convert released checkpoints into this toolkit's pickle-free weights format.

Three kinds of release are recognised from their tensor names:

- the XLS-R-LCNN whole-model pickle (below);
- SSL_Anti-spoofing's XLS-R-AASIST ``LA_model.pth`` / ``DF_model.pth`` (docs/systems/xlsr_aasist.md): plain
  state dicts with fairseq wav2vec 2.0 names under ``ssl_model.model.`` (``module.`` prefixed in DF).
  The SSL tensors are renamed to Hugging Face ``Wav2Vec2Model`` names (`fairseq_wav2vec2_to_hf`)
  and stored under ``ssl.``, the back end (`models.xlsr_aasist`) under ``backend.``; fairseq's
  pre-training-only tensors (quantiser, ``project_q``, ``final_proj``, ``mask_emb``) are dropped;
- clovaai's AASIST / AASIST-L state dicts (``AASIST.pth``, ``AASIST-L.pth``; docs/systems/aasist.md);
- the Nes2Net-X and XLSR-Mamba releases (docs/systems/nes2net_x.md, docs/systems/xlsr_mamba.md): the same
  fairseq names under ``ssl_model.model.`` plus their back ends (``Nested_Res2Net_TDNN.*``; ``LL``,
  ``first_bn``, ``conformer.*``), as ``.pth`` state dicts or, for XLSR-Mamba on the Hugging Face hub
  (``AustinXiao/XLSR-Mamba-LA``, ``-DF``), ``.safetensors`` files. Their back ends become `models.nes2net_x`
  (prefix dropped) and `models.xlsr_mamba` (``conformer.`` -> ``mixer.``).

All these releases use class 1 = bona fide; their output layer's two rows (weight and bias)
are swapped so that logit 0 is bona fide, as everywhere in this toolkit.

The XLS-R-LCNN release (``models_0.63/try/anti-spoofing_feat_model.pt``) is a whole-model pickle
(``torch.save(model)``) of a class ``LCNN`` from a module named ``model``. Unpickling it the usual
way would import and run code. Here it is read with torch's weights-only unpickler, with an
allowlist mapping each module class of docs/systems/xlsr_lcnn.md (``model.LCNN``, ``model.MaxFeatureMap2D``,
``torch.nn.modules.*``, ``DataParallel``) to an inert stand-in that only stores the pickled
attributes; tensors, storages, ``OrderedDict`` and ``set`` come from torch's own weights-only
allowlist. A pickle naming any other global is refused before anything is rebuilt. Even so, the
converter runs only with ``--trust-pickle``. Plain state dicts (the AASIST, XLS-R-AASIST and Nes2Net-X
releases: tensors in an ``OrderedDict``, which ``torch.load(weights_only=True)`` reads as they are) and
``.safetensors`` files need no such flag (`needs_trust`).

Output: a ``.safetensors`` file with the weights (keys of the model) and, in its metadata, a JSON
description: the recipe part needed to use it (front end, model, loss for scoring) and the source
file's name and SHA-256. `load_model_weights` reads it back.

    python -m models.import_released anti-spoofing_feat_model.pt xlsr_lcnn_released.safetensors --trust-pickle
    python -m models.import_released LA_model.pth xlsr_aasist_la.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import struct
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from models.aasist import AASIST, AASISTL
from models.lcnn import LCNN
from models.nes2net_x import Nes2NetX
from models.package import TrainedWeights
from models.xlsr_aasist import XLSRAASISTBackEnd
from models.xlsr_mamba import XLSRMambaBackEnd
from utils.errors import UserError, run_cli
from utils.io import atomic_path

FORMAT = "asvspoof-toolkit-weights/1"
METADATA_KEY = "meta"

#: The recipe of the released model: its front end (docs/features.md), back end and loss (for scoring).
RELEASED_CONFIG: dict[str, Any] = {
    "name": "xlsr_lcnn_released",
    "frontend": {"name": "ssl", "model": "facebook/wav2vec2-xls-r-300m", "layer": -1, "n_samples": 64600},
    "model": {"name": "lcnn", "input_shape": [1, 1024, 201]},
    "loss": {"name": "weighted_ce", "weights": [10.0, 1.0]},
}

#: Module classes the released pickle instantiates; each is mapped to an inert stand-in.
MODULE_GLOBALS = (
    "model.LCNN",
    "model.MaxFeatureMap2D",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.container.Sequential",
    "torch.nn.parallel.data_parallel.DataParallel",
)

PICKLE_WARNING = (
    "warning: {path} is a pickle. It is read with torch's weights-only unpickler and an allowlist of "
    "inert stand-in classes, so no code from it runs, but only convert files from a source you trust."
)


class PickledModule:
    """Inert stand-in for a module class named in the pickle: keeps the pickled attributes, nothing else.

    ``torch.save(model)`` stores each module as "create an instance of <class>, then set its
    ``__dict__``"; the weights-only unpickler does that with this class instead (``__new__`` and
    ``__setstate__`` below run no code from the file).
    """

    pickled_name = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state), as pickle allows
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.pickled_name}: expected a dict of attributes")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_name}>"


def _stand_ins() -> list[tuple[type, str]]:
    """(stand-in class, pickled global name) pairs for `torch.serialization.safe_globals`."""
    return [
        (type(name.rsplit(".", 1)[1], (PickledModule,), {"pickled_name": name}), name)
        for name in MODULE_GLOBALS
    ]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


#: How a torch checkpoint begins: a zip archive (torch >= 1.6), or a pickle of protocol 2 or later
#: (the legacy format starts with a pickled magic number).
CHECKPOINT_MAGICS = (b"PK\x03\x04", b"\x80")


def _check_looks_like_checkpoint(path: Path) -> None:
    """`UserError` unless ``path`` starts like a torch checkpoint (text, audio, ... would otherwise reach
    the unpickler, which reads any bytes as opcodes and fails with an arbitrary exception)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith(CHECKPOINT_MAGICS):
        what = "an empty file" if not head else "neither a zip archive nor a pickle"
        raise UserError(f"{path}: not a torch checkpoint ({what})")


def needs_trust(path: Path) -> bool:
    """Whether reading ``path`` needs the allowlist of stand-in classes (a whole-model pickle): a plain state
    dict of tensors is read by ``torch.load(weights_only=True)`` as it is, which runs no code, and a
    safetensors file holds tensors only. A legacy (pre-zip) pickle cannot be scanned, so it needs trust."""
    if path.suffix == ".safetensors":
        return False
    try:
        return bool(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError):
        return True


def _refused_globals(path: Path) -> list[str]:
    """Globals the pickle names outside the allowlist (static scan: nothing is unpickled)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except ValueError:
        return []  # legacy (pre-zip) format: the unpickler itself refuses unknown globals
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise UserError(f"{path}: not a readable torch checkpoint ({_first_line(exc)})") from None


def _explain_refusal(message: str) -> str:
    """One-line reason from torch's (multi-paragraph) weights-only refusal message."""
    named = re.search(r"GLOBAL (\S+)", message)
    if named:
        return f"refusing to unpickle: it refers to global {named.group(1)}, outside the allowlist"
    if "persistent_load" in message:
        # torch < 1.6 stored each module's source code in whole-model pickles; only a full
        # (code-running) unpickle can read those.
        return (
            "whole-model pickle in torch's legacy (pre-1.6) format, which cannot be read without "
            "running code; in an isolated environment run "
            "torch.save(torch.load(SRC, weights_only=False).state_dict(), 'state.pt') and import state.pt"
        )
    reason = message.split("WeightsUnpickler error:")[-1].strip().splitlines()
    return f"weights-only unpickling refused ({(reason[0] if reason else 'no reason given')[:200]})"


def _module_tensors(module: PickledModule, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk a stand-in module tree like ``nn.Module.state_dict``: parameters, persistent buffers, children."""
    attrs = vars(module)
    skip = attrs.get("_non_persistent_buffers_set") or set()
    tensors: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (attrs.get(group) or {}).items():
            if value is not None and name not in skip:
                tensors[prefix + name] = value.detach()
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, PickledModule):
            tensors.update(_module_tensors(child, f"{prefix}{name}."))
    return tensors


def read_released_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a released whole-model pickle (or a plain state dict) without running its code.

    Returns the state dict on CPU with any ``module.`` (DataParallel) prefix removed. A pickle that
    names a global outside the allowlist -> `UserError` naming the global.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: released checkpoint not found")
    if path.suffix == ".safetensors":  # e.g. a Hugging Face hub release: tensors only, nothing to unpickle
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return {k.removeprefix("module."): v for k, v in load_file(str(path), device="cpu").items()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    _check_looks_like_checkpoint(path)
    with torch.serialization.safe_globals(_stand_ins()):
        refused = _refused_globals(path)
        if refused:
            raise UserError(
                f"{path}: refusing to unpickle: it refers to global(s) {', '.join(refused)} "
                "outside the allowlist of the released checkpoints"
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UserError(f"{path}: {_explain_refusal(str(exc))}") from None
        except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, KeyError, IndexError, ValueError,
                TypeError, UnicodeDecodeError, struct.error) as exc:
            # a damaged pickle: the unpickler fails on whatever opcode the bytes happen to spell
            raise UserError(f"{path}: not a readable torch checkpoint ({_first_line(exc)})") from None

    if isinstance(obj, PickledModule):
        tensors = _module_tensors(obj)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        tensors = {str(k): v for k, v in obj.items()}
    else:
        raise UserError(f"{path}: expected a whole-model pickle or a state dict, got {type(obj).__name__}")
    return {key.removeprefix("module."): value for key, value in tensors.items()}


def released_weights(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainedWeights:
    """A weights file's tensors and meta (`load_model_weights`) as `TrainedWeights`: a converted
    XLS-R-AASIST release keeps its fine-tuned SSL model under ``ssl.``, its back end under ``backend.``."""
    cfg = dict(meta.get("config", {}))
    trained = TrainedWeights(config=cfg, model_state=state, threshold=meta.get("threshold"),
                             calibration=meta.get("calibration"), source=dict(meta.get("source") or {}))
    if any(key.startswith(SSL_KEY_PREFIX) for key in state):
        trained.frontend_state = {"model." + k: v for k, v in _under(state, SSL_KEY_PREFIX).items()}
        trained.model_state = _under(state, BACKEND_KEY_PREFIX)
        trained.frontend_settings = {**cfg.get("frontend", {}), "architecture": meta.get("ssl_architecture")}
    return trained


def _under(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def check_against_model(state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: object) -> None:
    """Keys/shapes of ``state`` must equal ``model.state_dict()``'s, else `UserError` listing differences."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    problems = [f"missing {key}" for key in expected if key not in found]
    problems += [f"unexpected {key}" for key in found if key not in expected]
    problems += [
        f"{key} has shape {list(found[key])}, expected {list(shape)}"
        for key, shape in expected.items()
        if key in found and found[key] != shape
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems)} in all)" if len(problems) > 8 else "")
        raise UserError(f"{source}: weights do not match {type(model).__name__}: {shown}")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model_weights(
    path: str | os.PathLike, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Write ``state`` as safetensors with the JSON-serialisable ``meta`` in its metadata (atomically)."""
    from safetensors.torch import save_file

    # safetensors refuses views and shared storage; clones are cheap at these sizes.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, METADATA_KEY: json.dumps(dict(meta))})


def load_model_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weights file written by `save_model_weights` -> (state dict on CPU, meta dict).

    ``meta["config"]`` holds ``frontend``, ``model`` and ``loss`` configs as in a recipe. Missing,
    corrupt or foreign files -> `UserError` naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    if header.get("format") != FORMAT:
        raise UserError(f"{path}: not a weights file of this toolkit (no '{FORMAT}' format tag)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except (KeyError, ValueError) as exc:
        raise UserError(f"{path}: corrupt metadata ({_first_line(exc)})") from None
    return state, meta


#: Recipe of the released XLS-R-AASIST (docs/systems/xlsr_aasist.md): no waveform normalisation, the last
#: layer's hidden states, published score = raw bona fide logit.
RELEASED_XLSR_AASIST_CONFIG: dict[str, Any] = {
    "frontend": {
        "name": "ssl",
        "model": "facebook/wav2vec2-xls-r-300m",
        "layer": -1,
        "n_samples": 64600,
        "do_normalize": False,
    },
    "model": {"name": "xlsr_aasist", "input_shape": [201, 1024]},
    "loss": {"name": "weighted_ce", "weights": [0.9, 0.1], "score": "raw_logit"},
}

#: Wav2Vec2Config settings of fairseq's ``xlsr2_300m.pt`` (docs/features.md), for the shape check and for
#: rebuilding the fine-tuned SSL model without the hub (stored in the weights file's metadata).
XLSR_300M_ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "mask_time_prob": 0.0,
    "layerdrop": 0.0,
}

#: Where the SSL wrapper of SSL_Anti-spoofing keeps the fairseq model, and where our file keeps its parts.
FAIRSEQ_SSL_PREFIX = "ssl_model.model."
SSL_KEY_PREFIX = "ssl."
BACKEND_KEY_PREFIX = "backend."

# fairseq wav2vec 2.0 name -> Hugging Face Wav2Vec2Model name, as in transformers'
# convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py. Extractor norms: "layer" mode has a
# LayerNorm in every conv block (``<i>.2.1``), "group" mode a GroupNorm in the first (``0.2``). The
# positional conv is weight-normalised: fairseq's weight_g/weight_v are torch's parametrization
# original0/original1 (newer fairseq versions already use the parametrization names).
_LAYER = r"encoder\.layers\.(\d+)\."
FAIRSEQ_TO_HF: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (
            r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
            r"feature_extractor.conv_layers.\1.conv.\2",
        ),
        (
            r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)",
            r"feature_extractor.conv_layers.\1.layer_norm.\2",
        ),
        (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
        (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
        (
            r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        ),
        (
            r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
        ),
        (r"encoder\.pos_conv\.0\.bias", "encoder.pos_conv_embed.conv.bias"),
        (_LAYER + r"self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
        (_LAYER + r"self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
        (_LAYER + r"fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
        (_LAYER + r"fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
        (_LAYER + r"final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
        (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    )
)
#: Pre-training-only tensors, unused by ``features_only=True, mask=False`` (docs/features.md).
FAIRSEQ_UNUSED = re.compile(r"mask_emb|(quantizer|project_q|final_proj)\..+")


def fairseq_wav2vec2_to_hf(state: Mapping[str, torch.Tensor], source: object) -> dict[str, torch.Tensor]:
    """Rename a fairseq wav2vec 2.0 state dict to Hugging Face ``Wav2Vec2Model`` names.

    Pre-training-only tensors are dropped; any other unknown name -> `UserError` naming it.
    """
    renamed: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        for pattern, replacement in FAIRSEQ_TO_HF:
            if pattern.fullmatch(key):
                renamed[pattern.sub(replacement, key)] = value
                break
        else:
            if not FAIRSEQ_UNUSED.fullmatch(key):
                unknown.append(key)
    if unknown:
        raise UserError(f"{source}: unknown fairseq wav2vec 2.0 tensor(s): {', '.join(unknown[:5])}")
    return renamed


def swap_output_rows(state: Mapping[str, torch.Tensor], layer: str = "out_layer") -> dict[str, torch.Tensor]:
    """Copy of ``state`` with the two rows of ``<layer>.weight`` and ``<layer>.bias`` swapped.

    Turns a release with class 1 = bona fide into our order (class 0 = bona fide).
    """
    swapped = dict(state)
    for name in ("weight", "bias"):
        key = f"{layer}.{name}"
        if key in state:
            if state[key].shape[0] != 2:
                raise UserError(f"{key} has {state[key].shape[0]} output rows, expected 2")
            swapped[key] = state[key].flip(0)
    return swapped


def _hf_wav2vec2_on_meta(architecture: Mapping[str, Any]) -> torch.nn.Module:
    """A shape-only ``Wav2Vec2Model`` (meta device: no memory) for checking converted names and shapes."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        return Wav2Vec2Model(Wav2Vec2Config(**architecture))


def _released_backend(kind: str, hidden: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the back end of a fine-tuned SSL release, its recipe ``model`` section) for ``kind``."""
    if kind == "xlsr_aasist":
        cfg: dict[str, Any] = {"name": "xlsr_aasist", "input_shape": [201, hidden]}
        return XLSRAASISTBackEnd(input_shape=cfg["input_shape"]), cfg
    if kind in ("nes2net_x", "nes2net_x_astp"):
        pool = "ASTP" if kind == "nes2net_x_astp" else "mean"
        cfg = {"name": "nes2net_x", "input_shape": [1, hidden, 201], "pool_func": pool}
        return Nes2NetX(input_shape=cfg["input_shape"], pool_func=pool), cfg
    cfg = {"name": "xlsr_mamba", "input_shape": [201, hidden]}
    return XLSRMambaBackEnd(input_shape=cfg["input_shape"]), cfg


#: Per released SSL back end: (renaming of its back-end tensors into ours, our output layer).
_BACKEND_NAMES: dict[str, tuple[tuple[str, str], str]] = {
    "xlsr_aasist": (("", ""), "out_layer"),
    "nes2net_x": (("Nested_Res2Net_TDNN.", ""), "fc"),
    "nes2net_x_astp": (("Nested_Res2Net_TDNN.", ""), "fc"),
    "xlsr_mamba": (("conformer.", "mixer."), "mixer.classifier"),
}


def convert_ssl_release(
    state: Mapping[str, torch.Tensor],
    source: object,
    architecture: Mapping[str, Any] = XLSR_300M_ARCHITECTURE,
    kind: str = "xlsr_aasist",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A fine-tuned SSL release (no ``module.`` prefix) of ``kind`` (`release_kind`) -> (our weights, the
    recipe's ``model`` section).

    Weights are ``ssl.<Wav2Vec2Model name>`` and ``backend.<our back-end name>`` tensors with the output
    rows in our class order; names and shapes are checked against a ``Wav2Vec2Model`` of ``architecture``
    (Wav2Vec2Config keyword arguments) and the back end.
    """
    (old, new), out_layer = _BACKEND_NAMES[kind]
    ssl = {
        k.removeprefix(FAIRSEQ_SSL_PREFIX): v for k, v in state.items() if k.startswith(FAIRSEQ_SSL_PREFIX)
    }
    backend = {
        (new + k[len(old) :] if k.startswith(old) else k): v
        for k, v in state.items()
        if not k.startswith(FAIRSEQ_SSL_PREFIX)
    }
    backend = swap_output_rows(backend, out_layer)
    hf = fairseq_wav2vec2_to_hf(ssl, source)
    check_against_model(hf, _hf_wav2vec2_on_meta(architecture), source)
    model, model_cfg = _released_backend(kind, int(architecture["hidden_size"]))
    check_against_model(backend, model, source)
    weights = {
        **{SSL_KEY_PREFIX + k: v for k, v in hf.items()},
        **{BACKEND_KEY_PREFIX + k: v for k, v in backend.items()},
    }
    return weights, model_cfg


def convert_ssl_aasist(
    state: Mapping[str, torch.Tensor],
    source: object,
    architecture: Mapping[str, Any] = XLSR_300M_ARCHITECTURE,
) -> dict[str, torch.Tensor]:
    """SSL_Anti-spoofing state dict -> our XLS-R-AASIST weights (`convert_ssl_release`)."""
    return convert_ssl_release(state, source, architecture, "xlsr_aasist")[0]


def release_kind(state: Mapping[str, torch.Tensor]) -> str:
    """``xlsr_aasist``, ``nes2net_x`` (``nes2net_x_astp``), ``xlsr_mamba``, ``aasist``, ``aasist_l`` or
    ``lcnn``, from the tensor names (and pos_S width)."""
    if any(key.startswith(FAIRSEQ_SSL_PREFIX) for key in state):
        if "Nested_Res2Net_TDNN.pooling.linear1.weight" in state:
            return "nes2net_x_astp"
        if any(key.startswith("Nested_Res2Net_TDNN.") for key in state):
            return "nes2net_x"
        if any(key.startswith("conformer.") for key in state):
            return "xlsr_mamba"
        return "xlsr_aasist"
    if "pos_S" in state and "LL.weight" not in state:
        return "aasist_l" if state["pos_S"].shape[-1] == 24 else "aasist"
    return "lcnn"


def _released_aasist(kind: str) -> dict[str, Any]:
    """Recipe of a clovaai AASIST(-L) release (docs/systems/aasist.md): first 64,600 samples, raw logit."""
    return {
        "name": f"{kind}_released",
        "frontend": {"name": "waveform", "n_samples": 64600},
        "model": {"name": kind, "input_shape": [64600]},
        "loss": {"name": "weighted_ce", "weights": [0.9, 0.1], "score": "raw_logit"},
    }


#: Where each fine-tuned SSL release comes from (recorded in the converted file's metadata).
_RELEASE_SOURCES = {
    "xlsr_aasist": "XLS-R-AASIST (SSL_Anti-spoofing)",
    "nes2net_x": "Nes2Net-X (Liu-Tianchi/Nes2Net_ASVspoof_ITW)",
    "xlsr_mamba": "XLSR-Mamba (swagshaw/XLSR-Mamba)",
}


def convert_released_weights(
    src: str | os.PathLike, ssl_architecture: Mapping[str, Any] = XLSR_300M_ARCHITECTURE
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The released checkpoint ``src`` (kind from `release_kind`) converted -> (state dict, meta).

    ``ssl_architecture`` (Wav2Vec2Config keyword arguments) describes the SSL model of an
    XLS-R-AASIST release; it is recorded in the meta as ``ssl_architecture``.
    """
    state = read_released_state_dict(src)
    kind = release_kind(state)
    extra: dict[str, Any] = {}
    if kind in _BACKEND_NAMES:
        # the back end's input width is the SSL model's hidden size (1024 for XLS-R 300M)
        state, model_cfg = convert_ssl_release(state, src, ssl_architecture, kind)
        name = model_cfg["name"]
        config = {**RELEASED_XLSR_AASIST_CONFIG, "name": f"{name}_released_{Path(src).stem}"}
        config["model"] = model_cfg
        extra["ssl_architecture"] = dict(ssl_architecture)
        description = f"released {_RELEASE_SOURCES[name]} state dict (fairseq names)"
    elif kind in ("aasist", "aasist_l"):
        state = swap_output_rows(state)
        check_against_model(state, AASIST() if kind == "aasist" else AASISTL(), src)
        config = _released_aasist(kind)
        description = f"released {kind.upper().replace('_', '-')} state dict (clovaai/aasist)"
    else:
        model = LCNN(**{k: v for k, v in RELEASED_CONFIG["model"].items() if k != "name"})
        check_against_model(state, model, src)
        config = RELEASED_CONFIG
        description = "released XLS-R-LCNN pickle"
    meta = {
        "format": FORMAT,
        "config": config,
        **extra,
        "source": {"file": Path(src).name, "sha256": sha256_of(src), "kind": description},
    }
    return state, meta


def convert_released(
    src: str | os.PathLike,
    out: str | os.PathLike,
    ssl_architecture: Mapping[str, Any] = XLSR_300M_ARCHITECTURE,
    package: bool = False,
    license: str = "other",
) -> dict[str, Any]:
    """Convert the released checkpoint ``src`` into the weights file ``out``; return the meta.

    ``package``: write a model package folder ``out`` instead (`models.package`; ``license``: the
    weights' license for its model card, "other" by default: see the release's own terms).
    """
    state, meta = convert_released_weights(src, ssl_architecture)
    if not package:
        save_model_weights(out, state, meta)
        return meta
    from models.model_card import render_model_card
    from models.package import package_config, write_package

    trained = released_weights(state, meta)
    config = package_config(trained)
    write_package(out, trained, config, render_model_card(config, license))
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.import_released",
        description="Convert a released checkpoint (XLS-R-LCNN whole-model pickle "
        "models_0.63/try/anti-spoofing_feat_model.pt; XLS-R-AASIST LA_model.pth / DF_model.pth of "
        "SSL_Anti-spoofing; AASIST.pth / AASIST-L.pth of clovaai/aasist) into a pickle-free "
        ".safetensors weights file with its front-end/model/loss config (read back by "
        "load_model_weights for scoring). The kind is recognised from the tensor names.",
    )
    parser.add_argument("src", type=Path, help="released checkpoint (.pt, whole-model pickle or state dict)")
    parser.add_argument("out", type=Path, help="output weights file (.safetensors), or folder with --package")
    parser.add_argument(
        "--package",
        action="store_true",
        help="write a model package folder OUT (config.json, model.safetensors, model card README.md) that "
        "generate_score.py --checkpoint takes, instead of one .safetensors file",
    )
    parser.add_argument("--license", default="other", help="--package: the weights' license for the card")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="required for whole-model pickles (the XLS-R-LCNN release): confirm that you trust SRC. It is "
        "read with a weights-only unpickler and an allowlist of inert classes, but it is still a pickle. "
        "Plain state dicts (AASIST, XLS-R-AASIST, Nes2Net-X releases) and .safetensors files need no flag.",
    )
    args = parser.parse_args(argv)
    if args.src.is_file() and args.src.suffix != ".safetensors":
        _check_looks_like_checkpoint(args.src)  # text, audio, ...: say so before anything about pickles
    pickled = needs_trust(args.src) if args.src.is_file() else True
    if pickled and not args.trust_pickle:
        raise UserError(
            f"{args.src}: refusing to read a pickle without --trust-pickle (a pickle can run code when "
            "loaded; this converter reads it with an allowlist of inert classes, re-run with "
            "--trust-pickle if you trust the file's source)"
        )
    if pickled:
        print(PICKLE_WARNING.format(path=args.src), file=sys.stderr)
    meta = convert_released(args.src, args.out, package=args.package, license=args.license)
    print(f"wrote {args.out} (source sha256 {meta['source']['sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
