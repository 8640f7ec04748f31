"""On-the-fly waveform augmentation: RawBoost (docs/augmentation.md) and codec / channel simulation (PyAV).

No torch here: numpy, scipy, soxr and PyAV only, so DataLoader workers stay light.

Use::

    from data.augment import Augmenter, utterance_seed
    aug = Augmenter.from_config(cfg["augment"])                 # UserError names the bad key
    wave = aug.apply(wave, (run_seed, epoch, index))            # float32 (n,) 16 kHz -> float32 (n,)
    record["augment"] = aug.settings()                          # JSON for the run record

Recipe section (off when absent)::

    augment:
      preset: la                # optional: la, df, la_codecs, df_codecs (recipe keys override it)
      p: 1.0                    # probability that an utterance is augmented at all
      rawboost: {algo: 5, p: 1.0}            # plus any published parameter: N_f, nBands, ..., SNRmax
      codecs:                   # exclusive choices, probabilities summing to <= 1 (rest: no codec)
        - {name: mp3, bitrate: [16000, 128000], p: 0.2}     # one bit rate drawn per utterance
        - {name: vorbis, quality: [1, 8], p: 0.1}            # native Vorbis takes quality, not bit rate
        - {name: telephone, p: 0.1}                          # 8 kHz round trip, 300-3400 Hz
        - {chain: [{name: mp3, bitrate: 128000}, {name: aac, bitrate: 64000}], p: 0.1}

Presets:

- ``la``: RawBoost algo 5 (LnL convolutive then ISD impulsive noise), the published setting of the
  SSL_Anti-spoofing LA model (trained on 2019 LA, evaluated on 2021 LA).
- ``df``: RawBoost algo 3 (SSI stationary coloured noise), the published setting of its DF model.
- ``la_codecs`` / ``df_codecs``: the same plus codecs, opt-in because the published systems did not use
  them: telephony for LA (a-law, mu-law, G.722, Opus 8-16 kbit/s, AMR-NB, telephone band) and media codecs
  for DF (mp3 and AAC at 16-32 and 96-128 kbit/s, Vorbis at low and high quality, mp3 -> AAC chains).

Codecs: mp3, aac (m4a), vorbis (ogg), opus, g722, mulaw (ulaw), alaw, amrnb, and the telephone channel.
GSM is not supported (FFmpeg in the PyAV wheel has no GSM encoder).

Determinism: ``apply(wave, (run_seed, epoch, index))`` draws everything from
``RandomState(utterance_seed(run_seed, epoch, index))``: identical in every run, worker and resume, and
different every epoch. Never cache augmented waves.
"""

from data.augment.codecs import Channel, apply_chain
from data.augment.pipeline import PRESETS, Augmenter, augment, utterance_seed
from data.augment.rawboost import RawBoostParams, apply_rawboost

__all__ = [
    "PRESETS",
    "Augmenter",
    "Channel",
    "RawBoostParams",
    "apply_chain",
    "augment",
    "apply_rawboost",
    "utterance_seed",
]
