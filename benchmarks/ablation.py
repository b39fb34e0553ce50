"""KD-MRI ablation: attention transfer (AT) and imitation, each alone and together, with and without the AT
pre-training stage, against one teacher and one plain student (the row with neither).

    python benchmarks/ablation.py [--data demo] [--train-every 4] [--val-every 2] [--epochs 2] [--pretrain-epochs 1]
        [--teacher-epochs 3] [--teacher RUN] [--feature-weight 1] [--acc 4] [--seeds 0] [--device cpu]
        [--out docs/results/ablation]
"""

from __future__ import annotations

from distill_table import Row, parser, run_table


def rows(feature_weight: str) -> list[Row]:
    """The ablation rows and the ``kdc distill`` options of each (docs/distill.md explains the mapping)."""
    no_pretraining = ["--pretrain-epochs", "0"]
    at_in_kd = ["--feature-weight", feature_weight]
    no_imitation = ["--imitation-weight", "0"]
    return [
        Row("imitation", "no pre-training; L1 + imitation", [*no_pretraining]),
        Row("AT", "no pre-training; L1 + AT", [*no_pretraining, *no_imitation, *at_in_kd]),
        Row("AT + imitation", "no pre-training; L1 + AT + imitation", [*no_pretraining, *at_in_kd]),
        Row("AT-pre", "AT pre-training; L1", [*no_imitation]),
        Row("AT-pre + imitation", "AT pre-training; L1 + imitation (KD-MRI)", []),
        Row("AT-pre + AT", "AT pre-training; L1 + AT", [*no_imitation, *at_in_kd]),
        Row("AT-pre + AT + imitation", "AT pre-training; L1 + AT + imitation", [*at_in_kd]),
    ]


TITLE = "KD-MRI ablation: attention transfer and imitation"


def notes(feature_weight: str) -> str:
    return (
        "Produced by `benchmarks/ablation.py`. Rows as in KD-MRI's ablation: the KD stage's loss (L1 to the target "
        "plus imitation of the teacher's output and/or AT on the features, `--feature-weight` "
        f"{feature_weight}, imitation weight 0.5), with the AT pre-training stage (`AT-pre`: the KD stage "
        "starts from the pre-trained student) or without (`--pretrain-epochs 0`: it starts from the plain student's "
        "initial weights). The `student` row is the one with neither. Every row reuses the same trained teacher "
        "and plain student, data, mask and seed."
    )


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], "ablation")
    arguments.add_argument("--feature-weight", default="1", help="weight of AT in the KD stage where a row uses it")
    args = arguments.parse_args()
    run_table(args, TITLE, notes(args.feature_weight), rows(args.feature_weight), "ablation.py")


if __name__ == "__main__":
    main()
