"""Which measurable criteria a label rests on: named by the catalog, or resolved from its text.

A catalog label that names its ``criteria`` (even ``[]``) gets exactly those. Any other label
text is resolved by sentence similarity (frozen MiniLM, the model's own text tower, cosine of
mean-pooled features) to the criteria's sentences and paraphrases, conservatively, because
text similarity is exactly what confuses "early repolarization" with ST elevation:

1. a negated text ("no atrial fibrillation", "without ...", "absence of ...") takes none;
2. the nearest phrase must reach :data:`MATCH_THRESHOLD`, and must not be one of a
   criterion's ``near_misses`` (phrases that sound close but name something else);
3. the nearest phrase of a *different* criterion must be at least :data:`MATCH_MARGIN` less
   similar (an ambiguous text takes none), unless one criterion is part of the other;
4. a text that does not match as a whole may be a combination ("sinus bradycardia with first
   degree AV block"): split at "with", "and", "plus", commas; it resolves only when every
   part resolves, to all their criteria together (all must hold); a part that offers
   alternatives ("consider lateral injury or acute infarct") makes it resolve to none.

A label that resolves to nothing keeps its pure embedding score.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.catalog import Label
from models.criteria import CriteriaCatalog, Reference, Rule

#: Cosine (MiniLM mean pooling) a label text needs with a criterion phrase. Paraphrases of
#: the same finding score about 0.75-1.0 with their criterion phrases; different findings
#: that share words ("sinus bradycardia" / "sinus tachycardia") 0.6-0.85, which is why
#: the margin below matters as much as this threshold.
MATCH_THRESHOLD = 0.80
#: The best criterion must beat every other criterion's best phrase by this much.
MATCH_MARGIN = 0.04
NEGATION = re.compile(
    r"\b(no|not|without|absence of|absent|excluded|rule[sd]? out|negative for|free of)\b",
    re.IGNORECASE,
)
SPLIT = re.compile(r"\s*(?:,|;|\+|\bwith\b|\band\b|\bplus\b)\s*", re.IGNORECASE)
#: Alternatives ("consider lateral injury or acute infarct"): a part of a combination that
#: offers a choice names neither for certain, so the combination takes none. "120 ms or
#: more" is a threshold, not a choice.
ALTERNATIVE = re.compile(
    r"\bor\b(?!\s+(?:more|less|longer|shorter|greater|higher|lower|above|below|over|under)\b)",
    re.IGNORECASE,
)

#: A trailing parenthesis: label lists write "right axis deviation (RAD)".
TRAILING_PARENTHESIS = re.compile(r"^(?P<words>.+?)\s*\((?P<inner>[^()]{1,12})\)\s*$")


def without_abbreviation(text: str) -> str:
    """``text`` without a trailing parenthesised abbreviation of its own words.

    "right axis deviation (rad)" -> "right axis deviation": the abbreviation adds nothing,
    and embedded with the words it drew the text towards "extreme right axis deviation"
    (ambiguous, no criterion). Only an abbreviation is dropped: its letters must be the
    words' initials in order, starting with the first ("lvh (strain)" keeps "strain").
    """
    found = TRAILING_PARENTHESIS.match(text)
    if found is None:
        return text
    letters = [c for c in found["inner"].lower() if c.isalnum()]
    initials = [w[0] for w in re.split(r"[\s\-/]+", found["words"].lower()) if w]
    if len(letters) < 2 or not initials or letters[0] != initials[0]:
        return text
    rest = iter(initials)
    return found["words"] if all(c in rest for c in letters) else text


How = Literal["catalog", "text", "combination", "weak", "near_miss", "ambiguous", "negated"]


@dataclass(frozen=True)
class Resolution:
    """The criteria a label rests on, and why (``how``), for the result and the audit."""

    criteria: tuple[str, ...]
    how: How
    similarity: float | None = None
    matched: str | None = None  # the phrase it matched (or the near miss that stopped it)


class CriteriaResolver:
    """Resolves labels to criteria. ``encode`` maps texts to (n, d) sentence features."""

    def __init__(
        self,
        criteria: CriteriaCatalog,
        encode: Callable[[Sequence[str]], np.ndarray],
        threshold: float = MATCH_THRESHOLD,
        margin: float = MATCH_MARGIN,
    ) -> None:
        self.criteria = criteria
        self.encode = encode
        self.threshold = threshold
        self.margin = margin
        phrases: list[str] = []
        owners: list[tuple[str, bool]] = []  # (criterion id, is a near miss)
        for criterion in criteria:
            for phrase in criterion.phrases:
                phrases.append(phrase)
                owners.append((criterion.id, False))
        own = {p.lower() for c in criteria for p in c.phrases}
        for criterion in criteria:
            for phrase in criterion.near_misses:
                if phrase.lower() in own:  # another criterion's own phrase: matching it is right
                    continue
                phrases.append(phrase)
                owners.append((criterion.id, True))
        self._phrases = phrases
        self._owners = owners
        self._matrix: np.ndarray | None = None
        self._cache: dict[str, Resolution] = {}

    @property
    def phrases(self) -> tuple[str, ...]:
        """Every text the resolver embeds (shipped in the text cache)."""
        return tuple(self._phrases)

    def _features(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.encode(list(texts)), dtype=np.float64)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def resolve(self, label: Label) -> Resolution:
        if label.criteria is not None:
            return Resolution(tuple(label.criteria), "catalog")
        return self.resolve_text(label.name)

    def resolve_text(self, text: str) -> Resolution:
        key = " ".join(text.lower().split())
        cached = self._cache.get(key)
        if cached is None:
            cached = self._resolve(without_abbreviation(key))
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _resolve(self, text: str) -> Resolution:
        if NEGATION.search(text):
            return Resolution((), "negated")
        whole = self._match(text)
        if whole.criteria or whole.how == "near_miss":
            return whole
        parts = [p for p in SPLIT.split(text) if p]
        if len(parts) > 1 and not any(ALTERNATIVE.search(p) for p in parts):
            resolved = [self._match(p) for p in parts]
            if all(r.criteria for r in resolved):
                ids = tuple(dict.fromkeys(c for r in resolved for c in r.criteria))
                low = min(r.similarity or 0.0 for r in resolved)
                matched = " + ".join(r.matched or "" for r in resolved)
                return Resolution(ids, "combination", low, matched)
        return whole

    def _match(self, text: str) -> Resolution:
        if self._matrix is None:
            self._matrix = self._features(self._phrases)
        sims = self._matrix @ self._features([text])[0]
        best_per: dict[tuple[str, bool], tuple[float, int]] = {}
        for i, key in enumerate(self._owners):
            if not key[1] and contradicts(text, self._phrases[i]):
                continue  # "left" for "right", "brady" for "tachy": never the same finding
            if key not in best_per or sims[i] > best_per[key][0]:
                best_per[key] = (float(sims[i]), i)
        ranked = sorted(best_per.items(), key=lambda kv: -kv[1][0])
        if not ranked:
            return Resolution((), "weak")
        (best, near), (sim, index) = ranked[0]
        if sim < self.threshold:
            return Resolution((), "weak", sim, self._phrases[index])
        if near:
            return Resolution((), "near_miss", sim, self._phrases[index])
        if " ".join(self._phrases[index].lower().split()) == " ".join(text.split()):
            # The text is this criterion's own phrase word for word: it names it, however
            # near another criterion's phrase embeds ("very long QT interval" and "long QT
            # interval" are 0.96 apart in cosine, but only one of them is this text).
            return Resolution((best,), "text", sim, self._phrases[index])
        for (other, other_near), (other_sim, other_index) in ranked[1:]:
            if other_sim < sim - self.margin:
                break
            if other_near or other == best:
                continue
            if self._contains(best, other) or self._contains(other, best):
                continue
            both = f"{self._phrases[index]} | {self._phrases[other_index]}"
            return Resolution((), "ambiguous", sim, both)
        return Resolution((best,), "text", sim, self._phrases[index])

    def _contains(self, outer: str, inner: str) -> bool:
        """Whether criterion ``outer`` refers to ``inner`` (directly or further down)."""
        return inner in _referenced(self.criteria.get(outer).rule, self.criteria)


#: Words that make two findings opposites however similar their sentences embed. A phrase
#: with one side is never matched to a text with only the other side.
CONTRASTS: tuple[tuple[str, str], ...] = (
    (r"\bleft", r"\bright"),
    (r"brady", r"tachy"),
    (r"\bslow", r"\bfast|\brapid"),
    (r"\blong|prolong", r"\bshort|decreas"),
    (r"elevat", r"depress"),
    (r"\bfirst|\b1st", r"\bsecond|\b2nd|\bthird|\b3rd|complete heart|mobitz|wenckebach"),
    (r"\bincomplete", r"(?<!in)complete"),
    (r"\banterior", r"\bposterior"),
    # "anterolateral infarct" is not "anteroseptal infarction" (V3-V6, I, aVL vs V1-V3).
    (r"septal", r"lateral"),
    (r"\bwide|\bbroad", r"\bnarrow"),
    (r"\blow", r"\bhigh|\btall|\bincreased"),
    (r"\binver|\bnegative", r"\bpeaked|\btall|\bupright"),
    (r"\batrial", r"\bventricular"),
    (r"\bsinus", r"junctional|ectopic|idioventricular"),
    (r"\bnormal", r"\babnormal|\bborderline|\botherwise"),
    # A threshold's side: "QRS under 120 ms" is not "QRS duration of 120 ms or more".
    (
        r"\bover\b|\babove\b|\bmore than\b|\bor more\b|\bexceed|>",
        r"\bunder\b|\bbelow\b|\bless than\b|<",
    ),
    (r"\bacute\b", r"\bchronic\b|\bold\b|\bprior\b"),
)


def contradicts(text: str, phrase: str) -> bool:
    """Whether ``phrase`` has one side of a contrast that ``text`` has only the other of."""
    text, phrase = text.lower(), phrase.lower()
    for a, b in CONTRASTS:
        for one, other in ((a, b), (b, a)):
            if (
                re.search(one, phrase)
                and re.search(other, text)
                and not re.search(one, text)
                and not re.search(other, phrase)
            ):
                return True
    return False


def _referenced(rule: Rule, catalog: CriteriaCatalog) -> set[str]:
    from models.criteria import Combination

    if isinstance(rule, Reference):
        return {rule.criterion} | _referenced(catalog.get(rule.criterion).rule, catalog)
    if isinstance(rule, Combination):
        return set().union(*(_referenced(p, catalog) for p in rule.parts))
    return set()
