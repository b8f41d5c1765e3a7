"""A small synthetic domain for calibration tests: templated reviews, their edits, and a real lexicon model.

The classifier is a genuine (tiny) model, not a stand-in: a linear bag-of-words scorer with
a softmax over three labels, so its ICaCE on a pair is whatever the words make it.
"""

from __future__ import annotations

import numpy as np

from explainers.concepts import CEBAB_SCHEMA
from explainers.data.pool import Pool

U = "unknown"
FOOD = {"Positive": ["delicious", "tasty", "superb"], "Negative": ["bland", "stale", "awful"]}
SERVICE = {"Positive": ["friendly", "attentive", "quick"], "Negative": ["rude", "slow", "careless"]}
DISHES = ["pasta", "burger", "sushi", "steak", "tacos", "curry", "salad", "soup", "pizza", "ramen"]
STAFF = ["waiter", "server", "staff", "host", "bartender"]
PLACES = [
    "downtown",
    "by the lovely river",
    "near the dreary station",
    "on the corner",
    "in the grim mall",
    "at the charming market",
    "up the hill",
]


class LexiconClassifier:
    """Three labels (neg, mid, pos); logits from word weights; `shift` changes the model (for fingerprint tests)."""

    labels = ["neg", "mid", "pos"]

    def __init__(self, shift: float = 0.0) -> None:
        self.name = f"lexicon{shift}"
        self.weights = {w: 1.5 for w in FOOD["Positive"]} | {w: -1.7 for w in FOOD["Negative"]}
        self.weights |= {w: 0.9 for w in SERVICE["Positive"]} | {w: -1.1 for w in SERVICE["Negative"]}
        # Words no concept controls: a matched text from another review differs in them.
        self.weights |= {"lovely": 0.8, "dreary": -0.7, "grim": -0.5, "charming": 0.6}
        self.shift = shift

    def predict_proba(self, texts):
        out = []
        for t in texts:
            s = sum(self.weights.get(w.strip(".,;"), 0.0) for w in t.lower().split()) + self.shift
            z = np.array([-s, 0.3 - 0.2 * abs(s), s])
            e = np.exp(z - z.max())
            out.append(e / e.sum())
        return np.array(out)


def _text(dish: str, staff: str, place: str, food: str, service: str, r: int) -> str:
    parts = [f"We had the {dish} at a spot {place}."]
    if food != U:
        parts.append(f"The {dish} was {FOOD[food][r % 3]}.")
    if service != U:
        parts.append(f"Our {staff} was {SERVICE[service][(r // 3) % 3]}.")
    return " ".join(parts)


def synthetic_pool(n_origins: int = 60, seed: int = 0) -> Pool:
    """Each origin: one original review and one edit per concept (food and service) to another value."""
    rng = np.random.default_rng(seed)
    texts, labels, origins, ids, originals = [], [], [], [], []
    values = ["Positive", "Negative", U]
    for o in range(n_origins):
        dish, staff, place = DISHES[o % 10], STAFF[(o // 10) % 5], PLACES[int(rng.integers(len(PLACES)))]
        food, service = values[rng.integers(3)], values[rng.integers(3)]
        r = int(rng.integers(9))
        variants = [(food, service)]
        variants.append((values[(values.index(food) + 1 + rng.integers(2)) % 3], service))
        variants.append((food, values[(values.index(service) + 1 + rng.integers(2)) % 3]))
        for k, (f, s) in enumerate(variants):
            originals.append(k == 0)
            t = _text(dish, staff, place, f, s, r) + f" (visit {o})"
            texts.append(t)
            labels.append({"food": f, "service": s, "ambiance": U, "noise": U})
            origins.append(f"o{o}")
            ids.append(f"o{o}-{len(ids)}")
    pairs = []
    for i in range(len(texts)):
        for j in range(len(texts)):
            if i != j and origins[i] == origins[j]:
                diff = [c for c in labels[i] if labels[i][c] != labels[j][c]]
                if len(diff) == 1:
                    pairs.append((i, j, diff[0]))
    return Pool(texts, labels, CEBAB_SCHEMA, ids=ids, origins=origins, pairs=pairs, originals=originals)


def synthetic_domain(n_origins: int = 90):
    """The synthetic pool with a pretrained-MiniLM concept space over it: (pool, space, encoder)."""
    from explainers.embeddings import Encoder
    from explainers.matching.space import ConceptSpace

    pool = synthetic_pool(n_origins)
    enc = Encoder()
    space = ConceptSpace(pool, enc, meta={"name": "synthetic-pretrained"})
    space.build_indices()
    return pool, space, enc
