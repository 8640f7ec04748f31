"""SSL front end (docs/features.md): hidden states of a wav2vec2-family model (XLS-R, WavLM, HuBERT, ...)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.frontends.base import FrontEnd, check_waves, register_frontend
from utils.errors import UserError
from utils.io import atomic_dir
from utils.precision import resolve_amp
from utils.tiling import fix_length_batch

logger = logging.getLogger(__name__)

#: ``layers`` settings: ``last`` (the one layer chosen by ``layer``) or ``all`` (every transformer layer's
#: output before the final encoder LayerNorm, fairseq's ``layer_results``; docs/systems/sls.md).
LAYER_CHOICES = ("last", "all")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RANDOM_PREFIX = "random:"
#: Written into the config.json of models saved by `save_random_model`, so loading them still warns.
RANDOM_CONFIG_KEY = "random_weights_kind"
_warned_random: set[str] = set()


def random_model_config(kind: str):
    """Wav2Vec2Config for a random-weight model: ``tiny``, ``narrow`` or ``xlsr-300m``.

    All three keep the XLS-R conv strides/kernels, so 64,600 samples give 201 frames.
    ``xlsr-300m`` is the full XLS-R 300M architecture (315.4 M parameters) for benchmarks.
    """
    from transformers import Wav2Vec2Config

    common = dict(
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        conv_bias=True,
        feat_extract_activation="gelu",
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    # (hidden, layers, heads, ffn, conv channels, pos-conv kernel); tiny/narrow keep the positional conv
    # and conv channels small: the parts that dominate CPU time in a tiny model.
    sizes = {"xlsr-300m": (1024, 24, 16, 4096, 512, 128), "tiny": (1024, 2, 4, 1024, 64, 16),
             "narrow": (64, 1, 4, 128, 32, 16)}
    if kind in sizes:
        hidden, layers, heads, ffn, channels, pos_kernel = sizes[kind]
        spec = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=ffn, conv_dim=(channels,) * 7, num_conv_pos_embeddings=pos_kernel,
                    num_conv_pos_embedding_groups=16)
    else:
        raise UserError(
            f"unknown random SSL model 'random:{kind}' (known: random:tiny, random:narrow, random:xlsr-300m)"
        )
    return Wav2Vec2Config(**common, **spec, **{RANDOM_CONFIG_KEY: kind})


def build_random_model(kind: str) -> torch.nn.Module:
    """Wav2Vec2Model with seeded random weights (seed 0, global RNG state left untouched)."""
    from transformers import Wav2Vec2Model

    config = random_model_config(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Wav2Vec2Model(config)


def save_random_model(kind: str, out_dir: str | os.PathLike) -> Path:
    """Write the ``random:<kind>`` model and its preprocessor config to ``out_dir`` (save_pretrained).

    The directory appears complete or not at all; an existing non-empty ``out_dir`` is an error.
    """
    from transformers import Wav2Vec2FeatureExtractor

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "directory") as tmp:
        build_random_model(kind).save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(tmp)
    return out_dir


def _looks_local(model_id: str) -> bool:
    """Paths, not hub ids: absolute, ./ ../ ~ prefixes, or anything that exists on disk."""
    return model_id.startswith(("/", ".", "~", os.sep)) or Path(model_id).exists()


def _read_do_normalize(model_id: str, local: bool) -> bool:
    """``do_normalize`` from the model's preprocessor_config.json; True (the XLS-R setting) if absent."""
    path: Path | None = Path(model_id).expanduser() / "preprocessor_config.json" if local else None
    if not local:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_id, "preprocessor_config.json"))
        except Exception:  # no preprocessor config on the hub or no network: use the default
            path = None
    if path is None or not path.is_file():
        return True
    try:
        return bool(json.loads(path.read_text()).get("do_normalize", True))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read preprocessor config ({exc})") from exc


def build_from_architecture(architecture: dict[str, Any]) -> torch.nn.Module:
    """A wav2vec2-family model of ``architecture`` (its config as keyword arguments, ``model_type``
    defaulting to wav2vec2) with seeded placeholder weights, built without the hub: for checkpoints that
    hold the SSL weights themselves (fine-tuned front ends, converted releases)."""
    from transformers import AutoConfig, AutoModel

    arch = dict(architecture)
    model_type = str(arch.pop("model_type", "wav2vec2"))
    try:
        config = AutoConfig.for_model(model_type, **arch)
    except (TypeError, ValueError) as exc:
        msg = f"ssl front end: cannot build a {model_type!r} model from its architecture ({exc})"
        raise UserError(msg) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModel.from_config(config)


def load_ssl_model(
    model_id: str, architecture: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, bool, str | None]:
    """Load a wav2vec2-family model -> (model, do_normalize, random kind or None).

    ``model_id`` is ``random:<kind>``, a local directory written by ``save_pretrained``, or a hub id.
    With ``architecture`` the model is built from it instead (`build_from_architecture`; nothing is
    downloaded, do_normalize defaults to True).
    """
    if architecture is not None:  # the weights come from a checkpoint: not "random" whatever the id says
        return build_from_architecture(architecture), True, None
    if model_id.startswith(RANDOM_PREFIX):
        kind = model_id[len(RANDOM_PREFIX) :]
        return build_random_model(kind), True, kind
    from transformers import AutoModel

    local = _looks_local(model_id)
    if local:
        path = Path(model_id).expanduser()
        if not path.is_dir():
            raise UserError(f"{model_id}: SSL model directory not found (looked for {path.resolve()})")
        if not (path / "config.json").is_file():
            raise UserError(f"{model_id}: not a Hugging Face model directory (no config.json)")
    try:
        model = AutoModel.from_pretrained(str(Path(model_id).expanduser()) if local else model_id)
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError, ...
        tried = "local directory" if local else "Hugging Face hub id (not a local directory)"
        msg = " ".join(str(exc).split())[:300]
        raise UserError(f"{model_id}: cannot load SSL model as {tried}: {type(exc).__name__}: {msg}") from exc
    if not hasattr(model, "_get_feat_extract_output_lengths"):
        raise UserError(
            f"{model_id}: {type(model).__name__} is not a wav2vec2-family speech model "
            "(expected e.g. Wav2Vec2Model, WavLMModel, HubertModel)"
        )
    return model, _read_do_normalize(model_id, local), getattr(model.config, RANDOM_CONFIG_KEY, None)


def _precast_for_autocast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store Linear/Conv1d weights in ``dtype``, which autocast would cast them to on every call anyway.

    Results are bit-identical to autocast with fp32 weights, minus a weight copy per forward (a quarter
    of XLS-R's CPU time). Layer norms stay fp32 (autocast runs them in fp32); parametrized modules
    (the weight-normed positional conv) are left alone because their weight is computed in fp32.
    """
    from torch.nn.utils import parametrize

    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv1d) and not parametrize.is_parametrized(module):
            module.to(dtype)


#: Config entries that describe a saved model, not its architecture.
_NOT_ARCHITECTURE = {"architectures", "transformers_version", "torch_dtype", "dtype"}


def _prepare_for_finetuning(model: torch.nn.Module, freeze_feature_encoder: bool) -> None:
    """Fine-tuning settings (docs/features.md): no SpecAugment masking (``mask_time_prob`` 0) and no layerdrop
    (Hugging Face's default 0.1 skips layers at random, breaking DDP's gradient reduction and exact
    resume); dropouts stay as the model's config says. ``freeze_feature_encoder``: the CNN feature
    encoder gets no gradients (`Wav2Vec2Model.freeze_feature_encoder`)."""
    config = model.config
    config.apply_spec_augment = False
    config.mask_time_prob = 0.0
    config.mask_feature_prob = 0.0
    config.layerdrop = 0.0
    masked = getattr(model, "masked_spec_embed", None)
    if masked is not None:  # built for masking, never used without it
        masked.requires_grad_(False)
    if freeze_feature_encoder:
        if not hasattr(model, "freeze_feature_encoder"):
            raise UserError(f"ssl front end: {type(model).__name__} has no CNN feature encoder to freeze")
        model.freeze_feature_encoder()


def _checked_layers(layers: str) -> str:
    """The ``layers`` setting, one of `LAYER_CHOICES`, else `UserError`."""
    if layers not in LAYER_CHOICES:
        raise UserError(f"ssl front end: layers must be one of {', '.join(LAYER_CHOICES)}, got {layers!r}")
    return layers


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@register_frontend("ssl")
class SSLFrontEnd(FrontEnd):
    """Hidden states of a frozen wav2vec2-family model (XLS-R, WavLM, HuBERT, ...) -> (1, hidden, frames).

    Waves are tiled/cut to ``n_samples`` (64,600 = 4.04 s), normalised per utterance as the model's feature
    extractor says ((x - mean)/sqrt(var + 1e-7), computed in float64 here), and run through the model in
    eval mode under ``torch.inference_mode``. ``layer`` counts like the model's ``hidden_states``
    (0 = transformer input, k = output of transformer layer k) except that the last one, ``layer = -1``
    (the default) or ``num_hidden_layers``, is always ``last_hidden_state`` (with the final layer norm of
    XLS-R-style stable-layer-norm models, as the published XLS-R-LCNN used). The (frames, hidden) output
    is transposed to (1, hidden, frames) so the LCNN sees features as height and time as width.
    ``dtype``: "fp32" (default on CPU, exact) or autocast "bf16" (default on CUDA) / "fp16".
    ``compile``: run the model through `utils.compile.FrozenCompiled` (one compiled shape: short batches
    are padded to ``batch_size``); a compile failure is logged and extraction goes on eagerly.
    Outputs are rounded to ``store_dtype`` (float16) and returned as float32, so features read from the
    store and computed on the fly are identical.

    ``layers``: ``last`` (default) hands over the one layer above; ``all`` hands over every transformer
    layer's output before the final encoder LayerNorm (fairseq's ``layer_results``, what XLS-R-SLS mixes;
    docs/systems/sls.md) as (n_layers, frames, hidden), frozen or fine-tuned alike.

    Fine-tuning (XLS-R-AASIST, docs/features.md): ``trainable`` makes ``forward`` differentiable and turns off
    SpecAugment masking and layerdrop; ``freeze_feature_encoder`` keeps the CNN feature encoder fixed;
    `set_grad_checkpointing` trades compute for activation memory. ``do_normalize`` overrides the model's
    preprocessor config (None: as it says; XLS-R-AASIST as published: False). ``architecture`` (the
    model config as a dict) builds the model without the hub, for checkpoints that hold its weights.
    """

    name = "ssl"
    store_dtype = np.float16
    derived_settings = frozenset({"tiling", "random_weights", "model_type", "hidden_size", "frames"})

    @classmethod
    def store_tag(cls, settings: Mapping[str, Any]) -> str:
        """``ssl-<model name>``, plus ``-layer<L>`` when not the last layer or ``-all-layers`` with
        ``layers: all`` (the first two are the tags stores always had)."""
        model = str(settings.get("model", "ssl")).rstrip("/\\")
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", model.replace(":", "-").split("/")[-1]) or "model"
        layer = settings.get("layer", -1)
        tag = f"ssl-{model}" if layer in (-1, None) else f"ssl-{model}-layer{layer}"
        return tag + ("-all-layers" if settings.get("layers", "last") == "all" else "")

    def __init__(
        self,
        model: str = "random:tiny",
        layer: int = -1,
        n_samples: int = 64600,
        dtype: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        compile: bool = False,
        trainable: bool = False,
        do_normalize: bool | None = None,
        freeze_feature_encoder: bool = False,
        architecture: dict[str, Any] | None = None,
        layers: str = "last",
    ) -> None:
        super().__init__()
        self.layers = _checked_layers(layers)
        self.trainable = bool(trainable)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self.architecture = dict(architecture) if architecture is not None else None
        self.device = torch.device(device) if device is not None else default_device()
        #: why this compute dtype (printed by preprocess.py; recorded as ``dtype`` in the store)
        self.dtype_reason = f"ssl dtype: {dtype} (asked for)"
        if dtype is None:  # the library default: exact fp32 on CPU, bf16 on CUDA
            dtype = "bf16" if self.device.type == "cuda" else "fp32"
        if dtype == "auto":  # the recipes' and preprocess.py's default: the machine's precision policy
            choice = resolve_amp("auto", self.device, "ssl front end dtype")
            self.dtype_reason = "ssl " + choice.reason.replace("amp: ", "dtype: ", 1)
            dtype = choice.spelled
        # On CPU small batches stay in cache: batch 4 ran ~25 % faster than 8 or 16 for XLS-R 300M.
        batch_size = batch_size or (32 if self.device.type == "cuda" else 4)
        if dtype not in DTYPES:
            raise UserError(f"ssl front end: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.model_id = str(model)
        self.layer = int(layer)
        self.n_samples = int(n_samples)
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))

        net, found_normalize, self.random_kind = load_ssl_model(self.model_id, self.architecture)
        self.do_normalize = found_normalize if do_normalize is None else bool(do_normalize)
        if self.random_kind is not None and self.model_id not in _warned_random:
            _warned_random.add(self.model_id)
            logger.warning("SSL model has RANDOM weights (%s) — features are not meaningful", self.model_id)
        # as loaded, before the fine-tuning changes: rebuilds the same modules (`portable_settings`)
        self._loaded_config = net.config.to_dict()
        self.model = net.float().eval().to(self.device)
        self.model.requires_grad_(self.trainable)
        if self.trainable:
            _prepare_for_finetuning(self.model, self.freeze_feature_encoder)
        # Trained weights stay float32 (Adam updates of 1e-6 would vanish in bf16); a trainable front end
        # computes in the trainer's train.amp instead of ``dtype``.
        if self.dtype != "fp32" and not self.trainable:
            _precast_for_autocast(self.model, DTYPES[self.dtype])
        self._compiled = None
        if compile and self.layers == "all":  # the layer hook of `_hidden_states` is not traced
            logger.warning("ssl front end: compile is not used with layers: all")
            compile = False
        if compile:
            from utils.compile import FrozenCompiled

            self._compiled = FrozenCompiled(self.model)

        config = self.model.config
        n_layers = config.num_hidden_layers
        if not -(n_layers + 1) <= self.layer <= n_layers:
            raise UserError(
                f"ssl front end: layer {self.layer} out of range for a {n_layers}-layer model "
                f"(valid: {-(n_layers + 1)}..{n_layers})"
            )
        # transformers 4.x and 5.x disagree on whether hidden_states[-1] includes the final layer norm of
        # stable-layer-norm models, so the last layer is always taken from last_hidden_state.
        self._layer_index = self.layer % (n_layers + 1)
        self.hidden_size = int(config.hidden_size)
        self.frames = self.frames_for(self.n_samples)
        self.feature_shape = (1, self.hidden_size, self.frames)
        if self.layers == "all":
            self.feature_shape = (n_layers, self.frames, self.hidden_size)

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable parameters (model id, layer, length, dtype, ...); see `build_frontend`."""
        return {
            "name": self.name,
            "model": self.model_id,
            "layer": self.layer,
            "n_samples": self.n_samples,
            "dtype": self.dtype,
            "tiling": "repeat",
            "do_normalize": self.do_normalize,
            "random_weights": self.random_kind is not None,
            "model_type": str(self.model.config.model_type),
            "hidden_size": self.hidden_size,
            "frames": self.frames,
            # Only recorded when on, so stores written before the options existed keep their settings.
            **({"trainable": True} if self.trainable else {}),
            **({"freeze_feature_encoder": True} if self.freeze_feature_encoder else {}),
            **({"architecture": self.architecture} if self.architecture is not None else {}),
            **({"layers": self.layers} if self.layers != "last" else {}),
        }

    def portable_settings(self) -> dict[str, Any]:
        """`settings` plus the model's architecture: rebuilds this front end without the hub, for a
        checkpoint that holds its weights (``frontend_state``)."""
        config = self._loaded_config
        arch = {k: v for k, v in config.items() if not k.startswith("_") and k not in _NOT_ARCHITECTURE}
        return {**self.settings(), "architecture": arch}

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Gradient checkpointing of the transformer layers (`train.grad_checkpoint`): their activations
        are recomputed in the backward pass instead of kept (non-reentrant; same gradients)."""
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        if not enabled:
            disable = getattr(self.model, "activation_checkpointing_disable", None)
            (disable or self.model.gradient_checkpointing_disable)()
        elif enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def frames_for(self, n_samples: int) -> int:
        """Frames the model gives for ``n_samples`` samples: the CNN feature encoder's output length."""
        return int(self.model._get_feat_extract_output_lengths(int(n_samples)))

    def samples_for(self, frames: int) -> int:
        """The fewest samples that give at least ``frames`` frames (400 for one frame of XLS-R): each
        convolution of the feature encoder, last first, needs (frames - 1) * stride + kernel inputs."""
        n = int(frames)
        config = self.model.config
        for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride, strict=True))):
            n = (n - 1) * int(stride) + int(kernel)
        return n

    def prepare(self, waves: Sequence[np.ndarray], n_samples: int | None = None) -> np.ndarray:
        """Waves -> (B, n) float32 model input (``n``: ``n_samples`` unless given): length-fixed by tiling,
        then normalised."""
        x = fix_length_batch(check_waves(waves), n_samples or self.n_samples, dtype=np.float64)
        if self.do_normalize:
            x = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-7)
        return x.astype(np.float32)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, n) float32 waves -> (B, 1, hidden, frames) (``layers: all``: (B, n_layers, frames, hidden));
        differentiable when ``trainable``. ``n`` is ``n_samples`` in training, or any length of at least
        one frame (`samples_for`) for full-utterance scoring; frames = `frames_for` (n).

        The trainable path normalises in float32 on the device (the frozen path, `extract`, in float64
        and rounds to float16, exactly as stored); the model runs under the caller's autocast."""
        if waves.dim() != 2 or self.frames_for(waves.shape[1]) < 1:
            raise ValueError(f"ssl front end: expected (B, n >= {self.samples_for(1)}) waves, "
                             f"got {tuple(waves.shape)}")
        if not self.trainable:
            feats = self.extract(list(waves.detach().float().cpu().numpy()), n_samples=waves.shape[1])
            return torch.from_numpy(feats).to(waves.device)
        x = waves.float()
        if self.do_normalize:
            var = x.var(dim=1, unbiased=False, keepdim=True)
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(var + 1e-7)
        hidden = self._hidden_states(self.model, x)
        return hidden if self.layers == "all" else hidden.transpose(1, 2).unsqueeze(1)

    def train(self, mode: bool = True) -> SSLFrontEnd:
        """A frozen SSL model stays in eval mode (no dropout) whatever the countermeasure's mode."""
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def extract(self, waves: Sequence[np.ndarray], n_samples: int | None = None) -> np.ndarray:
        """Waves (any lengths, 16 kHz) -> (B, 1, hidden, frames) float32 (values exact in float16), each
        wave tiled or cut to ``n_samples`` (default: the front end's)."""
        waves = list(waves)
        n_samples = n_samples or self.n_samples
        shape = self.feature_shape
        if n_samples != self.n_samples:  # the same layout with the frames of this length
            frames = self.frames_for(n_samples)
            shape = (shape[0], frames, shape[2]) if self.layers == "all" else (1, self.hidden_size, frames)
        out = np.empty((len(waves), *shape), dtype=np.float32)
        for start in range(0, len(waves), self.batch_size):
            chunk = waves[start : start + self.batch_size]
            # (b, [layers,] frames, hidden)
            hidden = self._forward(torch.from_numpy(self.prepare(chunk, n_samples)))
            if self.layers != "all":
                hidden = hidden.transpose(1, 2).unsqueeze(1)
            block = hidden.cpu().numpy().astype(self.store_dtype)
            if not np.isfinite(block).all():  # fp16 overflow or a diverged model must not reach the store
                raise RuntimeError(f"{self.model_id}: non-finite hidden states (beyond float16 range?)")
            out[start : start + len(chunk)] = block
        return out

    def _hidden_states(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(b, n_samples) waves through ``model`` -> (b, frames, hidden) of ``layer``, or with ``layers:
        all`` (b, n_layers, frames, hidden): every transformer layer's output before the final encoder
        LayerNorm (fairseq ``layer_results``).

        The last layer's pre-norm output is read by a forward hook on that layer: Hugging Face's
        ``hidden_states[-1]`` of stable-layer-norm models has the final LayerNorm applied in
        transformers 4.x and not in 5.x, so neither it nor ``last_hidden_state`` is relied on."""
        n_layers = self.model.config.num_hidden_layers
        if self.layers != "all":
            if self._layer_index == n_layers:
                return model(x).last_hidden_state
            return model(x, output_hidden_states=True).hidden_states[self._layer_index]
        caught: list[torch.Tensor] = []

        def keep(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            caught.append(output[0] if isinstance(output, tuple) else output)

        handle = self.model.encoder.layers[n_layers - 1].register_forward_hook(keep)
        try:
            states = model(x, output_hidden_states=True).hidden_states
        finally:
            handle.remove()
        # the first call's output: gradient checkpointing may call the layer again in backward
        return torch.stack([*states[1:n_layers], caught[0]], dim=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n_samples) normalised waves -> (b, frames, hidden) float32 hidden states of ``layer``
        (``layers: all``: (b, n_layers, frames, hidden))."""
        autocast = torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != "fp32")
        n = x.shape[0]
        model = self.model
        if self._compiled is not None and self._compiled.failed is None:
            from utils.compile import pad_batch

            model, x = self._compiled, pad_batch(x, self.batch_size)
        with torch.inference_mode(), autocast:
            hidden = self._hidden_states(model, x.to(self.device))
        if self._compiled is not None and self._compiled.failed and model is self._compiled:
            logger.warning("torch.compile failed, extracting without it (%s)", self._compiled.failed)
        return hidden[:n].float()
