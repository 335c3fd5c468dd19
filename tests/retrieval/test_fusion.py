"""The hybrid search's fusions, on lists shaped like the ones that made RRF lose BM25's answer: the right chunk
first in BM25's list and absent from the (weaker) dense list, which shares other chunks with BM25's."""

import pytest

from crawl2serve.assets.retrieval.fusion import ConvexFusion, ReciprocalRankFusion, make_fusion

# BM25: the answer first by a wide margin, then chunks b..k that the dense list also has, lower down.
LEXICAL = [("answer", 12.0)] + [(c, 5.0 - 0.1 * i) for i, c in enumerate("bcdefghijk")]
DENSE = [(c, 0.6 - 0.01 * i) for i, c in enumerate("kjihgfedcb")]


def test_rrf_ranks_chunks_in_both_lists_above_a_first_place_in_one():
    fused = [c for c, _ in ReciprocalRankFusion(k=60).fuse(LEXICAL, DENSE)]
    assert fused.index("answer") == 10  # 1/61 < 1/(60+r1) + 1/(60+r2) for every chunk in both top-11 lists


def test_convex_keeps_the_score_gap_so_bm25s_clear_winner_stays_first():
    fused = ConvexFusion(alpha=0.85).fuse(LEXICAL, DENSE)
    assert fused[0][0] == "answer" and fused[0][1] == pytest.approx(0.85)
    scores = dict(fused)
    # b: BM25's second (0.85 * (5.0 - 4.1) / (12 - 4.1)) plus dense's last (0): each list normalised alone
    assert scores["b"] == pytest.approx(0.85 * 0.9 / 7.9)
    assert scores["k"] == pytest.approx(0.15)


def test_convex_extremes_are_the_single_lists_and_empty_lists_fuse_to_the_other():
    assert [c for c, _ in ConvexFusion(alpha=1.0).fuse(LEXICAL, DENSE)][:11] == [c for c, _ in LEXICAL]
    # alpha 0: dense's order, down to its last chunk, which normalises to 0 and ties with BM25's own
    assert [c for c, _ in ConvexFusion(alpha=0.0).fuse(LEXICAL, DENSE)][:9] == [c for c, _ in DENSE][:9]
    assert ConvexFusion().fuse(LEXICAL[:1], []) == [("answer", pytest.approx(0.85))]  # one candidate: normalised 1
    assert ConvexFusion().fuse([], []) == []


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="fusion_alpha"):
        make_fusion("convex", alpha=1.5)
    with pytest.raises(ValueError, match="rrf_k"):
        make_fusion("rrf", rrf_k=0)
    with pytest.raises(ValueError, match="fusion 'mean'"):
        make_fusion("mean")
