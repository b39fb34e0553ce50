"""Every registered KD method against one teacher and one plain student: the validation table of ``kdc distill
--method NAME`` (feature pre-training with NAME, then KD with L1 + 0.5 imitation), same data, teacher and seed.

    python benchmarks/kd_methods.py [--data demo] [--train-every 4] [--val-every 2] [--epochs 2] [--pretrain-epochs 1]
        [--teacher-epochs 3] [--teacher RUN] [--acc 4] [--seeds 0] [--device cpu] [--out docs/results/kd_methods]
"""

from __future__ import annotations

from distill_table import Row, parser, run_table

from kdc.compress.losses import KD_LOSSES

#: What each method matches in pre-training (the KD stage is the same for all).
DESCRIPTIONS = {
    "at": "attention maps (Zagoruyko & Komodakis), KD-MRI's choice",
    "fitnet": "hint features through a 1x1-conv regressor (Romero et al.)",
    "fsp": "Gram matrix first -> last hidden layer of each cascade (Yim et al.)",
    "sp": "batch similarity matrices (Tung & Mori)",
    "cc": "batch correlation, Gaussian-RBF kernel (Peng et al.)",
    "rkd": "batch distances and angles (Park et al.)",
    "pkt": "batch cosine-kernel probabilities (Passalis & Tefas)",
    "imitation": "the teacher's output image (no features)",
}


TITLE = "KD methods on DC-CNN (`kdc distill --method`)"
NOTES = (
    "Produced by `benchmarks/kd_methods.py`. One row per registered `--method`: the student is pre-trained "
    "with that loss (teacher conv 3 <-> student conv 2 of every cascade, or the layers the method names), then "
    "trained with L1 to the target + 0.5 x imitation of the teacher (`kdc distill` defaults). Every row reuses "
    "the same trained teacher (`--teacher`) and plain student (`--student`), data, mask and seed."
)


def rows() -> list[Row]:
    return [Row(name, f"pre-training on {DESCRIPTIONS.get(name, name)}", ["--method", name]) for name in KD_LOSSES]


def main() -> None:
    args = parser(__doc__.splitlines()[0], "kd_methods").parse_args()
    run_table(args, TITLE, NOTES, rows(), "kd_methods.py")


if __name__ == "__main__":
    main()
