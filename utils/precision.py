"""One policy for precision, memory layout and compilation: what ``auto`` means on this device.

``resolve_amp`` turns a requested precision (``auto``, ``none``/``fp32``, ``bf16``, ``fp16``; the
spellings of ``train.amp``, ``generate_score.py --amp`` and ``preprocess.py --dtype``) into the autocast
setting to use and a one-line reason to print once and record ("amp: fp32 (this CPU has no native
bf16)"). ``auto`` = bf16 on CUDA devices with native bf16 and on CPUs with native bf16 arithmetic
(AVX512-BF16 or AMX on x86, the BF16 extension on Arm), fp32 otherwise; fp16 only when asked. Explicit
values win; bf16 or fp16 on a device that only emulates them works but warns (emulated bf16 measured
5-8x slower than fp32 when training on an AVX2-only CPU, see docs/PERFORMANCE.md).

Native bf16 on a CPU: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says whether oneDNN has a bf16
path at all; it is True on every AVX512 CPU, including those without the BF16 instructions (Skylake,
Cascade Lake), where oneDNN converts to fp32 in registers and gains nothing. So the CPU flags decide
(``avx512_bf16``/``amx_bf16`` on x86, ``bf16`` on Arm, from /proc/cpuinfo), and an ``ONEDNN_MAX_CPU_ISA``
(or ``DNNL_MAX_CPU_ISA``) cap below ``AVX512_CORE_BF16`` makes bf16 non-native, as it does for oneDNN:
with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` an AVX512-BF16
machine computes, and is described, like an AVX2-only one. Without /proc/cpuinfo (macOS, Windows) the
oneDNN check alone decides.

``resolve_channels_last`` and ``resolve_compile``: ``auto`` looks up measurements (tables below, from
bench/bench_train.py; how they were measured is in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import os
import platform
import shutil
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch

from utils.errors import UserError

AMP_ALIASES = {
    "none": "none", "fp32": "none", "float32": "none", "off": "none",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
}
SPELLED = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
# oneDNN's ISA names in increasing order (ONEDNN_MAX_CPU_ISA); bf16 dot products start at AVX512_CORE_BF16.
ONEDNN_ISAS = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL",
)
_FIRST_BF16_ISA = ONEDNN_ISAS.index("AVX512_CORE_BF16")


@dataclass(frozen=True)
class Choice:
    """A resolved setting: ``value`` ('none'|'bf16'|'fp16' for amp, bool otherwise), the one-line
    ``reason`` to print and record, and ``warning`` (None, or why the explicit value will be slow)."""

    value: Any
    reason: str
    warning: str | None = None

    @property
    def spelled(self) -> str:
        """amp as preprocess.py --dtype spells it: fp32, bf16, fp16."""
        return SPELLED.get(str(self.value), str(self.value))


@dataclass(frozen=True)
class CpuFacts:
    """What decides CPU speed, for benches and run records."""

    model: str
    capability: str  # torch.backends.cpu.get_cpu_capability(): the ATen kernels in use (AVX2, AVX512, ...)
    isa_cap: str | None  # ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA, if set
    mkldnn_bf16: bool  # oneDNN has a bf16 path (also True on AVX512 CPUs that only emulate bf16)
    native_bf16: bool
    native_bf16_why: str
    threads: int
    interop_threads: int
    cores: int | None

    def describe(self) -> str:
        """One line: 'CPU Intel(R) ... | capability AVX2 | native bf16: no (...) | threads 2 (interop 2)'."""
        cap = f" | ONEDNN_MAX_CPU_ISA={self.isa_cap}" if self.isa_cap else ""
        return (
            f"CPU {self.model} ({self.cores} logical cores) | get_cpu_capability() {self.capability}{cap} | "
            f"native bf16: {'yes' if self.native_bf16 else 'no'} ({self.native_bf16_why}) | "
            f"threads {self.threads} (interop {self.interop_threads})"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- facts


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str] | None]:
    """(model name, CPU flags) from /proc/cpuinfo; flags None where it is absent (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine() or "unknown", None
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.split())
    return model or platform.processor() or platform.machine() or "unknown", flags


def onednn_isa_cap() -> str | None:
    """The ONEDNN_MAX_CPU_ISA (or older DNNL_MAX_CPU_ISA) cap in effect, upper-cased; None if unset."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap else None


def mkldnn_bf16_supported() -> bool:
    """``torch.ops.mkldnn._is_mkldnn_bf16_supported()``; False where this torch build lacks it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_native_bf16(
    flags: frozenset[str] | None = None, mkldnn_bf16: bool | None = None, isa_cap: str | None = None
) -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and why (the arguments override the detected facts)."""
    if flags is None:
        flags = _cpuinfo()[1]
    if mkldnn_bf16 is None:
        mkldnn_bf16 = mkldnn_bf16_supported()
    if isa_cap is None:
        isa_cap = onednn_isa_cap()
    if isa_cap in ONEDNN_ISAS and ONEDNN_ISAS.index(isa_cap) < _FIRST_BF16_ISA:
        return False, f"ONEDNN_MAX_CPU_ISA={isa_cap} caps oneDNN below AVX512_CORE_BF16"
    if not mkldnn_bf16:
        return False, "no oneDNN bf16 path on this CPU"
    if flags is None:
        return True, "oneDNN reports bf16 support"
    x86_native = {"avx512_bf16", "amx_bf16"} & flags
    if x86_native:
        return True, "/".join(sorted(x86_native))
    if "bf16" in flags:  # Arm: FEAT_BF16
        return True, "Arm BF16"
    return False, "no AVX512-BF16/AMX: oneDNN would emulate bf16"


def cpu_facts() -> CpuFacts:
    """Model name, ATen capability, oneDNN ISA cap, bf16 support and thread counts of this process."""
    model, _ = _cpuinfo()
    native, why = cpu_native_bf16()
    return CpuFacts(
        model=model,
        capability=str(torch.backends.cpu.get_cpu_capability()),
        isa_cap=onednn_isa_cap(),
        mkldnn_bf16=mkldnn_bf16_supported(),
        native_bf16=native,
        native_bf16_why=why,
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        cores=os.cpu_count(),
    )


def cuda_native_bf16(device: torch.device) -> bool:
    """bf16 in hardware on this CUDA device (compute capability >= 8.0), not merely emulated."""
    try:
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no including_emulation; it then checks the hardware only
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported())


def device_class(device: torch.device | str) -> str:
    """'cuda', 'cpu-bf16' (native bf16) or 'cpu' (the rest: AVX2, AVX512 without BF16, ...); other
    device types are returned as is. Keys of the measurement tables below."""
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu-bf16" if cpu_native_bf16()[0] else "cpu"
    return device.type


# ----------------------------------------------------------------------------- amp


def _normalise_amp(requested: str | None, source: str) -> str:
    text = "auto" if requested is None else str(requested).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text not in AMP_ALIASES:
        raise UserError(f"{source}={requested!r} is not one of auto, none (fp32), bf16, fp16")
    return AMP_ALIASES[text]


def resolve_amp(requested: str | None, device: torch.device | str, source: str = "amp") -> Choice:
    """``requested`` (auto | none | fp32 | bf16 | fp16; None = auto) on ``device`` -> Choice('none' |
    'bf16' | 'fp16', reason[, warning]). ``source`` names the setting in messages ("config: train.amp").

    An explicit value that this device only emulates is kept, and its warning is also issued with
    `warnings.warn` (once per call site).
    """
    device = torch.device(device)
    amp = _normalise_amp(requested, source)
    name = "this CPU" if device.type == "cpu" else f"this {device.type.upper()} device"
    if device.type == "cuda":
        native, why = cuda_native_bf16(device), "compute capability < 8.0"
        fp16_native = True
    elif device.type == "cpu":
        native, why = cpu_native_bf16()
        fp16_native = bool(_cpuinfo()[1] and {"avx512_fp16", "amx_fp16"} & _cpuinfo()[1])
    else:
        native, why, fp16_native = False, "no measured policy for this device type", False

    if amp == "auto":
        if native:
            return Choice("bf16", f"amp: bf16 ({name} has native bf16: {why})")
        if device.type in ("cpu", "cuda"):
            return Choice("none", f"amp: fp32 ({name} has no native bf16: {why}; fp16 only when asked)")
        return Choice("none", f"amp: fp32 ({why}: {device.type})")
    label = SPELLED[amp]
    if amp == "bf16" and not native:
        warning = f"bf16 on {name} is emulated and slow ({why}); amp auto would use fp32"
    elif amp == "fp16" and not fp16_native:
        warning = f"fp16 on {name} is emulated and slow; amp auto would use fp32"
    else:
        warning = None
    if warning:
        warnings.warn(warning, stacklevel=2)
    return Choice(amp, f"amp: {label} (asked for{'; emulated, slow' if warning else ''})", warning)


# ----------------------------------------------------------------------------- channels_last and compile

# channels_last faster than contiguous for this (model, device class, amp) in training, measured with
# bench/bench_train.py (docs/PERFORMANCE.md). Missing entries: not measured, stay contiguous (the plain
# default can never be a pessimisation). The LCNN cpu-bf16 entry: README speed tables (AMD EPYC with
# AVX512-BF16, bf16 + channels_last 1.59x vs fp32 eager; Intel Xeon, this version: 5.58 samples/s vs
# 4.13 for bf16 alone).
CHANNELS_LAST_FASTER: dict[tuple[str, str, str], bool] = {
    # AVX2-emulated, fp32, idle machine (docs/PERFORMANCE.md): 0.88-0.91x and 0.81-1.00x of contiguous
    ("lcnn", "cpu", "none"): False,
    ("sr_la_res2net", "cpu", "none"): False,
    ("lcnn", "cpu-bf16", "bf16"): True,
    # Intel Xeon (Sapphire Rapids class), this version: bf16 eager 4.50 samples/s, + channels_last 3.35
    # (the earlier True rested on an AMD EPYC figure for an earlier version, bf16 + channels_last 1.28x vs
    # fp32 eager, with no bf16-only run beside it)
    ("sr_la_res2net", "cpu-bf16", "bf16"): False,
}


def _parse_flag(requested: bool | str | None, source: str) -> bool | None:
    """True/False for explicit values, None for auto (and None)."""
    if requested is None or isinstance(requested, bool):
        return requested
    text = str(requested).strip().lower()
    if text in ("auto", ""):
        return None
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise UserError(f"{source}={requested!r} is not one of auto, true, false")


def _from_table(
    requested: bool | str | None, table: dict[tuple[str, str, str], bool], what: str, model_name: str,
    device: torch.device | str, amp: str, source: str,
) -> Choice:
    """An explicit flag, or the measured ``table`` entry for (model, device class, amp); False if missing."""
    flag = _parse_flag(requested, source)
    if flag is not None:
        return Choice(flag, f"{what}: {str(flag).lower()} (asked for)")
    key = (model_name, device_class(device), _normalise_amp(amp, "amp"))
    faster = table.get(key)
    if faster is None:
        return Choice(False, f"{what}: false (not measured for {key[0]} on {key[1]} with {SPELLED[key[2]]})")
    verdict = "faster" if faster else "not faster"
    return Choice(faster, f"{what}: {str(faster).lower()} (measured {verdict} for {key[0]} on {key[1]})")


def resolve_channels_last(
    requested: bool | str | None, model_name: str, device: torch.device | str, amp: str,
    source: str = "channels_last",
) -> Choice:
    """``requested`` (auto | true | false; None = auto) -> Choice(bool, reason). ``amp`` is the resolved
    autocast ('none' | 'bf16' | 'fp16'); auto = the measured table `CHANNELS_LAST_FASTER`."""
    return _from_table(requested, CHANNELS_LAST_FASTER, "channels_last", model_name, device, amp, source)


def resolve_fused_adam(
    requested: bool | str | None, model_name: str, device: torch.device | str, amp: str,
    source: str = "fused_adam",
) -> Choice:
    """``requested`` (auto | true | false; None = auto) -> Choice(bool, reason): build Adam/AdamW with
    ``fused=True``. auto = the measured table `FUSED_ADAM_FASTER`."""
    return _from_table(requested, FUSED_ADAM_FASTER, "fused Adam", model_name, device, amp, source)


@dataclass(frozen=True)
class CompileCost:
    """Measured training cost of ``torch.compile`` for one model and device class, at ``batch`` and
    ``input_shape``: one-off ``compile_s`` and seconds per step eager and compiled (same other settings)."""

    compile_s: float
    eager_step_s: float
    compiled_step_s: float
    batch: int
    input_shape: tuple[int, ...]

    def break_even_steps(self, batch: int, input_shape: tuple[int, ...]) -> float:
        """Steps after which compiling has paid for itself at ``batch`` and ``input_shape``; inf if it never
        does. Step time is assumed proportional to batch x input size, the compile time constant."""
        saved = self.eager_step_s - self.compiled_step_s
        if saved <= 0:
            return float("inf")
        scale = (batch * _numel(input_shape)) / (self.batch * _numel(self.input_shape))
        return self.compile_s / (saved * scale)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


# fused (single-kernel) Adam/AdamW faster than the default for-loop implementation, measured in training
# with bench/bench_train.py; keys (model, device class, amp).
# AVX2-emulated, fp32, idle machine: LCNN 1.03-1.07x (Adam over 4.1 M parameters); SR-LA-Res2Net
# (amsgrad) 0.99-1.05x, within noise, so left off.
FUSED_ADAM_FASTER: dict[tuple[str, str, str], bool] = {
    ("lcnn", "cpu", "none"): True,
    ("sr_la_res2net", "cpu", "none"): False,
}

# Measured with bench/bench_train.py --compile (docs/PERFORMANCE.md); keys (model, device class, amp).
# AVX2-emulated, fp32, idle 2-core Intel Xeon: the compiled step was slower than eager for both models,
# so compiling never pays back there.
COMPILE_COSTS: dict[tuple[str, str, str], CompileCost] = {
    ("lcnn", "cpu", "none"): CompileCost(34, 2.479, 3.713, 8, (1, 1024, 201)),
    ("sr_la_res2net", "cpu", "none"): CompileCost(283, 2.589, 2.822, 8, (1, 45, 600)),
}
# auto compiles only when the run is this many times longer than the break-even point: compile-time
# noise (other processes, cold caches) must not turn the choice into a pessimisation.
PAYBACK_MARGIN = 2.0


def have_cxx_compiler() -> bool:
    """Inductor's CPU backend needs a C++ compiler (CXX, or c++/g++/clang++ on PATH)."""
    cxx = os.environ.get("CXX")
    return bool((cxx and shutil.which(cxx)) or any(shutil.which(c) for c in ("c++", "g++", "clang++")))


def resolve_compile(
    requested: bool | str | None,
    model_name: str,
    device: torch.device | str,
    amp: str,
    planned_steps: int,
    batch: int,
    input_shape: tuple[int, ...],
    source: str = "compile",
) -> Choice:
    """``requested`` (auto | true | false; None = auto) -> Choice(bool, reason). auto compiles only when
    ``planned_steps`` optimizer steps of ``batch`` x ``input_shape`` are at least `PAYBACK_MARGIN` times
    the measured break-even point (`COMPILE_COSTS`), so never for short runs such as the demo or tests."""
    flag = _parse_flag(requested, source)
    if flag is not None:
        return Choice(flag, f"compile: {str(flag).lower()} (asked for)")
    device = torch.device(device)
    key = (model_name, device_class(device), _normalise_amp(amp, "amp"))
    cost = COMPILE_COSTS.get(key)
    if cost is None:
        return Choice(False, f"compile: false (not measured for {key[0]} on {key[1]} with {SPELLED[key[2]]})")
    if device.type == "cpu" and not have_cxx_compiler():
        return Choice(False, "compile: false (no C++ compiler for inductor)")
    needed = PAYBACK_MARGIN * cost.break_even_steps(batch, tuple(input_shape))
    repay = f"{needed:.0f} needed to repay ~{cost.compile_s:.0f} s of compiling"
    if planned_steps >= needed:
        return Choice(True, f"compile: true ({planned_steps} steps >= {repay})")
    shown = "compiling never pays back" if needed == float("inf") else f"< {repay}"
    return Choice(False, f"compile: false ({planned_steps} steps {shown})")

