"""Secondary comparisons of the pre-registered DynUNet cell (hippo_c2_dynunet) with the U-Net cell (hippo_c2_confirm).

Seed-paired (the same seed draws the same split in both cells), in Dice points of the primary endpoint (test Dice per
volume of the checkpoint chosen on validation): DynUNet - U-Net per arm (both with poly decay), and the difference of
the semi-supervised gains, (UniMatch - supervised) with DynUNet minus the same with U-Net. Secondary by the protocol:
printed with 95 % t-intervals, never a claim.

    python benchmarks/backbone_gain.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/backbone_gain.py` from the root
from benchmarks.leaderboard import arm_runs, points  # noqa: E402
from ssl_seg.experiments.stats import fmt_gain, fmt_mean_std  # noqa: E402

SEEDS = [10, 11, 12]
RESULTS = Path("benchmarks/results")
ARMS = {("unet", "supervised"): "prereg_hc2/sup_poly/*", ("unet", "unimatch"): "prereg_hc2/uni_poly/*",
        ("dynunet", "supervised"): "prereg_hc2_dyn/sup_poly/*", ("dynunet", "unimatch"): "prereg_hc2_dyn/uni_poly/*"}


def main() -> None:
    score = {key: points(arm_runs(ROOT / RESULTS, [pattern], SEEDS)) for key, pattern in ARMS.items()}
    print("| backbone | arm | primary endpoint, Dice points (per seed) | mean +- std |")
    print("|---|---|---|---|")
    for (backbone, arm), by_seed in score.items():
        seeds = ", ".join(f"s{s} {v:.1f}" for s, v in sorted(by_seed.items()))
        print(f"| {backbone} | {arm} | {seeds} | {fmt_mean_std(by_seed.values())} |")

    def diff(a: dict[int, float], b: dict[int, float]) -> list[float]:
        return [a[s] - b[s] for s in SEEDS if s in a and s in b]

    gain = {bb: dict(zip(SEEDS, [score[bb, "unimatch"].get(s, float("nan")) - score[bb, "supervised"].get(s, float("nan"))
                                 for s in SEEDS])) for bb in ("unet", "dynunet")}
    print()
    print(f"- UniMatch - supervised, DynUNet (the cell's one claim): {fmt_gain(gain['dynunet'].values())}")
    print(f"- UniMatch - supervised, U-Net, poly vs poly (secondary): {fmt_gain(gain['unet'].values())}")
    for arm in ("supervised", "unimatch"):
        print(f"- DynUNet - U-Net, {arm} (secondary): {fmt_gain(diff(score['dynunet', arm], score['unet', arm]))}")
    print(f"- difference of gains, DynUNet - U-Net (secondary): {fmt_gain(diff(gain['dynunet'], gain['unet']))}")
    print("command: python benchmarks/backbone_gain.py")


if __name__ == "__main__":
    main()
