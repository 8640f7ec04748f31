"""Several corpora in one training run (data/mixture.py, ``data.train``/``data.dev`` as lists of sources,
``train.draws_per_epoch``): the sampler's proportions, determinism and rank slices; the source schema's
one-line errors; a manifest source beside a corpus; a run on two tiny corpora (the toy corpus of
tests/toy_corpus.py and a generated 2019 LA one) with per-source dev EERs, killed with SIGKILL and resumed
to the same weights and history."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import recipe
from test_reliability import COMMON, kill_after_first_epoch_then_resume
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from data.corpora import register_corpus, unregister_corpus
from data.mixture import MixtureDataset, MixtureSampler, mixture_order
from engine.partitions import open_sources
from engine.recipe_schema import load_recipe
from engine.trainer import make_loader
from utils.distributed import DistInfo
from utils.errors import UserError
from utils.metrics import compute_eer
from utils.scorefiles import read_scores

TESTS = Path(__file__).resolve().parent

# --- the sampler ----------------------------------------------------------------------------------------


def test_draws_follow_the_weights_and_exhaust_a_source_before_repeating_it() -> None:
    sizes, weights = [5, 20], [1.0, 3.0]
    order = mixture_order(sizes, weights, 400, seed=0, epoch=0)
    small = order[order < 5]
    # P(small) = 1/4: 97 of 400 draws for this seed (binomial sd 8.7), and over all epochs about a quarter
    assert (small.numel(), (order >= 5).sum().item()) == (97, 303)
    assert order[:8].tolist() == [11, 5, 22, 18, 24, 9, 2, 15]
    for source, items in ((0, small), (1, order[order >= 5] - 5)):
        size = sizes[source]
        for start in range(0, items.numel() - size + 1, size):  # each full round is a permutation
            assert sorted(items[start : start + size].tolist()) == list(range(size))
    counts = [(mixture_order(sizes, weights, 400, seed=0, epoch=e) < 5).sum().item() for e in range(6)]
    assert counts == [97, 97, 101, 96, 88, 96]
    assert mixture_order(sizes, weights, 4000, seed=0, epoch=0).lt(5).sum().item() == 986


def test_the_order_depends_only_on_the_seed_and_the_epoch() -> None:
    sampler = MixtureSampler([3, 4], [1.0, 1.0], 10, seed=7)
    sampler.set_epoch(2)
    torch.manual_seed(123)  # the global RNG plays no part
    first = list(sampler)
    torch.manual_seed(456)
    assert list(sampler) == first == [6, 2, 0, 4, 1, 5, 3, 1, 6, 4]
    assert list(MixtureSampler([3, 4], [1.0, 1.0], 10, seed=7)) != first  # epoch 0
    other_seed = MixtureSampler([3, 4], [1.0, 1.0], 10, seed=8)
    other_seed.set_epoch(2)
    assert list(other_seed) != first
    assert len(MixtureSampler([3, 4], [1.0, 2.0])) == 7  # draws: the sum of the sizes


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_the_ranks_slices_interleave_to_the_whole_order(world_size: int) -> None:
    """Like DistributedSampler: rank r takes draws r, r + W, ... of the order padded with its start."""
    samplers = [MixtureSampler([5, 20], [1.0, 3.0], 10, seed=3, rank=r, world_size=world_size)
                for r in range(world_size)]
    for sampler in samplers:
        sampler.set_epoch(4)
    full = mixture_order([5, 20], [1.0, 3.0], 10, seed=3, epoch=4).tolist()
    shares = [list(s) for s in samplers]
    per_rank = math.ceil(10 / world_size)
    assert [len(share) for share in shares] == [len(s) for s in samplers] == [per_rank] * world_size
    interleaved = [shares[r][i] for i in range(per_rank) for r in range(world_size)]
    assert interleaved == (full + full)[: per_rank * world_size]


class Items(Dataset):
    """Items ``(name, i)``; records the epoch and seed it was given."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n, self.epoch_seed = name, n, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.name, i

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        self.epoch_seed = (epoch, seed)


def test_the_mixture_dataset_joins_its_sources_end_to_end() -> None:
    a, b = Items("a", 2), Items("b", 3)
    mixture = MixtureDataset([a, b], ["a", "b"], [1.0, 2.0])
    assert len(mixture) == 5 and mixture.sizes == [2, 3]
    assert [mixture[i] for i in range(5)] == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]
    assert mixture.__getitems__([4, 0, 2, 1]) == [("b", 2), ("a", 0), ("b", 0), ("a", 1)]
    assert mixture.source_of([0, 1, 2, 4]).tolist() == [0, 0, 1, 1]
    mixture.set_epoch(3, seed=5)  # source k of n gets the run seed 5 * n + k
    assert (a.epoch_seed, b.epoch_seed) == ((3, 10), (3, 11))
    with pytest.raises(UserError, match="^data source 'b' has no utterances$"):
        MixtureDataset([a, Items("b", 0)], ["a", "b"], [1.0, 1.0])


def test_the_trainer_draws_a_mixture_or_a_fixed_epoch_size_and_else_keeps_its_shuffle() -> None:
    info = DistInfo()
    mixture = MixtureDataset([Items("a", 2), Items("b", 3)], ["a", "b"], [1.0, 2.0])
    _, sampler = make_loader(mixture, 2, info, True, 5, 0)
    assert isinstance(sampler, MixtureSampler) and (sampler.sizes, sampler.weights, len(sampler)) == (
        [2, 3], [1.0, 2.0], 5)
    _, sampler = make_loader(Items("a", 4), 2, info, True, 5, 0, draws=10)  # one partition, 10 per epoch
    assert isinstance(sampler, MixtureSampler) and (sampler.sizes, len(sampler)) == ([4], 10)
    _, sampler = make_loader(Items("a", 4), 2, info, True, 5, 0)  # one partition: as before
    assert type(sampler) is DistributedSampler
    _, sampler = make_loader(mixture, 2, info, False, 5, 0)  # dev: every item once, in order
    assert type(sampler) is DistributedSampler and list(sampler) == [0, 1, 2, 3, 4]


# --- the recipe keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "line", "message"),
    [
        ("  - {partition: train, weigth: 2}\n", 3,
         "unknown key 'data.train[0].weigth' (did you mean 'data.train[0].weight'?)"),
        ("  - {partition: train}\n  - {partition: train, weight: 0}\n", 4,
         "'data.train[1].weight' must be > 0 and finite, got 0"),
        ("  - {partition: train}\n  - {dataset: la2019, partition: train}\n", 4,
         "data.train[1]: duplicate source name 'la2019-train' (also data.train[0]); give each source its "
         "own 'name'"),
        ("  - {dataset: toy}\n", 3,
         "missing key 'data.train[0].partition' (the partition of the source's corpus)"),
        ("  - {partition: train, train: x}\n", 3, "unknown key 'data.train[0].train' (did you mean "
         "'data.train[0].train_crop'?)"),
    ],
)
def test_a_bad_source_is_a_one_line_error_at_its_line(
    tmp_path: Path, train: str, line: int, message: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"data:\n  train:\n{train}")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:{line}: {message}"


def test_sources_and_draws_can_be_set_by_override(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  train: train\n")
    cfg = load_recipe(path, ["data.dev=[{partition: dev, root: /x, name: a, train_crop: random}]",
                             "train.draws_per_epoch=100"])
    assert cfg["data"]["dev"] == [{"partition": "dev", "root": "/x", "name": "a", "train_crop": "random"}]
    assert cfg["train"]["draws_per_epoch"] == 100
    with pytest.raises(UserError, match=r"'data.train' must name a partition or list at least one source"):
        load_recipe(path, ["data.train=[]"])


# --- a run on two corpora -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A toy corpus and a generated 2019 LA one (4 train, 4 dev each; the LA one also 2 eval) with F0
    stores (24 frames) of both under ``feats``; the toy corpus is registered in this process and, through
    ANTISPOOF_CORPORA and PYTHONPATH, in subprocesses."""
    import toy_corpus

    import preprocess
    from data.demo.__main__ import main as generate_demo

    base = tmp_path_factory.mktemp("two_corpora")
    roots = {"toy": base / "toy", "la2019": base / "LA", "feats": base / "feats"}
    register_corpus(toy_corpus.ToyCorpus)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ANTISPOOF_CORPORA", "toy_corpus")
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        toy_corpus.write_toy_corpus(roots["toy"], {"train": 4, "dev": 4})
        generate_demo(["--out", str(roots["la2019"]), "--n-train", "4", "--n-dev", "4", "--n-eval", "2",
                       "--workers", "1", "--no-progress"])
        config = mixed_recipe(base, roots)
        for dataset in ("toy", "la2019"):
            assert preprocess.main(["--config", str(config), "--dataset", dataset, "--data-root",
                                    str(roots[dataset]), "--partitions", "train", "dev", "--out",
                                    str(roots["feats"]), "--num-workers", "0", "--no-progress"]) == 0
        yield {**roots, "config": config}
    unregister_corpus(toy_corpus.NAME)


def mixed_recipe(folder: Path, roots: dict[str, Path]) -> Path:
    """A tiny F0 (24 frames) + LCNN recipe training on both corpora (weights 1 and 2) and selecting on
    both dev partitions."""
    def sources(partition: str) -> list[dict]:
        return [{"dataset": "toy", "partition": partition, "root": str(roots["toy"])},
                {"dataset": "la2019", "partition": partition, "root": str(roots["la2019"]), "weight": 2.0,
                 "name": f"la-{partition}"}]

    return recipe(folder, "demo_xlsr_lcnn", frontend={"name": "f0", "n_frames": 24},
                  model={"name": "lcnn", "input_shape": [1, 45, 24]},
                  data={"dataset": "la2019", "train": sources("train"), "dev": sources("dev")})


def test_sources_open_from_their_own_roots_and_must_not_share_utterances(
    two_corpora: dict[str, Path],
) -> None:
    cfg = load_recipe(two_corpora["config"])
    dev = open_sources(cfg, cfg["data"]["dev"], key="dev", on_the_fly=True)  # no --data-root: each its own
    assert isinstance(dev, MixtureDataset) and (dev.names, dev.sizes, dev.weights) == (
        ["toy-dev", "la-dev"], [4, 4], [1.0, 2.0])
    assert [r.utt_id for r in dev.parts[0].rows] == ["dev_000", "dev_001", "dev_002", "dev_003"]
    assert dev.parts[1].rows[0].path.startswith(str(two_corpora["la2019"]))
    twice = [{"dataset": "toy", "partition": "dev", "root": str(two_corpora["toy"]), "name": name}
             for name in ("a", "b")]
    with pytest.raises(UserError) as err:
        open_sources(cfg, twice, key="dev", on_the_fly=True)
    assert str(err.value) == ("config: data.dev: sources 'a' and 'b' both hold utterance dev_000; "
                              "list each utterance in one source only")


def test_a_run_on_two_corpora_resumes_after_sigkill_to_the_same_weights_and_history(
    two_corpora: dict[str, Path], tmp_path: Path
) -> None:
    args = ["--config", str(two_corpora["config"]), "--features", str(two_corpora["feats"]), "train.epochs=2",
            "train.draws_per_epoch=8", "train.amp=none", "train.compile=false", *COMMON]
    kill_after_first_epoch_then_resume(args, tmp_path, epochs=2)
    run = tmp_path / "straight"
    with open(run / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert list(history[0])[-2:] == ["dev_eer_toy-dev", "dev_eer_la-dev"]
    summary = json.loads((run / "summary.json").read_text())
    best = history[summary["best_epoch"] - 1]
    # scores_dev.txt holds best.pt's pooled dev scores: split by corpus (toy ids start with 'dev_')
    scores = read_scores(run / "scores_dev.txt")

    def eer(mask: np.ndarray) -> float:
        keys, values = scores.keys[mask], scores.scores[mask]
        return compute_eer(values[keys == "bonafide"], values[keys == "spoof"])[0]

    toy, la = np.char.startswith(scores.utt_ids, "dev_"), np.char.startswith(scores.utt_ids, "LA_D_")
    assert (toy.sum(), la.sum(), len(scores.utt_ids)) == (4, 4, 8)
    expected = {"toy-dev": eer(toy), "la-dev": eer(la)}
    for name, value in expected.items():
        assert float(best[f"dev_eer_{name}"]) == pytest.approx(value, abs=1e-12)
    assert float(best["dev_eer"]) == pytest.approx(eer(toy | la), abs=1e-12)
    assert summary["dev_eer_sources"] == pytest.approx(expected, abs=1e-12)
    assert summary["dev_eer"] == pytest.approx(float(best["dev_eer"]), abs=1e-12)


def test_a_manifest_source_trains_beside_a_corpus_with_its_own_dev_eer(
    two_corpora: dict[str, Path], tmp_path: Path
) -> None:
    """A source ``{dataset: manifest, manifests: {...}}`` next to the 2019 LA one, from audio (F0 on the
    fly): its rows come from its manifest, draws follow the weights, and history.csv's dev_eer_<name>
    columns are the EERs of each source's share of scores_dev.txt."""
    import toy_corpus

    import main_train

    mine = tmp_path / "mine"
    written = toy_corpus.write_toy_corpus(mine, {"train": 4, "dev": 5}, seed=1)
    manifests = {}
    for partition, rows in written.items():
        lines = ["path,label"] + [f"{Path(r.path).relative_to(mine)},{r.key}" for r in rows]
        manifests[partition] = mine / f"{partition}.csv"
        manifests[partition].write_text("\n".join(lines) + "\n")

    def sources(partition: str) -> list[dict]:
        return [{"dataset": "la2019", "partition": partition, "root": str(two_corpora["la2019"]),
                 "name": "la"},
                {"dataset": "manifest", "partition": partition, "weight": 3.0, "name": "mine",
                 "manifests": {partition: str(manifests[partition])}}]

    config = recipe(tmp_path, "demo_xlsr_lcnn", frontend={"name": "f0", "n_frames": 24},
                    model={"name": "lcnn", "input_shape": [1, 45, 24]},
                    data={"dataset": "la2019", "train": sources("train"), "dev": sources("dev")})
    cfg = load_recipe(config)
    train = open_sources(cfg, cfg["data"]["train"], on_the_fly=True, training=True)
    assert (train.names, train.sizes, train.weights) == (["la", "mine"], [4, 4], [1.0, 3.0])
    assert [r.utt_id for r in train.parts[1].rows] == [
        "audio/train/g/train_000", "audio/train/f/train_001", "audio/train/f/train_002",
        "audio/train/g/train_003"]
    draws = mixture_order(train.sizes, train.weights, 8, seed=0, epoch=0)
    assert ((draws < 4).sum().item(), (draws >= 4).sum().item()) == (1, 7)  # weights 1:3, 8 draws

    run = tmp_path / "run"
    assert main_train.main(["--config", str(config), "--on-the-fly", "--out", str(run), "train.epochs=1",
                            "train.draws_per_epoch=8", "train.amp=none", "train.compile=false", *COMMON]) == 0
    with open(run / "history.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert list(row)[-2:] == ["dev_eer_la", "dev_eer_mine"]
    scores = read_scores(run / "scores_dev.txt")
    la, own = np.char.startswith(scores.utt_ids, "LA_D_"), np.char.startswith(scores.utt_ids, "audio/dev/")
    assert (la.sum(), own.sum(), len(scores.utt_ids)) == (4, 5, 9)
    for name, mask in (("la", la), ("mine", own)):
        keys, values = scores.keys[mask], scores.scores[mask]
        expected = compute_eer(values[keys == "bonafide"], values[keys == "spoof"])[0]
        assert float(row[f"dev_eer_{name}"]) == pytest.approx(expected, abs=1e-12)
    assert load_recipe(run / "config.yaml")["data"]["dev"][1]["manifests"] == {"dev": str(manifests["dev"])}
