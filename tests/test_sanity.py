"""The black-box vs white-box check for L1 (Square-L1 vs l1-APGD) on a tiny model."""
import torch
import torch.nn as nn

import robustlab as rl
from robustlab.evaluation.sanity import check_black_box_vs_white_box
from robustlab.objectives import CrossEntropy


class Quantized(nn.Module):
    """Input quantisation: zero input gradient almost everywhere (a masked-gradient defence)."""

    def __init__(self, inner, levels=4):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


def test_black_box_vs_white_box_runs_for_l1_and_flags_masked_gradients(digits_model, digits_correct):
    x, y = digits_correct[0][:60], digits_correct[1][:60]
    threat = rl.ThreatModel("l1", 2.0)
    masked = Quantized(digits_model).eval()
    warn = check_black_box_vs_white_box(masked, x, y, threat, CrossEntropy(), max_queries=300)
    assert warn.verdict == "warn", warn.message
    ev = warn.evidence
    assert ev["apgd_success"] < 0.1 and ev["points_square_only"] >= 20  # Square-L1 breaks what APGD-L1 cannot
    ok = check_black_box_vs_white_box(digits_model, x, y, threat, CrossEntropy(), max_queries=300)
    assert ok.verdict == "pass" and ok.evidence["apgd_success"] > ok.evidence["square_success"] > 0.2
    flat = check_black_box_vs_white_box(digits_model, x.flatten(1), y, threat, CrossEntropy())
    assert flat.verdict == "pass" and "image inputs" in flat.message
