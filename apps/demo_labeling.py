"""Demo part for labeling: LFs on Rotten Tomatoes reviews -> label model -> a `label` run."""

from __future__ import annotations

import warnings

from toolkit.workspace import Workspace

POS, NEG = 1, 0


def rotten_tomatoes_lfs(zero_shot: bool = True) -> list:
    """Keyword, regex, heuristic and (optionally) zero-shot embedding LFs for fresh(1)/rotten(0)."""
    from labeling import ABSTAIN, keyword_lf, labeling_function, model_lf, regex_lf

    @labeling_function()
    def exclaim(x):
        return POS if "!" in x.text else ABSTAIN

    lfs = [
        keyword_lf(
            "kw_great",
            [
                "great",
                "masterpiece",
                "wonderful",
                "terrific",
                "superb",
                "brilliant",
                "excellent",
                "best",
            ],
            POS,
        ),
        keyword_lf(
            "kw_fun",
            ["funny", "hilarious", "charming", "delightful", "entertaining", "enjoyable", "fun"],
            POS,
        ),
        keyword_lf(
            "kw_moving",
            ["moving", "touching", "powerful", "beautiful", "gorgeous", "compelling", "remarkable"],
            POS,
        ),
        keyword_lf(
            "kw_bad", ["bad", "worst", "awful", "terrible", "dreadful", "horrible", "stupid"], NEG
        ),
        keyword_lf(
            "kw_boring",
            ["boring", "dull", "tedious", "bland", "tiresome", "flat", "lifeless", "mediocre"],
            NEG,
        ),
        keyword_lf(
            "kw_mess",
            ["mess", "muddled", "incoherent", "pointless", "forgettable", "unfunny", "lame"],
            NEG,
        ),
        regex_lf(
            "rx_fails", r"\b(fails?|failed|falls? (flat|short)|disappoint\w*|waste\w*)\b", NEG
        ),
        regex_lf("rx_too", r"\btoo (long|slow|much|little|many)\b|\bnot (enough|much|very)\b", NEG),
        regex_lf(
            "rx_recommend",
            r"\b(must[- ]see|worth (seeing|watching|it)|don't miss|recommend\w*)\b",
            POS,
        ),
        exclaim,
    ]
    if zero_shot:
        lfs.append(
            model_lf(
                "zs_embed",
                class_descriptions={
                    NEG: ["a bad, boring, badly made movie", "I hated this film"],
                    POS: ["a great, enjoyable, well made movie", "I loved this film"],
                },
                margin=0.02,
            )
        )
    return lfs


def run(ws: Workspace, quick: bool = False) -> dict:
    """Label a sample of Rotten Tomatoes snippets with the LFs above; print the headline numbers."""
    from apps.commands.label import label_into_workspace
    from toolkit.datasets import load_rotten_tomatoes

    df = (
        load_rotten_tomatoes().sample(300 if quick else 1500, random_state=0).reset_index(drop=True)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_id, summary = label_into_workspace(
            ws,
            df,
            rotten_tomatoes_lfs(),
            gold_column="label",
            params={"data": "rotten_tomatoes", "sample": len(df)},
            progress=False,
        )
    print(
        f"  {summary['m']} LFs on {summary['n']} reviews: coverage {summary['coverage']:.2f}, "
        f"label model accuracy {summary['accuracy']:.3f} vs majority vote {summary['mv_accuracy']:.3f}"
    )
    return {"run": run_id, **summary}
