"""The synthetic data generator: feature sampler, labeling rules, class mixes, files, card, CLI."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from demo_kit.rules import RULES, V3_PARAMETERS, label_event, volatile
from demo_kit import sample_data as sd
from processor.io import sha256_file
from processor.schema import FEATURES, LABELS, SESSIONS

from conftest import read_jsonl

FILES = ("train.jsonl", "val.jsonl", "data_card.json")


def _load_split(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Imported lazily: processor.data belongs to another module owner; without it these tests skip.
    data = pytest.importorskip("processor.data")
    return data.load_split(out / "train.jsonl", out / "val.jsonl")


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "default"
    sd.write_sample_data(out)
    return out


@pytest.fixture(scope="module")
def big_features() -> pd.DataFrame:
    return pd.DataFrame(sd.sample_features(20_000, np.random.default_rng(123)))


# ------------------------------------------------------------------------------------ feature sampler


def test_sample_features_python_types_and_key_order() -> None:
    rows = sd.sample_features(300, np.random.default_rng(0))
    assert len(rows) == 300
    for row in rows:
        assert tuple(row) == FEATURES
        for key in ("ext_dir", "int_dir", "mgann_leg_index"):
            assert type(row[key]) is int
        for key in ("ext_choch_up", "ext_choch_down", "fvg_up", "fvg_down", "fvg_retest",
                    "mgann_leg_first_fvg", "pb_wave_strength_ok"):
            assert type(row[key]) is bool
        assert type(row["wave_strength"]) is float and type(row["atr"]) is float
        assert type(row["session"]) is str
    assert sd.sample_features(0, np.random.default_rng(0)) == []


def test_sample_features_contract_valid(tmp_path: Path) -> None:
    data = pytest.importorskip("processor.data")
    rows = sd.sample_features(500, np.random.default_rng(1))
    path = tmp_path / "unlabeled.jsonl"
    path.write_text("".join(json.dumps({"id": f"u{i}", **r}) + "\n" for i, r in enumerate(rows)), encoding="utf-8")
    frame = data.load_events(path, labeled=False)
    assert len(frame) == 500
    assert frame[list(FEATURES)].to_dict("records") == rows


def test_sample_features_deterministic_by_generator_state() -> None:
    a = sd.sample_features(200, np.random.default_rng(7))
    b = sd.sample_features(200, np.random.default_rng(7))
    c = sd.sample_features(200, np.random.default_rng(8))
    assert a == b
    assert a != c


def test_sample_features_invariants(big_features: pd.DataFrame) -> None:
    d = big_features
    assert set(d["ext_dir"]) <= {-1, 0, 1} and set(d["int_dir"]) <= {-1, 0, 1}
    assert not (d["ext_choch_up"] & d["ext_choch_down"]).any()
    assert not (d["fvg_up"] & d["fvg_down"]).any()
    has_fvg = d["fvg_up"] | d["fvg_down"]
    assert not (d["mgann_leg_first_fvg"] & ~has_fvg).any()
    no_structure = (d["ext_dir"] == 0) & (d["int_dir"] == 0)
    assert (d.loc[no_structure, "mgann_leg_index"] == 0).all()
    assert d.loc[~no_structure, "mgann_leg_index"].between(1, 100).all()
    ws = d["wave_strength"]
    assert ws.between(0.0, 1.0).all()
    assert ((ws * 100).round() / 100 == ws).all()  # exactly 2 decimals
    assert (d["atr"] > 0).all() and np.isfinite(d["atr"]).all()
    assert set(d["session"]) <= set(SESSIONS)


def test_sample_features_marginals(big_features: pd.DataFrame) -> None:
    d = big_features
    sessions = d["session"].value_counts(normalize=True)
    for session, target in zip(SESSIONS, sd.SESSION_P, strict=True):
        assert sessions[session] == pytest.approx(target, abs=0.02)
    ext = d["ext_dir"].value_counts(normalize=True)
    assert ext[-1] == pytest.approx(0.4, abs=0.02)
    assert ext[0] == pytest.approx(0.2, abs=0.02)
    assert ext[1] == pytest.approx(0.4, abs=0.02)


def test_sample_features_dependencies(big_features: pd.DataFrame) -> None:
    d = big_features
    bull, bear = d["ext_dir"] == 1, d["ext_dir"] == -1
    assert (d.loc[bull, "int_dir"] == 1).mean() > 0.5  # internal structure mostly follows the swing
    assert d.loc[bull, "ext_choch_up"].mean() > 3 * d.loc[bear, "ext_choch_up"].mean()
    assert d.loc[bear, "ext_choch_down"].mean() > 3 * d.loc[bull, "ext_choch_down"].mean()
    assert d.loc[d["int_dir"] == 1, "fvg_up"].mean() > 3 * d.loc[d["int_dir"] == -1, "fvg_up"].mean()
    has_fvg = d["fvg_up"] | d["fvg_down"]
    assert d.loc[has_fvg, "fvg_retest"].mean() > 5 * d.loc[~has_fvg, "fvg_retest"].mean()
    early = has_fvg & d["mgann_leg_index"].between(1, 2)
    late = has_fvg & (d["mgann_leg_index"] >= 5)
    assert d.loc[early, "mgann_leg_first_fvg"].mean() > d.loc[late, "mgann_leg_first_fvg"].mean()
    choch = d["ext_choch_up"] | d["ext_choch_down"]
    assert d.loc[choch, "wave_strength"].mean() > d.loc[~choch, "wave_strength"].mean() + 0.05
    agree = d["pb_wave_strength_ok"] == (d["wave_strength"] >= 0.5)
    assert 0.7 < agree.mean() < 1.0  # mostly agrees, but is its own indicator


def test_atr_scale_follows_symbol() -> None:
    data = sd.generate(n=3000, seed=5)
    frame = pd.DataFrame(data.train + data.val)
    medians = frame.groupby("symbol")["atr"].median()
    assert set(medians.index) == set(sd.SYMBOL_ATR)
    for symbol, expected in sd.SYMBOL_ATR.items():
        assert expected / 1.5 < medians[symbol] < expected * 1.5
    digits = frame["atr"].map(lambda x: len(f"{x:.6e}".split("e")[0].replace(".", "").rstrip("0")))
    assert digits.max() <= 4


# ------------------------------------------------------------------------------------ labeling rules

BASE = {
    "ext_dir": 1, "int_dir": 1, "ext_choch_up": True, "ext_choch_down": False, "fvg_up": False,
    "fvg_down": False, "fvg_retest": False, "mgann_leg_index": 2, "mgann_leg_first_fvg": False,
    "pb_wave_strength_ok": True, "wave_strength": 0.4, "atr": 0.0011, "session": "london",
}


def _mirror(f: dict) -> dict:
    m = dict(f)
    m["ext_dir"], m["int_dir"] = -f["ext_dir"], -f["int_dir"]
    m["ext_choch_up"], m["ext_choch_down"] = f["ext_choch_down"], f["ext_choch_up"]
    m["fvg_up"], m["fvg_down"] = f["fvg_down"], f["fvg_up"]
    return m


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "long"),
        ({"ext_dir": 0}, "no_trade"),
        ({"ext_dir": -1}, "no_trade"),
        ({"ext_choch_up": False}, "no_trade"),
        ({"ext_choch_up": False, "fvg_up": True}, "no_trade"),  # an FVG needs its retest
        ({"ext_choch_up": False, "fvg_up": True, "fvg_retest": True}, "long"),
        ({"pb_wave_strength_ok": False}, "no_trade"),
        ({"session": "new_york"}, "long"),
        ({"session": "asia"}, "no_trade"),
        ({"session": "asia", "wave_strength": 0.64}, "no_trade"),
        ({"session": "asia", "wave_strength": 0.65}, "long"),
        ({"atr": 12.0}, "long"),
        ({"int_dir": -1, "mgann_leg_index": 40}, "long"),  # v1 ignores these
    ],
)
def test_rules_v1(change: dict, expected: str) -> None:
    event = {**BASE, **change}
    assert label_event(event, "v1") == expected
    mirrored = {"long": "short", "short": "long", "no_trade": "no_trade"}[expected]
    assert label_event(_mirror(event), "v1") == mirrored


V2_BASE = {**BASE, "ext_dir": 0, "ext_choch_up": False, "fvg_up": True, "mgann_leg_first_fvg": True,
           "mgann_leg_index": 3, "pb_wave_strength_ok": False, "session": "asia", "wave_strength": 0.1}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "long"),
        ({"int_dir": 0}, "no_trade"),
        ({"int_dir": -1}, "no_trade"),
        ({"fvg_up": False}, "no_trade"),
        ({"mgann_leg_first_fvg": False}, "no_trade"),
        ({"mgann_leg_index": 4}, "no_trade"),
        ({"mgann_leg_index": 0}, "no_trade"),
        ({"mgann_leg_index": 1}, "long"),
        ({"ext_dir": -1, "ext_choch_down": True, "fvg_retest": True}, "long"),  # v2 ignores these
    ],
)
def test_rules_v2(change: dict, expected: str) -> None:
    event = {**V2_BASE, **change}
    assert label_event(event, "v2") == expected
    mirrored = {"long": "short", "short": "long", "no_trade": "no_trade"}[expected]
    assert label_event(_mirror(event), "v2") == mirrored


# v3: london, calm (atr 0.0011 < the FX reference 1.25e-3): cut-off 70. Score of V3_BASE:
# wave 0 + int_dir with +40 + FVG with +30 + pullback ok +25 = 95.
V3_BASE = {**BASE, "ext_choch_up": False, "fvg_up": True, "wave_strength": 0.5, "mgann_leg_index": 3}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "long"),
        ({"ext_dir": 0}, "no_trade"),
        ({"mgann_leg_index": 1}, "no_trade"),  # the leg window 2..5, open at both ends
        ({"mgann_leg_index": 2}, "long"),
        ({"mgann_leg_index": 5}, "long"),
        ({"mgann_leg_index": 6}, "no_trade"),
        ({"wave_strength": 0.25}, "long"),  # score 70: exactly the London/calm cut-off
        ({"wave_strength": 0.24}, "no_trade"),
        ({"int_dir": -1}, "no_trade"),  # 95 - 40 - 30
        ({"int_dir": 0, "wave_strength": 0.65}, "long"),  # 55 + 15
        ({"ext_choch_down": True}, "no_trade"),  # a CHoCH against the trade: 95 - 45
        ({"fvg_up": False, "ext_choch_up": True}, "long"),  # 95 - 30 + 45
        ({"fvg_retest": True, "wave_strength": 0.05}, "long"),  # 95 - 45 + 20 = 70
        ({"mgann_leg_first_fvg": True, "wave_strength": 0.05}, "long"),
        ({"pb_wave_strength_ok": False, "wave_strength": 0.49}, "no_trade"),  # 95 - 1 - 25 = 69
        # The cut-off depends on session x volatility, and not additively.
        ({"session": "new_york", "wave_strength": 0.15}, "long"),  # 60 >= 60
        ({"wave_strength": 0.15}, "no_trade"),  # London: 60 < 70
        ({"atr": 0.0013, "wave_strength": 0.35}, "long"),  # London/volatile: 80
        ({"atr": 0.0013, "wave_strength": 0.34}, "no_trade"),
        ({"session": "asia"}, "long"),  # Asia/calm: 95
        ({"session": "asia", "wave_strength": 0.49}, "no_trade"),
        ({"session": "asia", "atr": 0.0013, "wave_strength": 0.25}, "long"),  # Asia/volatile: 70
        ({"session": "new_york", "atr": 0.0013, "wave_strength": 0.39}, "no_trade"),  # NY/volatile: 85
        ({"atr": 3.5, "wave_strength": 0.35}, "long"),  # gold band, volatile: 80
        ({"atr": 2.5, "wave_strength": 0.25}, "long"),  # gold band, calm: 70
        ({"atr": 2.5, "wave_strength": 0.24}, "no_trade"),
    ],
)
def test_rules_v3(change: dict, expected: str) -> None:
    event = {**V3_BASE, **change}
    assert label_event(event, "v3") == expected
    mirrored = {"long": "short", "short": "long", "no_trade": "no_trade"}[expected]
    assert label_event(_mirror(event), "v3") == mirrored


@pytest.mark.parametrize(
    ("atr", "is_volatile"),
    [(0.00125, True), (0.001249, False), (0.019, True), (0.02, False), (0.16, True), (0.69, True),
     (0.7, False), (3.0, True), (5.9, True), (6.0, False), (12.0, True), (11.9, False)],
)
def test_v3_volatility_regime_by_scale_band(atr: float, is_volatile: bool) -> None:
    assert volatile(atr) is is_volatile


def test_v3_label_shares_and_independence(big_features: pd.DataFrame) -> None:
    rows = big_features.to_dict("records")
    v3 = pd.Series([label_event(r, "v3") for r in rows])
    shares = v3.value_counts(normalize=True)
    for cls in ("long", "short"):
        assert 0.09 < shares[cls] < 0.14
    assert 0.72 < shares["no_trade"] < 0.82
    # A rule set of its own, not a relabeling of v1 or v2.
    for other in ("v1", "v2"):
        assert (v3 != pd.Series([label_event(r, other) for r in rows])).mean() > 0.15
    # The cut-off interaction shows in the data: the session with the highest long share flips with
    # the volatility regime (Asia is the most selective when calm, the least when volatile).
    frame = big_features.assign(v3=v3, vol=big_features["atr"].map(volatile))
    long_share = frame.assign(is_long=frame["v3"] == "long").groupby(["vol", "session"])["is_long"].mean()
    assert long_share[False].idxmin() == "asia" and long_share[True].idxmax() == "asia"


def test_rule_sets_disagree_and_accept_coerced_values() -> None:
    assert label_event(BASE, "v1") != label_event(BASE, "v2")
    as_ints = {k: int(v) if isinstance(v, bool) else v for k, v in BASE.items()}
    assert label_event(as_ints, "v1") == label_event(BASE, "v1")
    with pytest.raises(ValueError, match="unknown rules 'v9'"):
        label_event(BASE, "v9")


# ------------------------------------------------------------------------------------ generation


def test_generate_deterministic_and_seed_sensitive() -> None:
    a, b = sd.generate(n=400, seed=3), sd.generate(n=400, seed=3)
    assert a == b
    assert sd.generate(n=400, seed=4).train != a.train


def test_write_is_byte_identical_for_a_seed(tmp_path: Path, default_dir: Path) -> None:
    sd.write_sample_data(tmp_path / "again")
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (default_dir / name).read_bytes()
    sd.write_sample_data(tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (default_dir / "train.jsonl").read_bytes()
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(FILES)  # no temp files left


def test_written_files_are_contract_valid(default_dir: Path) -> None:
    train, val = _load_split(default_dir)  # raises ContractError on any problem, ids across files too
    card = json.loads((default_dir / "data_card.json").read_text(encoding="utf-8"))
    assert (len(train), len(val)) == (card["n_train"], card["n_val"]) == (1040, 260)


def test_records_shape(default_dir: Path) -> None:
    train = read_jsonl(default_dir / "train.jsonl")
    val = read_jsonl(default_dir / "val.jsonl")
    for record in train + val:
        assert tuple(record) == ("id", "timestamp", "symbol", *FEATURES, "label")
        assert record["label"] in LABELS
    ids = [r["id"] for r in train + val]
    assert len(set(ids)) == len(ids)
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    # Chronological split: ids and timestamps increase through train and on into val.
    times = [datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for r in train + val]
    assert all(r["timestamp"].endswith("Z") for r in train + val)
    assert all(t1 < t2 for t1, t2 in zip(times, times[1:]))
    assert ids == sorted(ids)
    for record, t in zip(train + val, times, strict=True):
        h0, h1 = sd.SESSION_HOURS[record["session"]]
        assert h0 <= t.hour < h1 and t.weekday() < 5


def test_noise_free_labels_follow_the_rules() -> None:
    data = sd.generate(n=600, seed=2, noise=0.0, rules="v2")
    for record in data.train + data.val:
        assert record["label"] == label_event(record, "v2")
    assert data.card["bayes_ceiling"] == 1.0
    assert data.card["labels_flipped_by_noise"] == 0


def test_label_noise_is_symmetric_and_at_the_requested_rate() -> None:
    noise = 0.3
    data = sd.generate(n=4000, seed=9, noise=noise)
    records = data.train + data.val
    clean = [label_event(r, "v1") for r in records]
    flipped = [(c, r["label"]) for c, r in zip(clean, records, strict=True) if c != r["label"]]
    assert len(flipped) == data.card["labels_flipped_by_noise"]
    sd_rate = np.sqrt(noise * (1 - noise) / len(records))
    assert abs(len(flipped) / len(records) - noise) < 4 * sd_rate
    # From no_trade, both other classes are equally likely targets.
    targets = pd.Series([new for old, new in flipped if old == "no_trade"]).value_counts(normalize=True)
    assert targets["long"] == pytest.approx(0.5, abs=0.06)
    every = sd.generate(n=300, seed=9, noise=1.0)
    assert all(r["label"] != label_event(r, "v1") for r in every.train + every.val)


def _shares(labels: list[str]) -> dict[str, float]:
    counts = pd.Series(labels).value_counts()
    return {c: counts.get(c, 0) / len(labels) for c in LABELS}


def test_default_mix_needs_oversampling(default_dir: Path) -> None:
    train = read_jsonl(default_dir / "train.jsonl")
    shares = _shares([r["label"] for r in train])
    assert 0.60 <= shares["no_trade"] <= 0.72
    for cls in ("long", "short"):
        assert 0.13 <= shares[cls] < 0.25


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("mix", ["rare", "balanced"])
def test_mix_targets(rules: str, mix: str) -> None:
    n, noise = 1300, 0.1
    data = sd.generate(n=n, seed=11, noise=noise, rules=rules, mix=mix)
    records = data.train + data.val
    clean = _shares([label_event(r, rules) for r in records])
    observed = _shares([r["label"] for r in records])
    for cls, target in zip(LABELS, sd.MIXES[mix], strict=True):
        assert clean[cls] == pytest.approx(target, abs=1 / n)  # exact up to rounding
        expected = target * (1 - 1.5 * noise) + noise / 2
        assert observed[cls] == pytest.approx(expected, abs=0.035)
    # Events stay spread over time: the rare classes are not bunched at one end.
    first_half = _shares([label_event(r, rules) for r in records[: n // 2]])
    assert first_half["long"] == pytest.approx(clean["long"], abs=0.04)


def test_rare_mix_is_rarer_than_default() -> None:
    rare = sd.generate(seed=4, mix="rare").card["train"]["shares"]
    default = sd.generate(seed=4).card["train"]["shares"]
    assert rare["long"] < default["long"] and rare["short"] < default["short"]
    assert max(rare["long"], rare["short"]) < 0.13


def test_data_card_matches_files(default_dir: Path) -> None:
    card = json.loads((default_dir / "data_card.json").read_text(encoding="utf-8"))
    assert {k: card[k] for k in ("rules", "mix", "noise", "seed", "n", "val_fraction")} == {
        "rules": "v1", "mix": "default", "noise": 0.1, "seed": 0, "n": 1300, "val_fraction": 0.2,
    }
    for split in ("train", "val"):
        records = read_jsonl(default_dir / f"{split}.jsonl")
        labels = [r["label"] for r in records]
        assert card[split]["counts"] == {c: labels.count(c) for c in LABELS}
        assert list(card[split]["shares"]) == list(LABELS)
        assert sum(card[split]["counts"].values()) == card[f"n_{split}"]
        clean = [label_event(r, "v1") for r in records]
        assert card[f"{split}_rule_labels"]["counts"] == {c: clean.count(c) for c in LABELS}
    for name in ("train.jsonl", "val.jsonl"):
        assert card["files"][name]["sha256"] == sha256_file(default_dir / name)


def test_bayes_ceiling_recomputed_from_files(default_dir: Path) -> None:
    from sklearn.metrics import f1_score

    card = json.loads((default_dir / "data_card.json").read_text(encoding="utf-8"))
    _, val = _load_split(default_dir)
    assert sd.bayes_ceiling(val, "v1") == pytest.approx(card["bayes_ceiling"], abs=1e-12)
    # Independently of bayes_ceiling(): relabel the reloaded features with the rules.
    predicted = [label_event(r, "v1") for r in val.to_dict("records")]
    manual = f1_score(val["label"], predicted, labels=list(LABELS), average="macro")
    assert manual == pytest.approx(card["bayes_ceiling"], abs=1e-12)
    # The rules are learnable up to the noise: the defaults leave a comfortable ceiling.
    assert 0.75 < card["bayes_ceiling"] < 1.0
    assert sd.bayes_ceiling(val, "v2") < card["bayes_ceiling"]  # the ceiling is rule-specific


def test_v3_deterministic_from_the_seed(tmp_path: Path) -> None:
    a, b = sd.generate(n=500, seed=3, rules="v3"), sd.generate(n=500, seed=3, rules="v3")
    assert a == b
    assert sd.generate(n=500, seed=4, rules="v3").train != a.train
    sd.write_sample_data(tmp_path / "a", n=500, seed=3, rules="v3", mix="rare")
    sd.write_sample_data(tmp_path / "b", n=500, seed=3, rules="v3", mix="rare")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_v3_card_records_parameters_and_ceiling() -> None:
    from sklearn.metrics import f1_score

    data = sd.generate(seed=0, rules="v3")
    assert data.card["rules_parameters"] == V3_PARAMETERS
    json.dumps(data.card, allow_nan=False)  # the open last ATR band must not become Infinity
    val = pd.DataFrame(data.val)
    predicted = [label_event(r, "v3") for r in data.val]
    manual = f1_score(val["label"], predicted, labels=list(LABELS), average="macro")
    assert data.card["bayes_ceiling"] == pytest.approx(manual, abs=1e-12)
    assert data.card["bayes_ceiling"] != pytest.approx(sd.bayes_ceiling(data.val, "v1"), abs=1e-6)
    assert 0.6 < data.card["bayes_ceiling"] < 1.0  # noise leaves a ceiling below 1
    clean = sd.generate(n=600, seed=2, noise=0.0, rules="v3")
    assert clean.card["bayes_ceiling"] == 1.0
    assert all(r["label"] == label_event(r, "v3") for r in clean.train + clean.val)
    assert "rules_parameters" not in sd.generate(n=100, seed=0).card  # v1/v2 cards unchanged


# sha256 of train.jsonl / val.jsonl as written before v3 existed: adding a rule set must not move a
# single byte of the existing data sets (their figures in README and docs/quality.md depend on them).
PINNED = {
    ("v1", "default"): ("57eb8f0ddac9cd9a384f73c412495edd02d9e4e2d24eefc3f3edd2468b4f7e35",
                        "89daa5c9217322bd2b826ed9dff51b290a91ad019861eef9a51e06398f6777a9"),
    ("v2", "rare"): ("36696268ec76e45b0175ab1441b421fc16701ec330b9868becc13bc5dc166411",
                     "53dd69ecc321ba15c5bd8abed0b7a115855d33e2ea49e7903e58f756ec80f150"),
}


@pytest.mark.parametrize(("rules", "mix"), list(PINNED))
def test_v1_v2_files_pinned(tmp_path: Path, rules: str, mix: str) -> None:
    sd.write_sample_data(tmp_path, seed=0, rules=rules, mix=mix)
    assert (sha256_file(tmp_path / "train.jsonl"), sha256_file(tmp_path / "val.jsonl")) == PINNED[(rules, mix)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -5}, "n must be an integer >= 2"),
        ({"val_fraction": 0.0}, "val_fraction must be strictly between 0 and 1"),
        ({"val_fraction": 1.0}, "val_fraction must be strictly between 0 and 1"),
        ({"noise": 1.5}, "noise must be between 0 and 1"),
        ({"rules": "v9"}, "unknown rules 'v9'"),
        ({"mix": "odd"}, "unknown mix 'odd'"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"n": 3, "val_fraction": 0.1}, "both must be at least 1"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sd.generate(**kwargs)


# ------------------------------------------------------------------------------------ CLI


# `python -m demo_kit.sample_data` as a command (a child process) is test_docs.py's (the documented command,
# run and its files checked) and test_cli.py's (a mistake: exit 2, one error line, nothing written); here
# the CLI's own function, in process.
def test_cli_writes_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "data"
    assert sd.main(["--out", str(out), "--n", "300", "--seed", "4", "--rules", "v2", "--mix", "balanced"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    card = json.loads((out / "data_card.json").read_text(encoding="utf-8"))
    assert (card["n"], card["seed"], card["rules"], card["mix"]) == (300, 4, "v2", "balanced")
    assert "Bayes ceiling" in capsys.readouterr().out
    in_memory = sd.generate(n=300, seed=4, rules="v2", mix="balanced")
    assert read_jsonl(out / "train.jsonl") == in_memory.train


def test_cli_bad_argument_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sd.main(["--out", str(tmp_path / "x"), "--n", "-10"]) == 2
    err = capsys.readouterr().err
    assert "n must be an integer >= 2" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "-1"], "n must be an integer >= 2"),
        (["--val-fraction", "0"], "val_fraction must be strictly between 0 and 1"),
        (["--val-fraction", "1.5"], "val_fraction must be strictly between 0 and 1"),
        (["--rules", "v7"], "invalid choice: 'v7'"),
        (["--mix", "weird"], "invalid choice: 'weird'"),
        (["--n", "many"], "invalid int value: 'many'"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str], message: str) -> None:
    try:  # argparse's own checks (types, choices) exit via SystemExit, the value checks return the code
        code = sd.main(["--out", str(tmp_path / "out"), *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_accepts_rules_v3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sd.main(["--out", str(tmp_path / "v3"), "--n", "300", "--seed", "5", "--rules", "v3"]) == 0
    card = json.loads((tmp_path / "v3" / "data_card.json").read_text(encoding="utf-8"))
    assert card["rules"] == "v3" and card["rules_parameters"] == V3_PARAMETERS
    assert f"Bayes ceiling (val macro-F1 of the rules): {card['bayes_ceiling']:.3f}" in capsys.readouterr().out
    assert read_jsonl(tmp_path / "v3" / "train.jsonl") == sd.generate(n=300, seed=5, rules="v3").train


def test_cli_unwritable_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory", encoding="utf-8")
    assert sd.main(["--out", str(blocker / "sub"), "--n", "50"]) == 1
    assert "cannot write the sample data" in capsys.readouterr().err


def test_an_event_exactly_one_embargo_after_the_last_train_event_is_kept():
    # The embargo drops val events *less than* embargo_bars bars after the last train event: one a
    # minute short of it is dropped, one exactly at it is the first val event kept.
    start = pd.Timestamp("2024-03-04T10:00:00Z")
    embargo = sd._BAR * 12
    offsets = [-sd._BAR * 2, -sd._BAR, pd.Timedelta(0),  # train; the last at `start`
               embargo - pd.Timedelta(minutes=1), embargo, embargo + sd._BAR]  # val
    stamps = [(start + o).isoformat() for o in offsets]
    train, val, card = sd._split_masks(6, 3, "time", 12, stamps, np.random.default_rng(0))
    assert train.tolist() == [True, True, True, False, False, False]
    assert val.tolist() == [False, False, False, False, True, True]
    assert card["dropped_by_embargo"] == 1 and card["gap_minutes"] == 60.0
