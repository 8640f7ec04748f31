"""The model card of a package (README.md): a Hugging Face model card, i.e. a YAML header (license, tags,
datasets, metrics, and the results as ``model-index``) and a Markdown body (the system, its training data
and recipe, the run's results, calibration, threshold, intended use, limits, how to score).

Every number comes from the package's config.json (`models.package.package_config`), whose ``results``
are the training run's summary.json; the card adds no number of its own.
"""

from __future__ import annotations

from typing import Any

#: Corpus names of the recipes' ``data.dataset`` values.
DATASET_NAMES = {
    "la2019": "ASVspoof 2019 LA",
    "la2021": "ASVspoof 2021 LA",
    "df2021": "ASVspoof 2021 DF",
    "itw": "In-the-Wild",
}

#: Systems in words, by back end.
SYSTEMS = {
    "lcnn": "LCNN back end (light CNN with max-feature-map activations)",
    "sr_la_res2net": "SR-LA-Res2Net back end (Res2Net with squeeze-excitation and local attention)",
    "aasist": "AASIST (spectro-temporal graph attention on raw waveforms)",
    "aasist_l": "AASIST-L (the light AASIST)",
    "xlsr_aasist": "AASIST back end on fine-tuned wav2vec 2.0 XLS-R hidden states",
}
FRONTENDS = {
    "ssl": "hidden states of a self-supervised speech model ({model}, layer {layer})",
    "f0": "F0 subband: low-frequency log-magnitude STFT (bins 0-{top}, {frames} frames)",
    "waveform": "the raw 16 kHz waveform",
}


def _dataset(config: dict[str, Any]) -> str:
    data = config["config"].get("data") or {}
    return DATASET_NAMES.get(str(data.get("dataset", "")), str(data.get("dataset") or "unknown"))


def card_header(config: dict[str, Any], license: str = "mit") -> dict[str, Any]:
    """The YAML header as a dict: license, tags, datasets, metrics and the results as ``model-index``."""
    cfg = config["config"]
    results = config.get("results") or {}
    dataset = _dataset(config)
    data = cfg.get("data") or {}
    entries = []
    for split in ("dev", "eval"):
        value = results.get(f"{split}_eer")
        if value is not None:
            entries.append({
                "task": {"type": "audio-classification", "name": "spoofing countermeasure"},
                "dataset": {"name": dataset, "type": str(data.get("dataset", "unknown")),
                            "split": str(data.get(split, split))},
                "metrics": [{"type": "eer", "name": f"{split} EER (%)", "value": 100 * float(value)}],
            })
    header: dict[str, Any] = {
        "license": license,
        "library_name": "asvspoof-toolkit",
        "pipeline_tag": "audio-classification",
        "tags": ["anti-spoofing", "audio-deepfake-detection", "asvspoof", "countermeasure",
                 str(cfg["model"]["name"]), f"frontend-{cfg['frontend']['name']}"],
        "datasets": [dataset],
        "metrics": ["eer"],
    }
    if entries:
        header["model-index"] = [{"name": config["name"], "results": entries}]
    return header


def _system(config: dict[str, Any]) -> str:
    cfg = config["config"]
    fe = cfg["frontend"]
    frontend = FRONTENDS.get(fe["name"], fe["name"]).format(
        model=fe.get("model", "?"), layer=fe.get("layer", -1), top=int(fe.get("n_bins", 45)) - 1,
        frames=fe.get("n_frames", 600))
    weights = {
        "trained": "fine-tuned with the back end; its weights are in model.safetensors",
        "included": "frozen pretrained model, copied into model.safetensors",
        "reference": f"frozen pretrained model, not copied: `{config['frontend'].get('model')}`, content "
                     f"hash (sha256 of its weights) `{config['frontend'].get('content_hash')}`",
        "none": "no weights",
    }[config["frontend"]["weights"]]
    model = cfg["model"]["name"]
    inp = config["input"]
    return (
        f"- **Back end**: {SYSTEMS.get(model, model)}; input shape {cfg['model'].get('input_shape')}.\n"
        f"- **Front end**: {frontend} ({weights}).\n"
        f"- **Input**: {inp['sample_rate']} Hz mono, {inp['n_samples']:,} samples ({inp['seconds']:.4g} s); "
        f"longer recordings are {inp['longer']}, shorter ones {inp['shorter']}.\n"
        f"- **Score**: {config['score']['definition']}; higher = {config['score']['higher']}.\n"
    )


def _sources(data: dict[str, Any], key: str) -> str:
    """``data.<key>``: a partition name, or the sources of a list (docs/training.md) as dataset/partition."""
    value = data.get(key, key)
    if isinstance(value, str):
        return value
    return ", ".join(f"{s.get('dataset', data.get('dataset', '?'))}/{s.get('partition')}" for s in value)


def _recipe(config: dict[str, Any]) -> str:
    cfg = config["config"]
    data = cfg.get("data") or {}
    lines = [f"- **Training data**: {_dataset(config)}, partition `{_sources(data, 'train')}`; "
             f"the checkpoint was selected on `{_sources(data, 'dev')}`."
             if data else "- **Training data**: not recorded with these weights."]
    for section in ("loss", "optim", "sched", "augment"):
        if cfg.get(section):
            text = ", ".join(f"{k}={v}" for k, v in cfg[section].items())
            lines.append(f"- **{section}**: {text}")
    train = cfg.get("train") or {}
    if train:
        keys = ("epochs", "batch_size", "select_by", "amp")
        lines.append("- **train**: " + ", ".join(f"{k}={train[k]}" for k in keys if k in train))
    source = config.get("source") or {}
    if source:
        known = ", ".join(f"{k} `{v}`" for k, v in source.items() if v is not None)
        lines.append(f"- **Weights from**: {known}")
    return "\n".join(lines) + "\n"


def _results(config: dict[str, Any]) -> str:
    results = config.get("results") or {}
    if not results:
        return "No training run summary came with these weights: no results are recorded.\n"
    lines = ["| measure | value |", "|---|---:|"]
    for key, label in (("dev_eer", "dev EER (%)"), ("eval_eer", "eval EER (%)")):
        if results.get(key) is not None:
            lines.append(f"| {label} | {100 * float(results[key]):.4f} |")
    for key in ("best_epoch", "epochs_done", "seed"):
        if results.get(key) is not None:
            lines.append(f"| {key.replace('_', ' ')} | {results[key]} |")
    note = "From the run's summary.json (EER on that partition, pooled over attacks)."
    return "\n".join(lines) + f"\n\n{note}\n"


def _decisions(config: dict[str, Any]) -> str:
    threshold, calibration = config.get("threshold"), config.get("calibration")
    text = (f"- **Threshold**: {threshold['value']!r}, {threshold['meaning']}.\n" if threshold
            else "- **Threshold**: none recorded; scores only (give `--threshold`).\n")
    if calibration:
        text += (f"- **Calibration**: LLR = {calibration['scale']!r} * score + {calibration['offset']!r} "
                 f"(natural log, bona fide vs spoof), fitted on the development scores "
                 f"({calibration.get('n_bonafide')} bona fide, {calibration.get('n_spoof')} spoof, prior "
                 f"{calibration['prior']!r}); `--llr` outputs it and decides at the Bayes threshold -ln 1.9 "
                 "(ASVspoof 5 costs).\n")
    else:
        text += "- **Calibration**: none; scores are not LLRs.\n"
    return text


def render_model_card(config: dict[str, Any], license: str = "mit") -> str:
    """README.md of a package with config.json ``config``: YAML header, then the Markdown body."""
    import yaml

    header = yaml.safe_dump(card_header(config, license), sort_keys=False, allow_unicode=True)
    name = config["name"]
    return f"""---
{header}---

# {name}: a spoofing countermeasure

Tells bona fide speech from spoofed speech (text-to-speech, voice conversion, replayed or manipulated
audio of the kinds it was trained on). Trained and packaged with the ASVspoof anti-spoofing toolkit.

## System

{_system(config)}
## Training data and recipe

{_recipe(config)}
## Results

{_results(config)}
## Decisions and calibration

{_decisions(config)}
## Intended use

Research on spoofing countermeasures and screening of recordings for synthetic or converted speech, as
one piece of evidence among others. Scores rank recordings; decisions at the threshold above carry the
error rates measured on the development data only for data like it.

## Limits

- Trained on {_dataset(config)}: attacks, languages, channels and codecs unlike that corpus (new speech
  synthesisers, telephone or compressed audio, noise, music) can be missed or raise false alarms;
  cross-corpus error rates are usually far higher than in-corpus ones.
- The threshold was set on development data; other data needs its own threshold or calibration.
- Not a speaker verification system and not a proof of authenticity.

## How to score

```bash
# PACKAGE: this folder, or its hub id (org/name) once uploaded to the Hugging Face hub
python generate_score.py --checkpoint PACKAGE --audio my.wav recordings/ --output results.csv
# ONNX Runtime instead of PyTorch: export once (front end included), then score with it
python -m engine.export PACKAGE model.onnx
python generate_score.py --checkpoint model.onnx --runtime onnx --audio my.wav
```

`config.json` holds everything the scorer needs (the recipe, input length, score definition, threshold,
calibration); `model.safetensors` the weights.
"""
