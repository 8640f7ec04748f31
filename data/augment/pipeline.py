"""The composable, seeded augmentation pipeline built from a recipe's ``augment:`` section.

Per utterance: with probability ``p`` augment at all; then RawBoost (with probability ``rawboost.p``);
then at most one entry of ``codecs`` (entries are exclusive choices with probabilities summing to <= 1;
an entry is one codec or a ``chain`` of them, each with a list of bit rates to draw from). RawBoost runs
first and the codec last, as ASVspoof 2021 transmits the finished utterance.

Every random choice comes from one ``np.random.RandomState`` seeded by `utterance_seed` (run seed, epoch,
utterance index), so an utterance's augmentation is the same in every run, worker and resume, and fresh
every epoch. Draw order: u(p), u(rawboost.p), u(codec entry), then RawBoost's draws (docs/augmentation.md),
then one randint per chain stage with several bit rates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data.augment.codecs import CODECS, Channel, apply_chain, canonical_name
from data.augment.rawboost import ALGO_NAMES, ALGOS, DEFAULTS, RawBoostParams, apply_rawboost
from utils.errors import UserError

SAMPLE_RATE = 16000
SEEDING = "np.random.RandomState(np.random.SeedSequence([run_seed, epoch, index]).generate_state(1)[0])"

#: Recipe presets; a recipe's own keys override the preset's (mappings such as rawboost key by key).
PRESETS: dict[str, dict[str, Any]] = {
    # LA as published (SSL_Anti-spoofing's LA model): RawBoost algo 5 (LnL then ISD).
    "la": {"rawboost": {"algo": 5}},
    # DF as published: RawBoost algo 3 (SSI).
    "df": {"rawboost": {"algo": 3}},
    # Opt-in telephony channels in the style of 2021 LA transmission (one per utterance, 60 % of them).
    "la_codecs": {
        "rawboost": {"algo": 5},
        "codecs": [
            {"name": "alaw", "p": 0.1},
            {"name": "mulaw", "p": 0.1},
            {"name": "g722", "p": 0.1},
            {"name": "opus", "bitrate": [8000, 12000, 16000], "p": 0.1},
            {"name": "amrnb", "bitrate": [7950, 10200, 12200], "p": 0.1},
            {"name": "telephone", "p": 0.1},
        ],
    },
    # Opt-in media codecs in the style of 2021 DF (low and high rates, and an mp3 -> aac chain).
    "df_codecs": {
        "rawboost": {"algo": 3},
        "codecs": [
            {"name": "mp3", "bitrate": [16000, 24000, 32000, 96000, 112000, 128000], "p": 0.15},
            {"name": "aac", "bitrate": [16000, 24000, 32000, 64000, 80000, 96000], "p": 0.15},
            {"name": "vorbis", "quality": [0.5, 1, 2, 6, 8], "p": 0.15},
            {
                "chain": [
                    {"name": "mp3", "bitrate": [32000, 128000]},
                    {"name": "aac", "bitrate": [32000, 96000]},
                ],
                "p": 0.1,
            },
        ],
    },
}
_TOP_KEYS = ("preset", "p", "rawboost", "codecs")
_STAGE_KEYS = ("name", "bitrate", "quality", "rate")


def utterance_seed(run_seed: int, epoch: int, index: int) -> int:
    """The RandomState seed (uint32) of utterance ``index`` in ``epoch`` of a run seeded ``run_seed``."""
    return int(np.random.SeedSequence([int(run_seed), int(epoch), int(index)]).generate_state(1)[0])


def _probability(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserError(f"{key}: probability must be a number in [0, 1], got {value!r}")
    return float(value)


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{key}: expected a mapping, got {value!r}")
    return value


def _unknown(cfg: Mapping[str, Any], known: Sequence[str], key: str) -> None:
    for name in cfg:
        if name not in known:
            raise UserError(f"{key}.{name}: unknown key (known: {', '.join(known)})")


class Stage:
    """One step of a codec entry: a codec with one or more settings, one drawn per utterance."""

    def __init__(self, cfg: Mapping[str, Any], key: str) -> None:
        cfg = _mapping(cfg, key)
        _unknown(cfg, _STAGE_KEYS, key)
        if "name" not in cfg:
            raise UserError(f"{key}.name: missing codec name")
        if "bitrate" in cfg and "quality" in cfg:
            raise UserError(f"{key}: give bitrate or quality, not both")
        what = "quality" if "quality" in cfg else "bitrate"
        info = CODECS.get(canonical_name(cfg["name"]))
        if info is not None and what in cfg and (what == "quality") != (info.bitrate == "quality"):
            hint = (
                "takes quality (0-10), not bitrate"
                if info.bitrate == "quality"
                else "takes bitrate, not quality"
            )
            raise UserError(f"{key}.{what}: {canonical_name(cfg['name'])} {hint}")
        values = cfg.get(what)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise UserError(f"{key}.{what}: empty list")
        self.variants = []
        for i, value in enumerate(values):
            sub = f"{key}.{what}[{i}]" if len(values) > 1 else None
            self.variants.append(Channel(cfg["name"], value, cfg.get("rate"), key=key, value_key=sub))

    def draw(self, rng: np.random.RandomState) -> Channel:
        return self.variants[rng.randint(len(self.variants))] if len(self.variants) > 1 else self.variants[0]

    def settings(self) -> dict[str, Any]:
        first = self.variants[0].settings()
        if len(self.variants) == 1:
            return first
        what = "quality" if "quality" in first else "bitrate"
        return {**first, what: [v.settings()[what] for v in self.variants]}


class Augmenter:
    """Seeded waveform augmentation: RawBoost then an optional codec/channel round trip.

    Build with `Augmenter.from_config(cfg)`; picklable (DataLoader workers get a copy with the measured
    codec delays). ``apply(wave, seed)`` is a pure function of (wave, seed).
    """

    def __init__(
        self,
        p: float = 1.0,
        algo: int = 0,
        rawboost_p: float = 1.0,
        params: RawBoostParams = DEFAULTS,
        codecs: Sequence[tuple[float, list[Stage]]] = (),
    ) -> None:
        self.p, self.algo, self.rawboost_p, self.params = p, algo, rawboost_p, params
        self.codecs = list(codecs)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, key: str = "augment") -> Augmenter:
        """Build from a recipe's ``augment`` section (see `PRESETS` and the package docstring).

        Raises UserError naming the offending key, e.g. ``augment.codecs[1].bitrate: ...``.
        """
        cfg = dict(_mapping(cfg or {}, key))
        _unknown(cfg, _TOP_KEYS, key)
        if "preset" in cfg:
            preset = str(cfg["preset"]).lower()
            if preset not in PRESETS:
                raise UserError(
                    f"{key}.preset: unknown preset {cfg['preset']!r} (known: {', '.join(PRESETS)})"
                )
            merged = copy.deepcopy(PRESETS[preset])
            for name, value in cfg.items():
                if name == "preset":
                    continue
                # a recipe's rawboost keys refine the preset's (``preset: la`` + ``rawboost: {p: 0.5}``
                # keeps algo 5); other keys, codecs included, replace it
                if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
                    value = {**merged[name], **value}
                merged[name] = value
            cfg = merged
        p = _probability(cfg.get("p", 1.0), f"{key}.p")

        algo, rawboost_p, params = 0, 1.0, DEFAULTS
        if cfg.get("rawboost") is not None:
            rb = dict(_mapping(cfg["rawboost"], f"{key}.rawboost"))
            _unknown(rb, ("algo", "p", *RawBoostParams.names()), f"{key}.rawboost")
            algo = rb.pop("algo", 0)
            if isinstance(algo, bool) or algo not in ALGOS:
                names = ", ".join(f"{a} {n}" for a, n in ALGO_NAMES.items())
                raise UserError(f"{key}.rawboost.algo: unknown RawBoost algo {algo!r} (known: {names})")
            rawboost_p = _probability(rb.pop("p", 1.0), f"{key}.rawboost.p")
            for name, value in rb.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserError(f"{key}.rawboost.{name}: expected a number, got {value!r}")
            params = RawBoostParams(**rb)

        entries: list[tuple[float, list[Stage]]] = []
        codecs = cfg.get("codecs") or []
        if not isinstance(codecs, (list, tuple)):
            raise UserError(f"{key}.codecs: expected a list of codec entries, got {codecs!r}")
        for i, entry in enumerate(codecs):
            ek = f"{key}.codecs[{i}]"
            entry = dict(_mapping(entry, ek))
            prob = _probability(entry.pop("p", 1.0), f"{ek}.p")
            if "chain" in entry:
                _unknown(entry, ("chain",), ek)
                chain = entry["chain"]
                if not isinstance(chain, (list, tuple)) or not chain:
                    raise UserError(f"{ek}.chain: expected a non-empty list of codecs, got {chain!r}")
                stages = [Stage(stage, f"{ek}.chain[{j}]") for j, stage in enumerate(chain)]
            else:
                stages = [Stage(entry, ek)]
            entries.append((prob, stages))
        total = sum(prob for prob, _ in entries)
        if total > 1 + 1e-9:
            raise UserError(
                f"{key}.codecs: the entries' probabilities sum to {total:g} > 1 (one codec per utterance)"
            )
        return cls(p, algo, rawboost_p, params, entries)

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable description for the run record (resolved settings, measured delays)."""
        import av

        return {
            "p": self.p,
            "rawboost": {
                "algo": self.algo,
                "name": ALGO_NAMES[self.algo],
                "p": self.rawboost_p,
                "params": self.params.settings(),
            },
            "codecs": [
                {"p": prob, "chain": [stage.settings() for stage in stages]} for prob, stages in self.codecs
            ],
            "order": "rawboost, then one codec entry",
            "seeding": SEEDING,
            "pyav": av.__version__,
        }

    def draw(self, seed: int | tuple[int, int, int]) -> tuple[np.random.RandomState, bool, list[Channel]]:
        """The utterance's RandomState (positioned for RawBoost), whether RawBoost runs, and its channels.

        ``seed`` is a RandomState seed or a (run seed, epoch, index) tuple.
        """
        if isinstance(seed, tuple):
            seed = utterance_seed(*seed)
        rng = np.random.RandomState(seed)
        u_all, u_rawboost, u_codec = rng.uniform(size=3)
        if u_all >= self.p:
            return rng, False, []
        use_rawboost = self.algo != 0 and u_rawboost < self.rawboost_p
        stages: list[Stage] = []
        edge = 0.0
        for prob, entry in self.codecs:
            edge += prob
            if u_codec < edge:
                stages = entry
                break
        return rng, use_rawboost, stages

    def apply(self, wave: np.ndarray, seed: int | tuple[int, int, int]) -> np.ndarray:
        """Augment one utterance: float (n,) at 16 kHz -> float32 (n,). Deterministic in (wave, seed)."""
        rng, use_rawboost, stages = self.draw(seed)
        y = np.asarray(wave)
        if use_rawboost:
            y = apply_rawboost(y, self.algo, rng, self.params)
        if stages:
            y = apply_chain(y, [stage.draw(rng) for stage in stages], SAMPLE_RATE)
        return np.array(y, dtype=np.float32)

    __call__ = apply  # an Augmenter is the ``augment`` callable of the audio datasets

    @property
    def active(self) -> bool:
        """False when the configuration can never change a waveform."""
        return self.p > 0 and ((self.algo != 0 and self.rawboost_p > 0) or any(p > 0 for p, _ in self.codecs))


def augment(wave: np.ndarray, rng: np.random.RandomState, algo: int = 5) -> np.ndarray:
    """RawBoost ``algo`` on one utterance: float (n,) at 16 kHz -> float32 (n,), drawing from ``rng``."""
    return apply_rawboost(wave, algo, rng).astype(np.float32)
