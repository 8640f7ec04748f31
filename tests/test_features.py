"""models/frontends: F0 subband against the float64 reference vectors, SSL hidden states on tiny models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data.audio import fix_length
from models.frontends import build_frontend
from models.frontends.f0_subband import F0SubbandFrontEnd, tile_frames
from models.frontends.ssl import SSLFrontEnd, random_model_config, save_random_model
from utils.errors import UserError

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "testvectors" / "f0_subband"
VECTOR_NAMES = ["am_tone_4p7s", "chirp_noise_6s", "harmonic_2s", "short_0p3s"]


def _vector(name: str) -> tuple[np.ndarray, np.ndarray]:
    if not (VECTORS / f"{name}.npy").is_file():
        pytest.skip(f"F0 test vector {name} not present in ../shared")
    wave, rate = sf.read(VECTORS / f"{name}.wav", dtype="float32")
    assert rate == 16000
    return wave, np.load(VECTORS / f"{name}.npy")


def _waves(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


# ---------------------------------------------------------------------------------------------- F0


@pytest.mark.parametrize("method", ["sliding", "dft", "fft"])
@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_f0_matches_reference_vector(name, method):
    wave, ref = _vector(name)
    out = F0SubbandFrontEnd(method=method).extract([wave])
    assert out.shape == (1, 1, 45, 600) and out.dtype == np.float32
    assert np.abs(out[0].astype(np.float64) - ref).max() < 1e-4


def test_f0_short_clip_mirror_default_vs_repeat():
    wave, ref = _vector("short_0p3s")
    fe = F0SubbandFrontEnd()
    assert fe.tiling == "mirror" and fe.n_stft_frames(len(wave)) == 37  # 4800 samples -> 37 frames
    mirror = fe.extract([wave])[0, 0]
    repeat = F0SubbandFrontEnd(tiling="repeat").extract([wave])[0, 0]
    np.testing.assert_array_equal(mirror[:, :37], repeat[:, :37])
    np.testing.assert_array_equal(mirror[:, 37], mirror[:, 36])  # reversed copy starts with the last frame
    np.testing.assert_array_equal(repeat[:, 37], repeat[:, 0])
    assert np.abs(mirror - repeat).max() > 1.0
    assert np.abs(repeat.astype(np.float64) - ref[0]).max() > 1.0  # the reference is mirror-tiled


def test_f0_frame_count_and_cut():
    fe = F0SubbandFrontEnd()
    assert fe.n_stft_frames(80000) == 616 and fe.n_stft_frames(96000) == 616
    # Samples after the first 80,000 do not matter.
    long = _waves(96000)[0]
    changed = long.copy()
    changed[80000:] = 1.0
    np.testing.assert_array_equal(fe.extract([long]), fe.extract([changed]))


@pytest.mark.parametrize("method", ["sliding", "dft", "fft"])
def test_f0_batched_equals_one_by_one(method):
    waves = _waves(75200, 4800, 300, 96000, 1729, seed=1)
    fe = F0SubbandFrontEnd(method=method, batch_size=3)
    batched = fe.extract(waves)
    single = np.concatenate([fe.extract([w]) for w in waves])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    other = F0SubbandFrontEnd(method="dft" if method == "fft" else "fft").extract(waves)
    np.testing.assert_allclose(batched, other, rtol=0, atol=1e-5)


def test_f0_matches_full_float64_stft_on_tiny_clip():
    """A clip shorter than the n_fft/2 padding still gives the centred constant-padded STFT."""
    from scipy.signal.windows import blackman

    x = _waves(300, seed=2)[0].astype(np.float64)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(y, 864)
    frames = np.stack([padded[i * 130 : i * 130 + 1728] for i in range(1 + 300 // 130)])
    ref = np.log(np.abs(np.fft.rfft(frames * blackman(1728), axis=1)) + np.exp(-80)).T[:45]
    out = F0SubbandFrontEnd().extract([x.astype(np.float32)])[0, 0]
    np.testing.assert_allclose(out[:, :3], ref, atol=1e-4)
    np.testing.assert_allclose(out[:, 3:6], ref[:, ::-1], atol=1e-4)


def test_tile_frames_exact():
    s = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(tile_frames(s, 8), [[1, 2, 3, 3, 2, 1, 1, 2]])
    np.testing.assert_array_equal(tile_frames(s, 8, "repeat"), [[1, 2, 3, 1, 2, 3, 1, 2]])
    np.testing.assert_array_equal(tile_frames(s, 2), [[1, 2]])


def test_f0_settings_round_trip_and_bad_settings():
    fe = F0SubbandFrontEnd(tiling="repeat")
    settings = json.loads(json.dumps(fe.settings()))
    again = build_frontend(settings)
    assert again.settings() == fe.settings() and again.feature_shape == (1, 45, 600)
    assert fe.store_dtype == np.float32 and fe.n_samples == 80000
    with pytest.raises(UserError, match="tiling"):
        build_frontend({"name": "f0", "tiling": "zeros"})
    with pytest.raises(UserError, match="method"):
        build_frontend({"name": "f0", "method": "cqt"})
    with pytest.raises(UserError, match="front end 'f0': unknown setting"):
        build_frontend({"name": "f0", "hop_length": 100})
    with pytest.raises(UserError, match="unknown front end .mfcc.; known front ends: f0, ssl, waveform"):
        build_frontend({"name": "mfcc"})
    with pytest.raises(ValueError, match="non-empty 1-D"):
        fe.extract([np.zeros(0, dtype=np.float32)])


# --------------------------------------------------------------------------------------------- SSL


@pytest.fixture(scope="module")
def tiny() -> SSLFrontEnd:
    return SSLFrontEnd("random:tiny", device="cpu")


def test_ssl_shapes_for_full_and_short_clips(tiny):
    assert tiny.feature_shape == (1, 1024, 201) and tiny.store_dtype == np.float16
    assert tiny.settings()["dtype"] == "fp32" and tiny.settings()["random_weights"] is True
    waves = _waves(64600, 8000, 100000)
    out = tiny.extract(waves)
    assert out.shape == (3, 1, 1024, 201) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, out.astype(np.float16).astype(np.float32))  # store-exact values
    # A 0.5 s clip is tiled: same features as the clip tiled by hand.
    np.testing.assert_allclose(out[1], tiny.extract([fix_length(waves[1], 64600)])[0], atol=1e-2)


def test_ssl_applies_normalisation(tiny):
    wave = _waves(64600)[0] + 0.3  # a DC offset and a non-unit variance
    x = wave.astype(np.float64)
    normed = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
    with torch.inference_mode():
        ref = tiny.model(torch.from_numpy(normed)[None]).last_hidden_state[0].T.numpy()
    out = tiny.extract([wave])[0, 0]
    np.testing.assert_allclose(out, ref, atol=1e-2, rtol=1e-3)  # float16 rounding of outputs
    # Normalised input: scale and offset of the waveform do not change the features.
    np.testing.assert_allclose(tiny.extract([3.0 * wave - 0.1])[0, 0], out, atol=1e-2)
    with torch.inference_mode():
        raw = tiny.model(torch.from_numpy(wave)[None]).last_hidden_state[0].T.numpy()
    assert np.abs(raw - ref).max() > 0.1


def test_ssl_batched_equals_one_by_one(tiny):
    waves = _waves(64600, 16000, 70000, 3000, seed=3)
    batched = SSLFrontEnd("random:tiny", device="cpu", batch_size=3).extract(waves)
    single = np.concatenate([tiny.extract([w]) for w in waves])
    np.testing.assert_allclose(batched, single, atol=1e-2)


def test_ssl_fp32_deterministic_and_rng_untouched(tiny):
    waves = _waves(64600, 20000, seed=4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    other = SSLFrontEnd("random:tiny", device="cpu")
    assert torch.rand(1) == before  # seeding the random weights did not disturb the caller's RNG
    np.testing.assert_array_equal(other.extract(waves), tiny.extract(waves))
    np.testing.assert_array_equal(tiny.extract(waves), tiny.extract(waves))


def test_ssl_layer_selection(tiny):
    waves = _waves(64600, seed=5)
    last = tiny.extract(waves)
    np.testing.assert_array_equal(SSLFrontEnd("random:tiny", layer=2, device="cpu").extract(waves), last)
    first = SSLFrontEnd("random:tiny", layer=1, device="cpu")
    assert first.settings()["layer"] == 1
    np.testing.assert_array_equal(SSLFrontEnd("random:tiny", layer=-2, device="cpu").extract(waves),
                                  first.extract(waves))
    with torch.inference_mode():
        x = torch.from_numpy(tiny.prepare(waves))
        ref = tiny.model(x, output_hidden_states=True).hidden_states[1][0].T.numpy()
    np.testing.assert_allclose(first.extract(waves)[0, 0], ref, atol=1e-2, rtol=1e-3)
    assert np.abs(first.extract(waves) - last).max() > 0.1
    with pytest.raises(UserError, match="layer 3 out of range"):
        SSLFrontEnd("random:tiny", layer=3, device="cpu")


def test_ssl_bf16_runs_and_is_close(tiny):
    waves = _waves(64600, 30000, seed=6)
    ref = tiny.extract(waves)
    fe = SSLFrontEnd("random:tiny", dtype="bf16", device="cpu")
    assert fe.settings()["dtype"] == "bf16"
    out = fe.extract(waves)
    assert out.shape == ref.shape and np.isfinite(out).all()
    assert np.abs(out - ref).max() < 0.25  # features are layer-normed, |x| up to ~5
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.999
    assert np.abs(out - ref).max() > 0  # autocast really ran in bf16
    # Weights stored in bf16 ahead of time give exactly what autocast over the fp32 model gives.
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        manual = tiny.model(torch.from_numpy(tiny.prepare(waves))).last_hidden_state.float()
    np.testing.assert_array_equal(out[:, 0], manual.transpose(1, 2).numpy().astype(np.float16))


def test_ssl_from_pretrained_equals_in_memory(tiny, tmp_path):
    out_dir = save_random_model("tiny", tmp_path / "tiny_w2v")
    assert (out_dir / "config.json").is_file() and (out_dir / "preprocessor_config.json").is_file()
    loaded = SSLFrontEnd(str(out_dir), device="cpu")
    assert loaded.settings()["random_weights"] is True and loaded.feature_shape == (1, 1024, 201)
    waves = _waves(64600, 12000, seed=7)
    np.testing.assert_array_equal(loaded.extract(waves), tiny.extract(waves))
    with pytest.raises(UserError, match="not an empty directory"):
        save_random_model("tiny", out_dir)


def test_ssl_reads_do_normalize_from_preprocessor_config(tmp_path):
    out_dir = save_random_model("narrow", tmp_path / "narrow")
    cfg_path = out_dir / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["do_normalize"] = False
    cfg_path.write_text(json.dumps(cfg))
    fe = SSLFrontEnd(str(out_dir), device="cpu")
    assert fe.settings()["do_normalize"] is False
    wave = _waves(64600, seed=8)[0]
    np.testing.assert_array_equal(fe.prepare([wave])[0], wave)


def test_ssl_bad_model_paths(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(UserError) as info:
        SSLFrontEnd(str(missing), device="cpu")
    assert str(missing) in str(info.value) and "not found" in str(info.value)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        SSLFrontEnd(str(tmp_path / "empty_dir"), device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load SSL model as local directory"):
        SSLFrontEnd(str(broken), device="cpu")
    from transformers import BertConfig, BertModel

    text_model = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(text_model)
    with pytest.raises(UserError, match="not a wav2vec2-family speech model"):
        SSLFrontEnd(str(text_model), device="cpu")
    with pytest.raises(UserError, match="unknown random SSL model"):
        SSLFrontEnd("random:huge", device="cpu")
    with pytest.raises(UserError, match="dtype"):
        SSLFrontEnd("random:narrow", dtype="int8", device="cpu")


def test_ssl_settings_round_trip_and_narrow_model(caplog):
    with caplog.at_level(logging.WARNING, logger="models.frontends.ssl"):
        fe = build_frontend({"name": "ssl", "model": "random:narrow", "layer": -1}, device="cpu")
        again = build_frontend(json.loads(json.dumps(fe.settings())), device="cpu")
    assert fe.feature_shape == (1, 64, 201) and again.settings() == fe.settings()
    assert fe.settings()["n_samples"] == 64600 and fe.settings()["model"] == "random:narrow"
    assert sum("RANDOM weights" in r.getMessage() for r in caplog.records) <= 1  # warned once per model
    waves = _waves(64600, seed=9)
    np.testing.assert_array_equal(fe.extract(waves), again.extract(waves))
    with pytest.raises(UserError, match="front end 'ssl': unknown setting"):
        build_frontend({"name": "ssl", "model": "random:narrow", "pooling": "mean"})


def test_xlsr_300m_config_has_published_size():
    from transformers import Wav2Vec2Model

    with torch.device("meta"):  # no memory, no init: only the architecture
        model = Wav2Vec2Model(random_model_config("xlsr-300m"))
    assert sum(p.numel() for p in model.parameters()) == 315_438_720  # docs/features.md: 315.4 M
    assert int(model._get_feat_extract_output_lengths(64600)) == 201


def test_f0_sliding_threads_give_identical_bytes_and_pickle():
    """Clips in parallel threads (single-threaded BLAS) give the very same float32 bytes as one thread."""
    import pickle

    waves = _waves(75200, 4800, 300, 96000, 1729, 16000, seed=3)
    one = F0SubbandFrontEnd(threads=1).extract(waves)
    fe = F0SubbandFrontEnd(threads=2)
    assert fe.batch_size == 1 and F0SubbandFrontEnd(method="dft").batch_size == 8
    np.testing.assert_array_equal(fe.extract(waves), one)
    again = pickle.loads(pickle.dumps(fe))  # the thread pool made by extract() is not pickled
    np.testing.assert_array_equal(again.extract(waves), one)
    np.testing.assert_array_equal(F0SubbandFrontEnd(method="dft").extract(waves), one)  # here: bit-identical


def test_ssl_compiled_matches_eager_with_a_padded_last_batch():
    waves = _waves(64600, 30000, 70000, seed=4)
    eager = SSLFrontEnd("random:narrow", device="cpu", batch_size=2)
    compiled = SSLFrontEnd("random:narrow", device="cpu", batch_size=2, compile=True)
    out = compiled.extract(waves)  # batches of 2 and 1 (padded to 2): one compiled shape
    assert compiled._compiled.failed is None
    np.testing.assert_allclose(out, eager.extract(waves), rtol=0, atol=2e-3)  # float16-rounded outputs


def test_trainable_ssl_keeps_float32_weights_under_a_bf16_dtype():
    # A frozen model stores its products' weights in bf16 (autocast would cast them anyway); a trainable
    # one must keep float32 masters for the optimizer, and its forward pass is differentiable.
    frozen = SSLFrontEnd("random:narrow", dtype="bf16", device="cpu", n_samples=16000)
    trainable = SSLFrontEnd("random:narrow", dtype="bf16", device="cpu", n_samples=16000, trainable=True)
    assert torch.bfloat16 in {p.dtype for p in frozen.parameters()}
    assert {p.dtype for p in trainable.parameters()} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trainable(torch.randn(2, 16000))
    out.float().sum().backward()
    assert (
        out.shape == (2, 1, 64, 49)
        and trainable.model.encoder.layers[0].feed_forward.output_dense.weight.grad.abs().sum() > 0
    )
