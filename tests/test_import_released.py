"""Importer of the released XLS-R-LCNN whole-model pickle (docs/systems/xlsr_lcnn.md).

The test writes its own "release": stand-in classes ``LCNN`` and ``MaxFeatureMap2D`` registered
under a fake module ``model`` (as the released code names them; conftest.py), pickled with
``torch.save(model)``, plain and inside DataParallel; the fake module is removed before importing.
Refusing a disallowed pickle global and a pickle without --trust-pickle is in test_reliability.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import LCNN, SHARED, make_release
from torch import nn

from models.import_released import RELEASED_CONFIG, load_model_weights, main, save_model_weights
from models.lcnn import LCNN as OurLCNN
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "dataparallel"])
def test_import_gives_the_same_logits(tmp_path: Path, fake_model_module: None, wrap: bool) -> None:
    src, out = tmp_path / "anti-spoofing_feat_model.pt", tmp_path / "xlsr_lcnn.safetensors"
    original = make_release(src, wrap=wrap)
    del sys.modules["model"]  # the importer must not need the original code

    assert main([str(src), str(out), "--trust-pickle"]) == 0

    state, meta = load_model_weights(out)
    assert meta["config"]["model"] == {"name": "lcnn", "input_shape": [1, 1024, 201]}
    assert meta["config"]["frontend"]["name"] == "ssl"
    assert meta["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert int(state["conv2.2.num_batches_tracked"]) == 123
    ours = OurLCNN(input_shape=meta["config"]["model"]["input_shape"]).eval()
    ours.load_state_dict(state)  # strict: same keys, no "module." prefix
    x = torch.randn(2, 1, 1024, 201)
    with torch.no_grad():
        expected_emb, expected_logits = original(x)
        emb, logits = ours(x)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(emb, expected_emb)


def test_release_with_an_unexpected_module_class_is_refused(tmp_path: Path, fake_model_module: None) -> None:
    src = tmp_path / "relu.pt"
    make_release(src, extra=nn.ReLU())
    with pytest.raises(UserError, match=r"torch\.nn\.modules\.activation\.ReLU"):
        main([str(src), str(tmp_path / "out.safetensors"), "--trust-pickle"])


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_legacy_format_whole_model_pickle_is_explained(tmp_path: Path, fake_model_module: None) -> None:
    src = tmp_path / "old.pt"
    torch.save(LCNN(), src, _use_new_zipfile_serialization=False)  # torch < 1.6 layout: module source inside
    with pytest.raises(UserError, match=r"old\.pt: whole-model pickle in torch's legacy \(pre-1\.6\) format"):
        main([str(src), str(tmp_path / "out.safetensors"), "--trust-pickle"])


def test_shape_mismatch_is_listed(tmp_path: Path, fake_model_module: None) -> None:
    src, out = tmp_path / "small.pt", tmp_path / "out.safetensors"
    make_release(src, enc_dim=128)
    with pytest.raises(UserError, match=r"out\.3\.weight has shape \[128, 80\], expected \[256, 80\]"):
        main([str(src), str(out), "--trust-pickle"])
    assert not out.exists()


def test_plain_state_dict_with_module_prefix_is_accepted(tmp_path: Path) -> None:
    src, out = tmp_path / "state.pt", tmp_path / "out.safetensors"
    state = OurLCNN().state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, src)
    assert main([str(src), str(out), "--trust-pickle"]) == 0
    loaded, _ = load_model_weights(out)
    assert loaded.keys() == state.keys()
    torch.testing.assert_close(loaded["fc_mu.weight"], state["fc_mu.weight"])


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="garbage.pt: not a readable torch checkpoint"):
        main([str(garbage), str(tmp_path / "o.safetensors"), "--trust-pickle"])
    with pytest.raises(UserError, match="missing.pt: released checkpoint not found"):
        main([str(tmp_path / "missing.pt"), str(tmp_path / "o.safetensors"), "--trust-pickle"])
    with pytest.raises(UserError, match="nothing.safetensors: weights file not found"):
        load_model_weights(tmp_path / "nothing.safetensors")
    with pytest.raises(UserError, match="garbage.pt: not a readable safetensors file"):
        load_model_weights(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    with pytest.raises(UserError, match="foreign.safetensors: not a weights file of this toolkit"):
        load_model_weights(foreign)


def test_weights_round_trip(tmp_path: Path) -> None:
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(7)}
    save_model_weights(tmp_path / "w.safetensors", state, {"config": RELEASED_CONFIG})
    loaded, meta = load_model_weights(tmp_path / "w.safetensors")
    assert meta == {"config": RELEASED_CONFIG}
    assert loaded["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and int(loaded["b"]) == 7


@pytest.mark.slow
def test_cli_prints_one_line_error_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.import_released",
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.safetensors"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("error: ")
        and "--trust-pickle" in proc.stderr
        and "Traceback" not in proc.stderr
    )


# --- XLS-R-AASIST (SSL_Anti-spoofing) and AASIST (clovaai) releases ------------------------------------
# A "release" is built here from a tiny Hugging Face Wav2Vec2Model: its tensors are renamed to fairseq
# names with the inverse of the conversion mapping (written independently below), put under the SSL
# wrapper's prefix together with a back end whose output rows are in the original order (1 = bona fide).


def tiny_architecture(norm: str) -> dict:
    """A few-layer Wav2Vec2Config: XLS-R-like (pre-LN, LayerNorm in every conv) or base-like (GroupNorm)."""
    return {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "conv_dim": [8, 8],
        "conv_kernel": [10, 3],
        "conv_stride": [5, 2],
        "conv_bias": norm == "layer",
        "feat_extract_norm": norm,
        "do_stable_layer_norm": norm == "layer",
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
        "mask_time_prob": 0.0,
        "layerdrop": 0.0,
    }


def hf_to_fairseq(key: str, norm: str) -> str:
    """Hugging Face Wav2Vec2Model name -> fairseq wav2vec 2.0 name."""
    import re

    conv_norm = (
        r"feature_extractor.conv_layers.\1.2.1."
        if norm == "layer"
        else r"feature_extractor.conv_layers.\1.2."
    )
    rules = [
        (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", conv_norm),
        (r"^feature_projection\.layer_norm\.", "layer_norm."),
        (r"^feature_projection\.projection\.", "post_extract_proj."),
        (
            r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$",
            "encoder.pos_conv.0.weight_g",
        ),
        (
            r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$",
            "encoder.pos_conv.0.weight_v",
        ),
        (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv.0.bias"),
        (r"\.attention\.", ".self_attn."),
        (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
        (r"\.feed_forward\.intermediate_dense\.", ".fc1."),
        (r"\.feed_forward\.output_dense\.", ".fc2."),
    ]
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def make_ssl_release(path: Path, norm: str, wrap: bool):
    """Write an SSL_Anti-spoofing-style state dict -> (ssl model, back end in the original class order)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from models.xlsr_aasist import XLSRAASISTBackEnd

    torch.manual_seed(0)
    ssl = Wav2Vec2Model(Wav2Vec2Config(**tiny_architecture(norm))).eval()
    backend = XLSRAASISTBackEnd(input_shape=(63, 16)).eval()
    for module in backend.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {f"ssl_model.model.{hf_to_fairseq(k, norm)}": v for k, v in ssl.state_dict().items()}
    # Pre-training-only tensors of fairseq's model, which the converter drops.
    state["ssl_model.model.mask_emb"] = torch.zeros(8)
    state["ssl_model.model.quantizer.vars"] = torch.zeros(1, 4, 4)
    state["ssl_model.model.project_q.weight"] = torch.zeros(4, 4)
    state["ssl_model.model.final_proj.bias"] = torch.zeros(4)
    state.update(backend.state_dict())
    if wrap:  # main_SSL_DF.py wraps the model in DataParallel before saving its state dict
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, path)
    return ssl, backend


@pytest.mark.parametrize(("norm", "wrap"), [("layer", False), ("layer", True), ("group", False)])
def test_xlsr_aasist_release_gives_the_original_logits_with_columns_swapped(
    tmp_path: Path, norm: str, wrap: bool
) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from models.import_released import convert_released
    from models.xlsr_aasist import XLSRAASISTBackEnd

    src, out = tmp_path / "LA_model.pth", tmp_path / "xlsr_aasist.safetensors"
    ssl, original = make_ssl_release(src, norm, wrap)
    convert_released(src, out, ssl_architecture=tiny_architecture(norm))

    state, meta = load_model_weights(out)
    assert meta["config"]["model"]["name"] == "xlsr_aasist"
    assert meta["config"]["loss"] == {"name": "weighted_ce", "weights": [0.9, 0.1], "score": "raw_logit"}
    assert meta["config"]["frontend"]["do_normalize"] is False
    ours_ssl = Wav2Vec2Model(Wav2Vec2Config(**meta["ssl_architecture"])).eval()
    ours_ssl.load_state_dict({k.removeprefix("ssl."): v for k, v in state.items() if k.startswith("ssl.")})
    ours = XLSRAASISTBackEnd(input_shape=(63, 16)).eval()
    ours.load_state_dict(
        {k.removeprefix("backend."): v for k, v in state.items() if k.startswith("backend.")}
    )
    assert len(state) == len(ssl.state_dict()) + len(original.state_dict())  # unused tensors dropped

    wave = torch.randn(
        2, 1280
    )  # 255 -> 127 frames... with these strides: (1280-10)//5+1 = 255, (255-3)//2+1 = 127
    with torch.no_grad():
        _, expected = original(ssl(wave).last_hidden_state)
        _, logits = ours(ours_ssl(wave).last_hidden_state)
    torch.testing.assert_close(logits, expected[:, [1, 0]], rtol=1e-6, atol=1e-6)
    assert not torch.equal(logits, expected)


def test_unknown_fairseq_tensor_is_named(tmp_path: Path) -> None:
    from models.import_released import convert_released

    src = tmp_path / "LA_model.pth"
    make_ssl_release(src, "layer", wrap=False)
    state = torch.load(src, weights_only=True)
    state["ssl_model.model.encoder.layers.0.adapter.weight"] = torch.zeros(2)
    torch.save(state, src)
    with pytest.raises(
        UserError, match=r"unknown fairseq wav2vec 2\.0 tensor\(s\): encoder\.layers\.0\.adapter"
    ):
        convert_released(src, tmp_path / "out.safetensors", ssl_architecture=tiny_architecture("layer"))
    assert not (tmp_path / "out.safetensors").exists()


def test_clovaai_aasist_l_release_gives_the_original_logits_with_columns_swapped(
    tmp_path: Path, capsys
) -> None:
    from models.aasist import AASISTL

    torch.manual_seed(0)
    original = AASISTL().eval()
    src, out = tmp_path / "AASIST-L.pth", tmp_path / "aasist_l.safetensors"
    torch.save(original.state_dict(), src)
    # a plain state dict is read by torch.load(weights_only=True) as it is: no --trust-pickle, no warning
    assert main([str(src), str(out)]) == 0
    assert "pickle" not in capsys.readouterr().err

    state, meta = load_model_weights(out)
    assert meta["config"]["model"]["name"] == "aasist_l"
    ours = AASISTL().eval()
    ours.load_state_dict(state)
    wave = torch.randn(2, 2400)
    with torch.no_grad():
        torch.testing.assert_close(ours(wave)[1], original(wave)[1][:, [1, 0]], rtol=1e-6, atol=1e-6)


def test_xlsr_300m_architecture_has_the_documented_parameter_count() -> None:
    """docs/features.md: Hugging Face Wav2Vec2Model of XLS-R 300M with masking off: 315,437,696 parameters."""
    from models.import_released import XLSR_300M_ARCHITECTURE, _hf_wav2vec2_on_meta

    model = _hf_wav2vec2_on_meta(XLSR_300M_ARCHITECTURE)
    assert sum(p.numel() for p in model.parameters()) == 315_437_696


# --- Nes2Net-X and XLSR-Mamba releases ------------------------------------------------------------------
# Same construction: the tiny SSL model's tensors under fairseq names, plus a back end saved under the
# release's own names (Nested_Res2Net_TDNN.*; LL, first_bn, conformer.*), output rows in the original order.


def make_backend_release(path: Path, kind: str):
    """Write a Nes2Net-X or XLSR-Mamba style release -> (ssl model, back end in the original class order)."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from models.nes2net_x import Nes2NetX
    from models.xlsr_mamba import XLSRMambaBackEnd

    torch.manual_seed(0)
    ssl = Wav2Vec2Model(Wav2Vec2Config(**{**tiny_architecture("layer"), "hidden_size": 64})).eval()
    if kind == "nes2net_x":
        backend = Nes2NetX(input_shape=[1, 64, 201]).eval()
        names = {k: f"Nested_Res2Net_TDNN.{k}" for k in backend.state_dict()}
    else:
        backend = XLSRMambaBackEnd(input_shape=[201, 64]).eval()
        names = {
            k: "conformer." + k[len("mixer.") :] if k.startswith("mixer.") else k
            for k in backend.state_dict()
        }
    for module in backend.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {f"ssl_model.model.{hf_to_fairseq(k, 'layer')}": v for k, v in ssl.state_dict().items()}
    state.update({names[k]: v for k, v in backend.state_dict().items()})
    if path.suffix == ".safetensors":  # as on the Hugging Face hub
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return ssl, backend


@pytest.mark.parametrize("kind,file", [("nes2net_x", "Nes2Net_X.pth"), ("xlsr_mamba", "model.safetensors")])
def test_ssl_backend_release_gives_the_original_logits_with_columns_swapped(
    tmp_path: Path, kind: str, file: str
) -> None:
    from models import build_model
    from models.import_released import convert_released

    src, out = tmp_path / file, tmp_path / f"{kind}.safetensors"
    ssl, original = make_backend_release(src, kind)
    architecture = {**tiny_architecture("layer"), "hidden_size": 64}
    convert_released(src, out, ssl_architecture=architecture)
    state, meta = load_model_weights(out)
    assert meta["config"]["model"]["name"] == kind
    assert meta["config"]["loss"] == {"name": "weighted_ce", "weights": [0.9, 0.1], "score": "raw_logit"}
    ours = build_model(meta["config"]["model"]).eval()
    ours.load_state_dict(
        {k.removeprefix("backend."): v for k, v in state.items() if k.startswith("backend.")}
    )
    wave = torch.randn(2, 1280)
    with torch.no_grad():
        hidden = ssl(wave).last_hidden_state  # (2, 127, 64)
        features = hidden.transpose(1, 2).unsqueeze(1) if kind == "nes2net_x" else hidden
        expected = original(features)[1]
        logits = ours(features)[1]
    torch.testing.assert_close(logits, expected[:, [1, 0]], rtol=1e-6, atol=1e-6)
    assert not torch.equal(logits, expected)


def test_a_file_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from utils.errors import run_cli

    text = tmp_path / "notes.pt"
    text.write_text("hello, this is not a checkpoint\n")  # the unpickler would read 'h' as an opcode
    pickle_like = tmp_path / "damaged.pt"
    pickle_like.write_bytes(b"\x80\x02}q\x00(X\x01")  # a pickle cut short
    # the text file gets its error only; the damaged pickle the pickle warning first
    for src, reason, n_lines in ((text, "not a torch checkpoint (neither a zip archive nor a pickle)", 1),
                                 (pickle_like, "not a readable torch checkpoint", 2)):
        assert run_cli(main, [str(src), str(tmp_path / "o.safetensors"), "--trust-pickle"]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == n_lines and lines[-1].startswith(f"error: {src}: {reason}")
    assert not (tmp_path / "o.safetensors").exists()


RELEASES = SHARED / "released_weights"


@pytest.mark.parametrize("file", ["AASIST.pth", "AASIST-L.pth", "asvspoof5_baseline_AASIST.pth"])
def test_real_releases_give_the_reference_logits_with_columns_swapped(file: str, tmp_path: Path) -> None:
    """The released clovaai AASIST / AASIST-L and ASVspoof 5 baseline weights (plain state dicts: no
    --trust-pickle) against the reference model's logits on the same waves (../shared/released_weights)."""
    import json

    import numpy as np

    from models import build_model

    if not (RELEASES / "meta.json").is_file():
        pytest.skip("../shared/released_weights is not present")
    meta = json.loads((RELEASES / "meta.json").read_text())["files"][file]
    assert hashlib.sha256((RELEASES / file).read_bytes()).hexdigest() == meta["sha256"]
    out = tmp_path / "w.safetensors"
    assert main([str(RELEASES / file), str(out)]) == 0
    state, converted = load_model_weights(out)
    model = build_model(converted["config"]["model"]).eval()
    model.load_state_dict(state)
    waves = torch.from_numpy(np.load(RELEASES / "input.npy"))
    with torch.no_grad():
        logits = model(waves)[1].numpy()
    reference = np.load(RELEASES / meta["logits"])
    # measured: at most 1.6e-5 apart (float32 reductions in another order)
    np.testing.assert_allclose(logits, reference[:, [1, 0]], rtol=1e-5, atol=5e-5)
