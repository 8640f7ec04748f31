"""data.augment: RawBoost against published vectors and the properties of docs/augmentation.md, codec round
trips through FFmpeg (every supported codec), the seeded pipeline, its config errors and the CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
from conftest import SHARED
from scipy import signal

from data.augment import Augmenter, Channel, apply_rawboost, utterance_seed
from data.augment import __main__ as cli
from data.augment.codecs import CODECS, NAMES, SAMPLE_SETTINGS
from data.augment.rawboost import RawBoostParams, bandstop_fir, fir_filter, isd, lnl, notch_coeffs, ssi
from utils.errors import UserError

VECTORS = SHARED / "testvectors" / "rawboost"
FS = 16000
P = RawBoostParams()
TELEPHONE_BAND = signal.butter(4, [300, 3400], "bandpass", fs=FS, output="sos")


def speechlike(n: int, seed: int = 0, peak: float = 0.3) -> np.ndarray:
    """A gliding harmonic tone plus broadband noise, float64 (n,), max|x| = peak."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    phase = 2 * np.pi * np.cumsum(150 + 40 * np.sin(2 * np.pi * 0.7 * t)) / FS
    x = sum(np.sin(h * phase) / h for h in range(1, 15)) + 0.3 * rng.standard_normal(n)
    return peak * x / np.abs(x).max()


# --- RawBoost --------------------------------------------------------------------------------------------


def _vectors() -> list[dict]:
    if not (VECTORS / "meta.json").is_file():
        return []
    return json.loads((VECTORS / "meta.json").read_text())["vectors"]


@pytest.mark.skipif(
    not (VECTORS / "meta.json").is_file(), reason="../shared/testvectors/rawboost is not present"
)
@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: v["file"])
def test_reference_vectors(vec: dict) -> None:
    meta = json.loads((VECTORS / "meta.json").read_text())
    assert meta["params"] == {k: v for k, v in P.settings().items() if k != "fs"} and meta["fs"] == P.fs
    x = np.load(VECTORS / meta["input"])
    y = apply_rawboost(x, vec["algo"], np.random.RandomState(vec["seed"]))
    np.testing.assert_allclose(y, np.load(VECTORS / vec["file"]), rtol=0, atol=1e-12)


def test_reference_vector_count() -> None:
    if not (VECTORS / "meta.json").is_file():
        pytest.skip("../shared/testvectors/rawboost is not present")
    assert sorted((v["algo"], v["seed"]) for v in _vectors()) == [(a, s) for a in range(1, 9) for s in (0, 1)]


def test_bandstop_is_scipy_firwin() -> None:
    for c, f1, f2 in [(11, 300.0, 1200.5), (99, 0.001, 950.0), (45, 7000.0, 7999.999), (71, 0.001, 999.0)]:
        ref = signal.firwin(c, [f1, f2], window="hamming", fs=FS)
        np.testing.assert_array_equal(bandstop_fir(c, f1, f2, FS), ref)


@pytest.mark.parametrize("algo", range(9))
def test_length_and_determinism(algo: int) -> None:  # properties 1 and 2
    x = speechlike(5001, seed=algo)
    y1 = apply_rawboost(x, algo, np.random.RandomState(11))
    y2 = apply_rawboost(x, algo, np.random.RandomState(11))
    assert y1.shape == x.shape and y1.dtype == np.float64
    np.testing.assert_array_equal(y1, y2)
    if algo:
        assert not np.array_equal(y1, apply_rawboost(x, algo, np.random.RandomState(12)))


def test_ssi_snr_in_range() -> None:  # property 3
    x = speechlike(8000)
    snrs = []
    for seed in range(20):
        y = ssi(x, np.random.RandomState(seed))
        snrs.append(10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2)))
    assert all(P.SNRmin <= s < P.SNRmax for s in snrs)
    assert max(snrs) - min(snrs) > 10  # really drawn over the range, not fixed


def test_isd_bounds() -> None:  # property 4
    x = speechlike(8000, peak=1 / (1 + P.g_sd))
    for seed in range(10):
        y = isd(x, np.random.RandomState(seed))
        changed = y != x
        assert changed.sum() <= int(x.shape[0] * P.P / 100)
        ratio = y[changed] / x[changed]
        assert np.all((ratio >= 1 - P.g_sd) & (ratio <= 1 + P.g_sd))
        np.testing.assert_array_equal(y[~changed], x[~changed])  # no rescaling
    assert changed.sum() > 0


def test_lnl_zero_mean_and_peak() -> None:  # property 5
    for peak in (0.3, 1.0, 3.0):
        y = lnl(speechlike(8000, peak=peak) + 0.2, np.random.RandomState(3))
        assert abs(np.mean(y)) < 1e-9 and np.abs(y).max() <= 1.0
    assert np.abs(y).max() == pytest.approx(1.0)  # a loud input is scaled to peak 1


def test_notch_length_and_gain() -> None:  # property 6
    params = RawBoostParams(minG=-12.0, maxG=6.0)
    for seed in range(5):
        replay = np.random.RandomState(seed)
        cs = []
        for _ in range(params.nBands):  # replay the draws: fc, bw, c per band, then G
            replay.uniform(), replay.uniform()
            c = int(replay.uniform(params.minCoeff, params.maxCoeff))
            cs.append(c + 1 if c % 2 == 0 else c)
        gain = replay.uniform(params.minG, params.maxG)
        b = notch_coeffs(np.random.RandomState(seed), params, params.minG, params.maxG)
        assert b.shape[0] == sum(cs) - (params.nBands - 1) and b.shape[0] % 2 == 1
        _, h = signal.freqz(b, 1, worN=512, fs=FS)
        assert np.abs(h).max() == pytest.approx(10 ** (gain / 20), rel=1e-12)


def test_fir_offset() -> None:  # property 7
    x = speechlike(1000)
    for m in (1, 3, 41, 491):
        b = np.zeros(m)
        b[m // 2] = 1.0
        y = fir_filter(x, b)
        np.testing.assert_allclose(y[:-1], x[1:], atol=1e-15)
        assert abs(y[-1]) < 1e-15


def test_algo8_peak() -> None:  # property 8
    for seed in range(5):
        y = apply_rawboost(speechlike(8000, seed=seed, peak=0.95), 8, np.random.RandomState(seed))
        assert np.abs(y).max() <= 1.0


# --- Codecs ----------------------------------------------------------------------------------------------


def test_every_codec_is_covered() -> None:
    assert {name for name, _ in SAMPLE_SETTINGS} == set(NAMES) == {*CODECS, "telephone"}


@pytest.mark.parametrize(("name", "value"), SAMPLE_SETTINGS, ids=lambda v: str(v))
def test_codec_round_trip(name: str, value: float | None) -> None:
    channel = Channel(name, value)
    x = speechlike(12345).astype(np.float32)
    y = channel.apply(x)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert not np.array_equal(y, x)
    np.testing.assert_array_equal(y, channel.apply(x))  # deterministic
    # Aligned: the cross-correlation of telephone-band noise peaks at lag 0 (the codec delay is
    # compensated). Band-limited because codec pre-filters (AMR's 80 Hz high pass) shift the phase of
    # low harmonics, which moves the peak for a low-pitched tone.
    noise = signal.sosfilt(TELEPHONE_BAND, np.random.default_rng(5).standard_normal(8000)).astype(np.float32)
    out = channel.apply(0.3 * noise / np.abs(noise).max())
    lags = np.arange(-40, 41)
    corr = [np.dot(noise[100:-100], out[100 + k : noise.shape[0] - 100 + k]) for k in lags]
    assert lags[int(np.argmax(corr))] == 0
    # Shorter than one codec frame (and than the delay): padded and trimmed back.
    short = channel.apply(x[:77])
    assert short.shape == (77,) and np.isfinite(short).all()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_mp3_quality_follows_bitrate() -> None:
    # Speech-like plus white noise: the low rate's narrower band and coarser quantisation show.
    x = (speechlike(16000, seed=2) + 0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32)
    high = _corr(x, Channel("mp3", 128000).apply(x))
    low = _corr(x, Channel("mp3", 16000).apply(x))
    assert high > 0.9 and low < high - 0.1


def test_chain_and_settings_record() -> None:
    aug = Augmenter.from_config(
        {
            "codecs": [
                {"chain": [{"name": "mp3", "bitrate": 32000}, {"name": "m4a", "bitrate": [16000, 32000]}]}
            ]
        }
    )
    x = speechlike(8000).astype(np.float32)
    y = aug.apply(x, 5)
    assert y.shape == x.shape and _corr(x, y) < _corr(x, Channel("mp3", 32000).apply(x))
    record = json.loads(json.dumps(aug.settings()))
    chain = record["codecs"][0]["chain"]
    assert [c["name"] for c in chain] == ["mp3", "aac"] and chain[1]["bitrate"] == [16000, 32000]
    assert chain[1]["delay"] == 1024 and record["rawboost"]["algo"] == 0


# --- The pipeline ----------------------------------------------------------------------------------------


def test_utterance_seed_is_pinned() -> None:
    # The scheme is part of reproducibility: changing it changes every run's augmentation.
    assert utterance_seed(0, 0, 0) == int(np.random.SeedSequence([0, 0, 0]).generate_state(1)[0])
    seeds = {utterance_seed(1, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300


def test_pipeline_determinism_across_copies_and_epochs() -> None:
    aug = Augmenter.from_config({"preset": "la", "codecs": [{"name": "mulaw", "p": 0.5}]})
    worker = pickle.loads(pickle.dumps(aug))  # what a DataLoader worker process gets
    x = speechlike(6000).astype(np.float32)
    a = aug.apply(x, (7, 2, 13))
    np.testing.assert_array_equal(a, worker.apply(x, (7, 2, 13)))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert not np.array_equal(a, aug.apply(x, (7, 3, 13)))  # fresh every epoch
    assert not np.array_equal(a, aug.apply(x, (7, 2, 14)))
    # RawBoost in the pipeline is the published algorithm, drawing after the pipeline's three decisions.
    rng = np.random.RandomState(utterance_seed(7, 2, 13))
    rng.uniform(size=3)
    ref = apply_rawboost(x, 5, rng).astype(np.float32)
    np.testing.assert_array_equal(Augmenter.from_config({"preset": "la"}).apply(x, (7, 2, 13)), ref)


def test_probabilities() -> None:
    aug = Augmenter.from_config(
        {
            "p": 0.8,
            "rawboost": {"algo": 3, "p": 0.5},
            "codecs": [{"name": "mulaw", "p": 0.3}, {"name": "telephone", "p": 0.2}],
        }
    )
    n = 2000
    draws = [aug.draw(s)[1:] for s in range(n)]
    rb = sum(use for use, _ in draws) / n
    codec = [stages[0].variants[0].name if stages else None for _, stages in draws]
    assert rb == pytest.approx(0.8 * 0.5, abs=0.035)
    assert codec.count("mulaw") / n == pytest.approx(0.8 * 0.3, abs=0.035)
    assert codec.count("telephone") / n == pytest.approx(0.8 * 0.2, abs=0.035)
    x = speechlike(3000).astype(np.float32)
    untouched = next(s for s, (use, st) in enumerate(draws) if not use and not st)
    np.testing.assert_array_equal(aug.apply(x, untouched), x)
    assert not Augmenter.from_config({}).active and Augmenter.from_config({"preset": "df"}).active


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"rawboost": {"algo": 9}}, "augment.rawboost.algo: unknown RawBoost algo 9"),
        ({"rawboost": {"algo": 5, "SNRmax": "high"}}, "augment.rawboost.SNRmax: expected a number"),
        ({"rawboost": {"algo": 5, "snr": 3}}, "augment.rawboost.snr: unknown key"),
        ({"rawboost": {"algo": 5, "p": 1.5}}, "augment.rawboost.p: probability must be a number in [0, 1]"),
        ({"p": -0.1}, "augment.p: probability must be a number in [0, 1]"),
        (
            {"codecs": [{"name": "mp3"}, {"name": "mp3", "bitrate": 20000}]},
            "augment.codecs[1].bitrate: mp3 at 16000",
        ),
        (
            {"codecs": [{"name": "aac", "bitrate": [32000, 128000]}]},
            "augment.codecs[0].bitrate[1]: aac at 16000 Hz",
        ),
        ({"codecs": [{"name": "amrnb", "bitrate": 12000}]}, "augment.codecs[0].bitrate: amrnb takes one of"),
        (
            {"codecs": [{"name": "opus", "bitrate": 2000}]},
            "augment.codecs[0].bitrate: opus takes 6000-510000",
        ),
        (
            {"codecs": [{"name": "vorbis", "bitrate": 64000}]},
            "augment.codecs[0].bitrate: vorbis takes quality",
        ),
        (
            {"codecs": [{"name": "g722", "bitrate": 48000}]},
            "augment.codecs[0].bitrate: g722 has a fixed bit rate",
        ),
        ({"codecs": [{"name": "flac"}]}, "augment.codecs[0].name: unknown codec 'flac'"),
        ({"codecs": [{"name": "gsm"}]}, "augment.codecs[0].name: GSM is not supported"),
        ({"codecs": [{"name": "mp3", "p": 2}]}, "augment.codecs[0].p: probability must be"),
        (
            {"codecs": [{"name": "mp3", "p": 0.7}, {"name": "aac", "p": 0.6}]},
            "augment.codecs: the entries' probabilities sum to 1.3",
        ),
        (
            {"codecs": [{"chain": [{"name": "mp3"}, {"name": "mulaw", "rate": 44100}]}]},
            "augment.codecs[0].chain[1].rate: mulaw runs at",
        ),
        ({"preset": "xx"}, "augment.preset: unknown preset 'xx'"),
        ({"rawbost": {}}, "augment.rawbost: unknown key"),
    ],
)
def test_config_errors(cfg: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        Augmenter.from_config(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --- The CLI ---------------------------------------------------------------------------------------------


def test_cli(tmp_path, capsys) -> None:
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    x = speechlike(16000).astype(np.float32)
    sf.write(src, x, FS, subtype="FLOAT")
    assert cli.main([str(src), str(out), "--rawboost", "3", "--codec", "mp3:128000", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    y, rate = sf.read(out, dtype="float32")
    assert rate == FS and y.shape == x.shape
    aug = Augmenter.from_config(
        {"rawboost": {"algo": 3}, "codecs": [{"chain": [{"name": "mp3", "bitrate": 128000}]}]}
    )
    np.testing.assert_array_equal(y, aug.apply(x, (4, 0, 0)))  # what training with this recipe would give
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y.astype(np.float64) - x) ** 2))
    assert f"SNR {snr:.2f} dB" in text and "SSI" in text and "mp3:128000" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rawboost", "12"], "error: --rawboost: unknown RawBoost algo 12"),
        (["--codec", "mp3:20000"], "error: --codec mp3:20000 bitrate: mp3 at 16000 Hz takes"),
        (["--codec", "gsm"], "error: --codec gsm name: GSM is not supported"),
        ([], "error: nothing to do"),
    ],
)
def test_cli_errors(tmp_path, capsys, args: list[str], message: str) -> None:
    src = tmp_path / "in.wav"
    sf.write(src, speechlike(1600).astype(np.float32), FS)
    assert cli.run_cli(cli.main, [str(src), str(tmp_path / "o.wav"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "o.wav").exists()
