"""A tiny trained concept space end to end: train, save, load, list, delete, explain."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.data.pool import Pool
from explainers.embeddings import Encoder
from explainers.matching.explainers import (
    MatchDRExplainer,
    MatchingExplainer,
    PairTransferExplainer,
    StackedExplainer,
)
from explainers.matching.space import ConceptSpace, delete_space, list_spaces
from explainers.matching.trainers import TrainConfig, train_head
from explainers.registry import Resources, build_explainer

U = "unknown"
# (origin, text, food, service, ambiance, noise)
ROWS = [
    ("a", "The pasta was delicious and the waiter was friendly.", "Positive", "Positive", U, U),
    ("a", "The pasta was bland and the waiter was friendly.", "Negative", "Positive", U, U),
    ("a", "The pasta was delicious and the waiter was rude.", "Positive", "Negative", U, U),
    ("b", "Great burgers, and our server was attentive.", "Positive", "Positive", U, U),
    ("b", "Awful burgers, and our server was attentive.", "Negative", "Positive", U, U),
    ("c", "Tasty sushi in a cozy, quiet room.", "Positive", U, "Positive", "Positive"),
    ("c", "Stale sushi in a cozy, quiet room.", "Negative", U, "Positive", "Positive"),
    ("c", "Tasty sushi in a dark, gloomy room.", "Positive", U, "Negative", "Positive"),
    ("d", "The steak was perfect; service was slow.", "Positive", "Negative", U, U),
    ("d", "The steak was overcooked; service was slow.", "Negative", "Negative", U, U),
    ("e", "Loud music, but the tacos were excellent.", "Positive", U, U, "Negative"),
    ("e", "Loud music, and the tacos were soggy.", "Negative", U, U, "Negative"),
]


def tiny_pool() -> Pool:
    labels = [dict(zip(("food", "service", "ambiance", "noise"), r[2:], strict=True)) for r in ROWS]
    origins = [r[0] for r in ROWS]
    pairs = []
    for i in range(len(ROWS)):
        for j in range(len(ROWS)):
            if i != j and origins[i] == origins[j]:
                diff = [c for c in labels[i] if labels[i][c] != labels[j][c]]
                if len(diff) == 1:
                    pairs.append((i, j, diff[0]))
    return Pool(
        [r[1] for r in ROWS],
        labels,
        CEBAB_SCHEMA,
        ids=[f"t{i}" for i in range(len(ROWS))],
        origins=origins,
        pairs=pairs,
    )


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory):
    pool = tiny_pool()
    enc = Encoder()
    base = enc.encode(pool.texts)
    heads = {}
    for c in ("food", "service"):
        heads[c], facts = train_head(
            base,
            pool.labels,
            pool.origins,
            c,
            CEBAB_SCHEMA.names,
            TrainConfig(epochs=5, lr=1e-2, batch_size=4),
        )
        assert facts["queries"] > 0 and facts["loss_curve"][-1] <= facts["loss_curve"][0]
    space = ConceptSpace(pool, enc, heads=heads, base_vectors=base, meta={"name": "tiny"})
    space.build_indices()
    root = tmp_path_factory.mktemp("spaces")
    space.save(
        root / "tiny",
        trainer="head",
        diagnostics={"hit_rate": {"food": space.nearest_counterfactual_hit_rate("food")}},
    )
    return root / "tiny"


def test_save_load_list_delete(space_dir) -> None:
    space = ConceptSpace.load(space_dir)
    assert len(space.pool) == len(ROWS) and set(space.heads) == {"food", "service"}
    assert space.meta["trainer"] == "head" and space.meta["pool_hash"]
    assert 0.0 <= space.meta["diagnostics"]["hit_rate"]["food"] <= 1.0
    rows = space.rows[("food", "Negative")]
    assert {space.pool.labels[r]["food"] for r in rows} == {"Negative"}
    listed = list_spaces(space_dir.parent)
    assert [s["name"] for s in listed] == ["tiny"]
    copy = space_dir.parent / "copy"
    space.save(copy, name="copy")
    assert len(list_spaces(space_dir.parent)) == 2
    assert delete_space(space_dir.parent, "copy") is True
    assert delete_space(space_dir.parent, "copy") is False
    with pytest.raises(ValueError):
        delete_space(space_dir.parent, "../x")


def test_partition_and_confounder_filtering(space_dir) -> None:
    space = ConceptSpace.load(space_dir)
    q = "The pasta was delicious and the waiter was friendly."
    found = space.search(q, "food", "Negative", 10)
    assert found and all(space.pool.labels[m.row]["food"] == "Negative" for m in found)
    assert q not in [m.text for m in found]  # its own copy is a near-duplicate and dropped
    conf = {"service": "Positive", "ambiance": U, "noise": U}
    strict = space.search(q, "food", "Negative", 10, confounders=conf)
    assert {m.text for m in strict} == {
        "The pasta was bland and the waiter was friendly.",
        "Awful burgers, and our server was attentive.",
    }


def test_explainers_on_tiny_space(space_dir, tfidf_lr) -> None:
    space = ConceptSpace.load(space_dir)
    text = "The pasta was delicious and the waiter was friendly."
    labels = {"food": "Positive", "service": "Positive", "ambiance": U, "noise": U}
    iv = Intervention("food", "Negative", "Positive")
    m = MatchingExplainer(space).explain(text, iv, tfidf_lr, top_k=2, base_labels=labels)
    assert m.details["confounder_matched"] == 2 and len(m.counterfactuals) == 2
    expect = np.mean([np.asarray(c.prediction) for c in m.counterfactuals], axis=0) - m.base_prediction
    assert np.allclose(m.icace, expect)
    pt = PairTransferExplainer(space).explain(text, iv, tfidf_lr, top_k=3, base_labels=labels)
    assert pt.details["used"] == 3 and pt.details["source"] == "Positive"
    p = tfidf_lr.predict_proba(space.pool.texts)
    deltas = [
        p[int(cf)] - p[int(b)]
        for b, cf in (c.source_id.split(":")[1].replace("t", "").split("->") for c in pt.counterfactuals)
    ]
    assert np.allclose(pt.icace, np.mean(deltas, axis=0), atol=1e-9)
    none = PairTransferExplainer(space).explain(
        text, Intervention("noise", "Positive", U), tfidf_lr, top_k=3, base_labels=labels
    )
    assert none.details["used"] == 0 and not none.icace.any()
    dr = MatchDRExplainer(space).explain(text, iv, tfidf_lr, top_k=2, base_labels=labels)
    assert len(dr.details["adjustment"]) == len(tfidf_lr.labels)
    st = StackedExplainer(
        {"match": MatchingExplainer(space), "pair_transfer": PairTransferExplainer(space)},
        {"match": 0.25, "pair_transfer": 0.5},
    )
    s = st.explain(text, iv, tfidf_lr, top_k=2, base_labels=labels)
    pt2 = PairTransferExplainer(space).explain(text, iv, tfidf_lr, top_k=2, base_labels=labels)
    assert np.allclose(s.icace, 0.25 * m.icace + 0.5 * pt2.icace)


def test_registry_factories(space_dir, tfidf_lr) -> None:
    space = ConceptSpace.load(space_dir)
    res = Resources(schema=CEBAB_SCHEMA, pool=space.pool, encoder=space.encoder, space=space)
    text = ROWS[3][1]
    labels = {"food": "Positive", "service": "Positive", "ambiance": U, "noise": U}
    for name in ("match", "match_dr", "pair_transfer"):
        exp = build_explainer(name, res).explain(
            text, Intervention("food", "Negative"), tfidf_lr, top_k=2, base_labels=labels
        )
        assert exp.method == name and exp.icace.shape == (5,)
    st = build_explainer("stacked", res, stack_weights="match=0.5,pair_transfer=0.5")
    assert set(st.weights) == {"match", "pair_transfer"}
    bare = Resources(schema=CEBAB_SCHEMA, pool=space.pool, encoder=space.encoder)
    from explainers.registry import MissingResource

    with pytest.raises(MissingResource):
        build_explainer("match", bare)
    assert build_explainer("pair_transfer", bare).space.meta["name"] == "pretrained"


def test_without_texts_drops_rows_and_their_pairs(space_dir) -> None:
    from explainers.matching.cebab import without_texts

    space = ConceptSpace.load(space_dir)
    gone = ROWS[1][1]
    smaller = without_texts(space, [gone])
    assert gone not in smaller.pool.texts and len(smaller.pool) == len(ROWS) - 1
    assert len(smaller.pool.pairs) < len(space.pool.pairs)
    for b, c, con in smaller.pool.pairs:  # every remapped pair still differs in exactly its concept
        lb, lc = smaller.pool.labels[b], smaller.pool.labels[c]
        assert [k for k in lb if lb[k] != lc[k]] == [con]
    found = smaller.search(ROWS[0][1], "food", "Negative", 10)
    assert gone not in [m.text for m in found]


def test_cli_list_eval_delete(space_dir, tmp_path, capsys) -> None:
    import shutil

    from explainers.matching.cli import main

    root = tmp_path / "root"
    shutil.copytree(space_dir, root / "spaces" / "tiny")
    assert main(["list", "--root", str(root)]) == 0
    assert '"name": "tiny"' in capsys.readouterr().out
    assert main(["eval", "tiny", "--root", str(root)]) == 0
    assert '"trainer": "head"' in capsys.readouterr().out
    assert main(["delete", "tiny", "--root", str(root)]) == 0
    assert main(["delete", "tiny", "--root", str(root)]) == 1


def test_stacked_reads_weights_per_k_from_space_meta(space_dir, tfidf_lr) -> None:
    space = ConceptSpace.load(space_dir)
    space.meta["stacking"] = {
        "tfidf-lr": {
            "weights": {"match": 0.5, "pair_transfer": 0.5},
            "weights_by_k": {
                "1": {"match": 1.0, "pair_transfer": 0.0},
                "5": {"match": 0.0, "pair_transfer": 0.8},
            },
            "procedure": {"method": "test"},
        }
    }
    res = Resources(schema=CEBAB_SCHEMA, pool=space.pool, encoder=space.encoder, space=space)
    st = build_explainer("stacked", res, stack_key="tfidf-lr")
    assert st.weights_for(1) == {"match": 1.0, "pair_transfer": 0.0}
    assert st.weights_for(3) == st.weights_for(1) and st.weights_for(10) == st.weights_for(5)
    text, iv = ROWS[0][1], Intervention("food", "Negative", "Positive")
    labels = {"food": "Positive", "service": "Positive", "ambiance": U, "noise": U}
    got = st.explain(text, iv, tfidf_lr, top_k=5, base_labels=labels)
    pt = PairTransferExplainer(space).explain(text, iv, tfidf_lr, top_k=5, base_labels=labels)
    assert np.allclose(got.icace, 0.8 * pt.icace) and set(got.details["components"]) == {"pair_transfer"}
    fallback = build_explainer("stacked", res, stack_key="unknown-model")
    assert fallback.weights_info["source"].startswith("equal weights")


@pytest.mark.slow  # fine-tunes the whole encoder (minutes on 2 cores)
def test_full_fine_tune_space_is_self_contained_and_explains(tmp_path, tfidf_lr) -> None:
    """The full trainer's space carries its fine-tuned encoder: it loads and explains from its folder alone."""
    from explainers.matching.trainers import train_full

    pool = tiny_pool()
    enc = Encoder()
    facts = train_full(pool.texts, pool.labels, pool.origins, "food", CEBAB_SCHEMA.names, tmp_path / "ft-food",
                       base_model=enc.model_name, config=TrainConfig(lr=5e-6, batch_size=2, max_a=2, max_n=2,
                                                                     epochs=1, max_steps=2))  # fmt: skip
    assert facts["steps"] == 2 and all(np.isfinite(facts["loss_curve"]))
    space = ConceptSpace(pool, enc, encoders={"food": Encoder(str(tmp_path / "ft-food"))})
    space.build_indices()
    space.save(tmp_path / "spaces" / "full", name="full", trainer="full")
    (tmp_path / "ft-food").rename(tmp_path / "moved")  # the space must not point back at the training folder
    loaded = ConceptSpace.load(tmp_path / "spaces" / "full")
    assert set(loaded.encoders) == {"food"}
    text = "The pasta was delicious and the waiter was friendly."
    # Its fine-tuned encoder gives other vectors than the frozen one it started from.
    assert not np.allclose(loaded.encoders["food"].encode([text]), enc.encode([text]), atol=1e-6)
    labels = {"food": "Positive", "service": "Positive", "ambiance": U, "noise": U}
    m = MatchingExplainer(loaded).explain(text, Intervention("food", "Negative", "Positive"), tfidf_lr, top_k=2,
                                          base_labels=labels)  # fmt: skip
    assert len(m.counterfactuals) == 2 and all(loaded.pool.labels[loaded.pool.texts.index(c.text)]["food"] ==
                                               "Negative" for c in m.counterfactuals)  # fmt: skip
