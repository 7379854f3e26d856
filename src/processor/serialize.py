"""Event -> text: the serialization shared by training and prediction.

Template ``words-v1`` (the default) writes every feature as ONE short word that names the feature and
its value, in a fixed order, e.g. (contract keys in brackets)::

    extup intup chuy chdn fvuy fvdn frty legc lffy pbky wsn atrc sesl
    [ext_dir] [int_dir] [ext_choch_up] [ext_choch_down] [fvg_up] [fvg_down] [fvg_retest]
    [mgann_leg_index] [mgann_leg_first_fvg] [pb_wave_strength_ok] [wave_strength] [atr] [session]

Why words, not numbers (measured, docs/quality.md): with the older ``compact-v2`` text
(``ext1 int1 choch10 fvg101 leg2 ... ws64 atr0.00112 london``) a value was spread over several digit
tokens whose count varied from event to event (``ext-1`` is one token more than ``ext1``, ``atr`` had
3 to 7 digits), so a feature sat at a different distance from the last token in every event, and a
threshold such as ``wave_strength >= 0.65`` had to be read off two digits. One word per feature gives
a fixed layout and one token per feature value in the demo base's tokenizer: 13 tokens per event
instead of 28.6 (tokens are the CPU cost on a real Qwen), and val macro-F1 rose by about 0.1.

The two continuous features become **quantile bins fitted on the training split** (before
oversampling, so duplicated rows do not move the edges): ``wave_strength`` in 20 bins, ``atr`` in 10
(its scale differs by orders of magnitude between symbols, so raw digits meant little). The fitted
edges are part of the :class:`Serializer`, stored in ``model_final.zip`` (``serving.json``) and applied
again at prediction time, so training and serving never disagree. ``mgann_leg_index`` keeps its value
up to 9 and folds 10+ into one word (the contract allows up to 100; the data rarely go past 10).

Template ``qwen-v1`` is the same layout in words that are each ONE token of Qwen's own vocabulary
(Qwen2 / Qwen2.5 / Qwen3 share it): common English words, each after a space, e.g.::

    bull up rise keep gap whole test two first strong c A London

``words-v1`` costs 28 Qwen tokens per event (Qwen's BPE splits ``chuy`` into ``ch`` + ``uy``), ``qwen-v1``
costs 13, one per feature (tests/test_qwen_template.py checks every value against the real vocabulary).
Its quantile bins are the same as ``words-v1``'s: ``wave_strength`` bins are the letters a..t, ``atr``
bins the capitals A..J, and ``mgann_leg_index`` is a number word, ``zero`` to ``nine``, then ``many``.

``compact-v2`` is still rendered for packages trained before ``words-v1`` existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processor.bins import bin_index, quantile_edges

TEMPLATE_NAME = "words-v1"  # the default
QWEN_TEMPLATE = "qwen-v1"
LEGACY_TEMPLATES = ("compact-v2",)
# Templates with quantile bins fitted on the training split, then every template this version renders.
BINNED_TEMPLATES = (TEMPLATE_NAME, QWEN_TEMPLATE)
TEMPLATES = (*BINNED_TEMPLATES, *LEGACY_TEMPLATES)

# Bins per continuous feature. 20 for wave_strength: the sample rules (and traders) threshold it, and a
# finer grid puts a bin edge close to any threshold; atr is a scale feature, 10 bins are plenty.
N_BINS: dict[str, int] = {"wave_strength": 20, "atr": 10}
LEG_CAP = 10  # mgann_leg_index 10..100 -> one word
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIRECTION = {-1: "dn", 0: "no", 1: "up"}
_SESSION = {"asia": "a", "london": "l", "new_york": "n"}
# (word prefix, contract key) for the 0/1 flags, in contract order around the other features.
_FLAG_WORDS = {
    "ext_choch_up": "chu", "ext_choch_down": "chd", "fvg_up": "fvu", "fvg_down": "fvd", "fvg_retest": "frt",
    "mgann_leg_first_fvg": "lff", "pb_wave_strength_ok": "pbk",
}


@dataclass(frozen=True)
class Serializer:
    """A template plus what was fitted for it (bin edges per continuous feature)."""

    template: str = TEMPLATE_NAME
    # feature -> interior bin edges, ascending; bin = number of edges <= value (0 .. len(edges)).
    edges: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def fit(cls, events: Iterable[Mapping[str, Any]] | Any, template: str = TEMPLATE_NAME) -> Serializer:
        """Fit the bin edges on training events (records, or a frame with the feature columns)."""
        _check_template(template)
        if template not in BINNED_TEMPLATES:
            return cls(template=template)
        columns = _columns(events, tuple(N_BINS))
        if any(len(columns[key]) == 0 for key in N_BINS):
            raise ValueError("cannot fit the serializer's bins on no events")
        # method="lower": every edge is a value seen in training (no interpolated in-between edges).
        edges = {key: quantile_edges(columns[key], n_bins, method="lower") for key, n_bins in N_BINS.items()}
        return cls(template=template, edges=edges)

    def render(self, event: Mapping[str, Any]) -> str:
        """Render one (already validated) event as model input text."""
        if self.template == "compact-v2":
            return _compact_v2(event)
        self._check_fitted()
        return self._render(event, {key: self._bin(key, event) for key in N_BINS})

    def _check_fitted(self) -> None:
        _check_template(self.template)
        if set(self.edges) != set(N_BINS):
            raise ValueError(f"serializer {self.template!r} is not fitted (bin edges for {sorted(N_BINS)} needed)")

    def _render(self, event: Mapping[str, Any], bins: Mapping[str, int]) -> str:
        if self.template == QWEN_TEMPLATE:
            return " ".join(_qwen_word(key, event, bins) for key in QWEN_WORDS)
        words = [f"ext{_DIRECTION[int(event['ext_dir'])]}", f"int{_DIRECTION[int(event['int_dir'])]}"]
        words += [f"{_FLAG_WORDS[k]}{'y' if bool(event[k]) else 'n'}"
                  for k in ("ext_choch_up", "ext_choch_down", "fvg_up", "fvg_down", "fvg_retest")]
        words.append(f"leg{_LETTERS[min(int(event['mgann_leg_index']), LEG_CAP)]}")
        words += [f"{_FLAG_WORDS[k]}{'y' if bool(event[k]) else 'n'}"
                  for k in ("mgann_leg_first_fvg", "pb_wave_strength_ok")]
        words.append(f"ws{_LETTERS[bins['wave_strength']]}")
        words.append(f"atr{_LETTERS[bins['atr']]}")
        words.append(f"ses{_SESSION[str(event['session'])]}")
        return " ".join(words)

    def render_all(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """:meth:`render` of each event, the bins of all events looked up at once."""
        events = list(events)
        if self.template == "compact-v2" or not events:
            return [self.render(e) for e in events]
        self._check_fitted()
        bins = {key: bin_index(self.edges[key], np.array([float(e[key]) for e in events])).tolist() for key in N_BINS}
        return [self._render(e, {key: b[i] for key, b in bins.items()}) for i, e in enumerate(events)]

    def _bin(self, key: str, event: Mapping[str, Any]) -> int:
        return int(bin_index(self.edges[key], float(event[key])))

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "edges": {k: list(v) for k, v in self.edges.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Serializer:
        template = str(data.get("template", ""))
        _check_template(template)
        edges = {str(k): tuple(float(x) for x in v) for k, v in dict(data.get("edges") or {}).items()}
        return cls(template=template, edges=edges)


def render_events(events: Iterable[Mapping[str, Any]], template: str = TEMPLATE_NAME) -> list[str]:
    """Texts of ``events`` with bins fitted on those same events: for synthetic corpora, benchmarks
    and tests, never for a trained model (which renders with the serializer stored in its package)."""
    events = list(events)
    return Serializer.fit(events, template=template).render_all(events)


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> float:
    """Mean number of tokens per text, as the model sees it (special tokens included, no padding)."""
    if len(texts) == 0:
        raise ValueError("count_tokens needs at least one text")
    encoded = tokenizer(list(texts), add_special_tokens=True, padding=False, truncation=False)["input_ids"]
    return float(np.mean([len(ids) for ids in encoded]))


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        known = ", ".join(repr(t) for t in TEMPLATES)
        raise ValueError(f"unknown serialization template {template!r} (this version knows {known})")


def _columns(events: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if hasattr(events, "columns"):  # a DataFrame
        return {k: events[k].to_numpy() for k in keys}
    rows = list(events)
    return {k: [row[k] for row in rows] for k in keys}


# --- qwen-v1: one Qwen token per feature -------------------------------------------------------------
# feature -> its words, indexed by value: directions by value + 1, flags by 0/1, bins and the leg index by
# number. Words differ between features (position alone would do for a fixed layout, but a word that
# also names its feature is what words-v1 measured best with). Every word is one Qwen token after a space,
# and the first feature's words are one token at the start of the text too.
QWEN_WORDS: dict[str, tuple[str, ...]] = {
    "ext_dir": ("bear", "flat", "bull"),
    "int_dir": ("down", "side", "up"),
    "ext_choch_up": ("stay", "rise"),
    "ext_choch_down": ("keep", "fall"),
    "fvg_up": ("full", "gap"),
    "fvg_down": ("whole", "hole"),
    "fvg_retest": ("skip", "test"),
    "mgann_leg_index": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "many"),
    "mgann_leg_first_fvg": ("later", "first"),
    "pb_wave_strength_ok": ("weak", "strong"),
    "wave_strength": tuple(_LETTERS[: N_BINS["wave_strength"]]),
    "atr": tuple(_LETTERS.upper()[: N_BINS["atr"]]),
    "session": ("Asia", "London", "York"),  # in _SESSION's order
}


def _qwen_word(key: str, event: Mapping[str, Any], bins: Mapping[str, int]) -> str:
    words = QWEN_WORDS[key]
    if key in bins:
        return words[bins[key]]
    if key in ("ext_dir", "int_dir"):
        return words[int(event[key]) + 1]
    if key == "mgann_leg_index":
        return words[min(int(event[key]), LEG_CAP)]
    if key == "session":
        return words[tuple(_SESSION).index(str(event[key]))]
    return words[int(bool(event[key]))]


# --- compact-v2 (packages trained before words-v1) -----------------------------------------------
_COMPACT_V2 = (
    "ext{ext_dir} int{int_dir} choch{ext_choch_up}{ext_choch_down} "
    "fvg{fvg_up}{fvg_down}{fvg_retest} leg{mgann_leg_index} first{mgann_leg_first_fvg} "
    "pb{pb_wave_strength_ok} ws{wave_strength} atr{atr} {session}"
)


def _compact_v2(event: Mapping[str, Any]) -> str:
    fields = {flag: int(bool(event[flag])) for flag in _FLAG_WORDS}
    fields.update(
        ext_dir=int(event["ext_dir"]),
        int_dir=int(event["int_dir"]),
        mgann_leg_index=int(event["mgann_leg_index"]),
        wave_strength=int(round(float(event["wave_strength"]) * 100)),
        atr=f"{float(event['atr']):.3g}",
        session=str(event["session"]),
    )
    return _COMPACT_V2.format(**fields)
