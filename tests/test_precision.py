"""utils/precision.py: what auto resolves to on mocked devices, explicit overrides, warnings (no timings)."""

from __future__ import annotations

import warnings

import pytest
import torch

from utils import precision
from utils.errors import UserError
from utils.precision import (
    CompileCost,
    cpu_native_bf16,
    resolve_amp,
    resolve_channels_last,
    resolve_compile,
)

SPR = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
SKYLAKE = frozenset({"avx2", "avx512f", "avx512bw"})
EPYC = frozenset({"avx2", "fma"})
SHAPE = (1, 10, 10)


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be a CPU with the given flags and oneDNN bf16 answer, without an ISA cap."""

    def pretend(flags: frozenset[str] | None, mkldnn_bf16: bool, isa_cap: str | None = None) -> None:
        monkeypatch.setattr(precision, "_cpuinfo", lambda: ("Test CPU", flags))
        monkeypatch.setattr(precision, "mkldnn_bf16_supported", lambda: mkldnn_bf16)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if isa_cap is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa_cap)

    return pretend


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch):
    def pretend(bf16: bool) -> None:
        monkeypatch.setattr(precision, "cuda_native_bf16", lambda device: bf16)

    return pretend


def test_cpu_auto_is_bf16_only_with_native_bf16(cpu) -> None:
    cpu(SPR, True)
    choice = resolve_amp("auto", "cpu")
    assert (choice.value, choice.spelled, choice.warning) == ("bf16", "bf16", None)
    assert choice.reason == "amp: bf16 (this CPU has native bf16: amx_bf16/avx512_bf16)"

    cpu(EPYC, False)  # AMD EPYC, AVX2 only: no oneDNN bf16 path
    choice = resolve_amp(None, "cpu")
    assert (choice.value, choice.spelled) == ("none", "fp32")
    assert choice.reason.startswith("amp: fp32 (this CPU has no native bf16")


def test_avx512_without_bf16_instructions_is_not_native(cpu) -> None:
    # oneDNN says True on Skylake-class CPUs, but it only converts to fp32 there.
    cpu(SKYLAKE, True)
    assert cpu_native_bf16() == (False, "no AVX512-BF16/AMX: oneDNN would emulate bf16")
    assert resolve_amp("auto", "cpu").value == "none"
    assert cpu_native_bf16(frozenset({"bf16", "asimd"}), True, None) == (True, "Arm BF16")


def test_onednn_isa_cap_below_bf16_makes_bf16_emulated(cpu) -> None:
    cpu(SPR, True, isa_cap="avx2")
    native, why = cpu_native_bf16()
    assert not native and why == "ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below AVX512_CORE_BF16"
    assert resolve_amp("auto", "cpu").value == "none"
    cpu(SPR, True, isa_cap="AVX512_CORE_AMX")
    assert resolve_amp("auto", "cpu").value == "bf16"
    cpu(None, True)  # no /proc/cpuinfo: the oneDNN answer decides
    assert cpu_native_bf16() == (True, "oneDNN reports bf16 support")


def test_cuda_auto(cuda) -> None:
    cuda(True)
    assert resolve_amp("auto", "cuda").value == "bf16"
    cuda(False)
    choice = resolve_amp("auto", "cuda:0")
    assert choice.value == "none"  # fp16 only when asked
    assert choice.reason == (
        "amp: fp32 (this CUDA device has no native bf16: compute capability < 8.0; fp16 only when asked)"
    )
    assert resolve_amp("fp16", "cuda").value == "fp16"


def test_explicit_values_win_and_emulated_bf16_warns(cpu) -> None:
    cpu(EPYC, False)
    with pytest.warns(UserWarning, match=r"bf16 on this CPU is emulated and slow \(no oneDNN bf16 path"):
        choice = resolve_amp("bf16", "cpu")
    assert choice.value == "bf16"
    assert choice.reason == "amp: bf16 (asked for; emulated, slow)"
    assert "amp auto would use fp32" in choice.warning
    for spelled in ("none", "fp32", "FP32", "float32"):
        assert resolve_amp(spelled, "cpu").value == "none"
    cpu(SPR, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        assert resolve_amp("bf16", "cpu") == precision.Choice("bf16", "amp: bf16 (asked for)")
        assert resolve_amp("fp32", "cpu").value == "none"
    with pytest.raises(UserError, match=r"config: train.amp='int8' is not one of auto"):
        resolve_amp("int8", "cpu", source="config: train.amp")


def test_channels_last_follows_the_measured_table(cpu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "CHANNELS_LAST_FASTER", {("lcnn", "cpu-bf16", "bf16"): True})
    cpu(SPR, True)
    assert resolve_channels_last("auto", "lcnn", "cpu", "bf16").value is True
    assert resolve_channels_last("auto", "lcnn", "cpu", "none").value is False  # not measured
    assert resolve_channels_last(False, "lcnn", "cpu", "bf16").reason == "channels_last: false (asked for)"
    assert resolve_channels_last("true", "lcnn", "cpu", "none").value is True
    with pytest.raises(UserError, match="train.channels_last='maybe'"):
        resolve_channels_last("maybe", "lcnn", "cpu", "none", source="config: train.channels_last")


def test_compile_auto_only_when_the_run_repays_the_compile_time(cpu, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu(EPYC, False)
    # 200 s to compile, saves 1 s per step of 8 x (1, 10, 10): break-even 200 steps, auto needs 400.
    cost = CompileCost(compile_s=200.0, eager_step_s=3.0, compiled_step_s=2.0, batch=8, input_shape=SHAPE)
    assert cost.break_even_steps(16, (1, 10, 10)) == pytest.approx(100.0)
    monkeypatch.setattr(precision, "COMPILE_COSTS", {("lcnn", "cpu", "none"): cost})
    monkeypatch.setattr(precision, "have_cxx_compiler", lambda: True)
    args = ("lcnn", "cpu", "none")
    assert resolve_compile("auto", *args, planned_steps=399, batch=8, input_shape=(1, 10, 10)).value is False
    assert resolve_compile("auto", *args, planned_steps=400, batch=8, input_shape=(1, 10, 10)).value is True
    assert resolve_compile(True, *args, planned_steps=1, batch=8, input_shape=(1, 10, 10)).value is True
    monkeypatch.setattr(precision, "have_cxx_compiler", lambda: False)
    choice = resolve_compile("auto", *args, planned_steps=10**6, batch=8, input_shape=(1, 10, 10))
    assert choice == precision.Choice(False, "compile: false (no C++ compiler for inductor)")
    slower = CompileCost(compile_s=1.0, eager_step_s=1.0, compiled_step_s=1.5, batch=8, input_shape=SHAPE)
    assert slower.break_even_steps(8, (1, 10, 10)) == float("inf")


def test_cpu_facts_describe_this_machine() -> None:
    facts = precision.cpu_facts()
    assert facts.capability == torch.backends.cpu.get_cpu_capability()
    assert facts.threads == torch.get_num_threads()
    line = facts.describe()
    assert f"get_cpu_capability() {facts.capability}" in line
    assert ("native bf16: yes" in line) == facts.native_bf16
