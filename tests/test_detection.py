"""The detection task: the decode/NMS interface, each objective's exact success on hand-made
detections, mAP and recall against hand computations, the scenes and a tiny COCO folder, the patch
placement, attacks through the engine on a quickly trained detector, and the CLI end to end."""
import json

import numpy as np
import pytest
import torch

from robustlab.errors import InputError
from robustlab.tasks.detection import Detections, TinyDetector, decode, truth
from robustlab.tasks.detection.metrics import mean_average_precision, recall_at
from robustlab.tasks.detection.objectives import (BoxShift, Fabrication, Mislabel, Untargeted, Vanishing, relabelled,
                                                  shifted)

BIG = 20.0  # a logit far above any threshold


def _raw(rows, k=2):
    """A dense raw output [1, N, 6 + k] from rows (anchor xy, box xyxy, per-class logits)."""
    return torch.tensor([rows], dtype=torch.float32).reshape(1, -1, 6 + k)


def test_decode_thresholds_and_classwise_nms():
    raw = _raw([[5, 5, 0, 0, 10, 10, BIG, -BIG],     # class 0, score ~1
                [6, 6, 1, 1, 10, 10, 2.0, -BIG],     # class 0, overlaps the first (IoU 0.81): suppressed
                [6, 6, 1, 1, 10, 10, -BIG, 1.0],     # class 1 at the same place: kept (NMS is per class)
                [30, 30, 25, 25, 35, 35, 0.0, -BIG]])  # score exactly 0.5: not above the threshold
    d = decode(raw, 0.5, 0.5)[0]
    assert d.labels.tolist() == [0, 1]
    assert torch.equal(d.boxes, torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]))
    assert d.scores[1].item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())
    assert len(decode(raw, 0.9, 0.5)[0]) == 1
    with pytest.raises(InputError):
        decode(torch.zeros(1, 3, 4))


GT = [truth([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1])]


def _dets(boxes, labels):
    return [Detections(boxes, [0.9] * len(labels), labels)]


@pytest.mark.parametrize("objective, target, outputs", [
    (Vanishing(), GT, [(_dets([], []), True), (_dets([[0, 0, 10, 10]], [0]), False)]),
    (Fabrication(), GT, [(_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), False),
                         (_dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0]), True),
                         (_dets([[2, 0, 12, 10]], [1]), False)]),     # IoU 0.67 with a true box, any label: no
    (Untargeted(), GT, [(_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), False),
                        (_dets([[0, 0, 10, 10]], [0]), True),                                 # one missed
                        (_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 0]), True),            # one relabelled
                        (_dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0, 1, 1]), True)]),
    (Mislabel(), relabelled(GT, 3), [(_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2]), True),
                                     (_dets([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]], [1, 2, 0]), False),
                                     (_dets([[0, 0, 10, 10]], [1]), False)]),
    (BoxShift(), shifted(GT, 0.5), [(_dets([[5, 0, 15, 10], [30, 20, 50, 40]], [0, 1]), True),
                                    (_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), False),  # IoU 1/3
                                    (_dets([[5, 0, 15, 10], [30, 20, 50, 40]], [0, 0]), False)]),
])
def test_each_objective_success_is_exact_on_hand_made_detections(objective, target, outputs):
    for dets, expected in outputs:
        assert objective.success(dets, target).tolist() == [expected], (dets, expected)


def test_a_copy_next_to_the_object_is_no_box_shift_and_fabrication_without_truth():
    moved = [[5, 0, 15, 10], [30, 20, 50, 40]]
    assert BoxShift().success(_dets(moved + [[0, 0, 10, 10]], [0, 1, 0]), shifted(GT, 0.5)).tolist() == [False]
    assert BoxShift().success(_dets(moved + [[0, 0, 10, 10]], [0, 1, 1]), shifted(GT, 0.5)).tolist() == [True]
    assert Fabrication().success(_dets([[0, 0, 10, 10]], [0]), [truth([], [])]).tolist() == [True]
    with pytest.raises(InputError, match="shift further"):
        shifted(GT, 0.1)
    from robustlab.tasks.detection.attacks import goal_targets

    with pytest.raises(InputError, match="do not match"):  # label 1 for a one-class detector
        goal_targets("vanishing", GT, num_classes=1)
    at = _raw([[30, 30, 25, 25, 35, 35, 0.0, -BIG], [5, 5, 0, 0, 10, 10, -BIG, 0.01]])  # 0.5 and just above
    assert Vanishing().success(at[:, :1]).tolist() == [True] and Vanishing().success(at).tolist() == [False]


def test_goals_and_a_raw_output_agree_with_the_detections():
    assert relabelled(GT, 2)[0].labels.tolist() == [1, 0]
    assert shifted(GT, 0.5, -0.1)[0].boxes.tolist() == [[5, -1, 15, 9], [30, 18, 50, 38]]
    raw = _raw([[5, 5, 0, 0, 10, 10, BIG, -BIG], [30, 30, 20, 20, 40, 40, -BIG, BIG]])
    assert Untargeted().success(raw, GT).tolist() == [False] and Vanishing().success(raw).tolist() == [False]
    low = raw.clone()
    low[..., 6:] = -BIG
    assert Vanishing().success(low).tolist() == [True] and Untargeted().success(low, GT).tolist() == [True]
    with pytest.raises(InputError):
        Mislabel().success(raw, GT * 2)  # one target per image
    with pytest.raises(InputError):
        relabelled(GT, 2, shift=2)


class _Fixed(torch.nn.Module):
    """A detector whose raw output is fixed (one per image): the shape the attacks and targets expect."""

    def __init__(self, raw):
        super().__init__()
        self.raw, self.num_classes, self.anchor = raw, raw.shape[-1] - 6, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.raw[:x.shape[0]] + 0 * x.sum()


def test_untargeted_judges_against_the_detectors_own_detections():
    from robustlab.tasks.detection.attacks import attack_targets

    # the detector sees a class-0 box and a class-1 box; the truth has a third object it misses
    raw = _raw([[5, 5, 0, 0, 10, 10, BIG, -BIG], [30, 30, 20, 20, 40, 40, -BIG, 2.0], [9, 9, 50, 50, 60, 60, -BIG, -BIG]])
    gt = [truth([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0, 1, 1])]
    own = attack_targets(_Fixed(raw), torch.zeros(1, 3, 8, 8), gt, "untargeted", Untargeted())
    assert own[0].boxes.tolist() == [[0, 0, 10, 10], [20, 20, 40, 40]] and own[0].labels.tolist() == [0, 1]
    assert Untargeted().success(raw, own).tolist() == [False] and Untargeted().success(raw, gt).tolist() == [True]
    assert attack_targets(_Fixed(raw), torch.zeros(1, 3, 8, 8), gt, "untargeted", Untargeted(), "truth") == gt
    with pytest.raises(InputError, match="own, truth"):
        attack_targets(_Fixed(raw), torch.zeros(1, 3, 8, 8), gt, "untargeted", Untargeted(), "mine")
    for dets, changed in ((_dets([[1, 0, 11, 10], [20, 21, 40, 41]], [0, 1]), False),   # moved at IoU >= 0.5: same
                          (_dets([[20, 20, 40, 40]], [1]), True),                          # one vanished
                          (_dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 0]), True),       # one relabelled
                          (_dets([[0, 0, 10, 10], [28, 20, 48, 40]], [0, 1]), True),       # one moved: IoU 12/28
                          (_dets([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]], [0, 1, 1]), True),  # one added
                          (_dets([], []), True)):
        assert Untargeted().success(dets, own).tolist() == [changed], (dets, changed)
    assert Untargeted().success(_dets([], []), [truth([], [])]).tolist() == [False]  # nothing seen, nothing seen


def _random_raw(seed, b=6, n=48, k=3):
    """Raw outputs with near-duplicate boxes (NMS at work), tied logits and scores around the threshold."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(b, n, 2, generator=g) * 32 / 6).round() * 6 + torch.rand(b, n, 2, generator=g)
    wh = 4 + torch.rand(b, n, 2, generator=g) * 8
    return torch.cat([xy, xy - wh / 2, xy + wh / 2, (torch.randn(b, n, k, generator=g) * 4 - 2).round() / 2], -1)


def test_batched_decode_and_success_equal_the_per_image_ones():
    from robustlab.tasks.detection.boxes import decode_padded

    for seed in range(6):
        raw, other = _random_raw(seed), _random_raw(seed + 100)
        for max_candidates in (100, 5):
            boxes, scores, labels, kept = decode_padded(raw, 0.5, 0.4, max_candidates)
            for i, d in enumerate(decode(raw, 0.5, 0.4, max_candidates)):
                assert torch.equal(boxes[i][kept[i]], d.boxes) and torch.equal(labels[i][kept[i]], d.labels)
                assert torch.equal(scores[i][kept[i]], d.scores)
        target = decode(other)
        for obj, t in ((Untargeted(), target), (Fabrication(), target), (Mislabel(), relabelled(target, 3)),
                       (BoxShift(), shifted(target, 1.0)), (BoxShift(), target), (Vanishing(), None)):
            on_raw, on_list = obj.success(raw, t), obj.success(decode(raw), t)
            assert on_raw.tolist() == on_list.tolist() and on_raw.device == raw.device


def test_losses_are_per_image_and_differentiable():
    model = TinyDetector(num_classes=2, width=4).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = GT + [truth([[4, 4, 20, 20]], [1])]
    raw = model(x)
    for obj, t in ((Untargeted(), target), (Vanishing(), None), (Fabrication(), target),
                   (Mislabel(), relabelled(target, 2)), (BoxShift(), shifted(target, 0.5))):
        loss = obj.loss(raw, t)
        assert loss.shape == (2,) and torch.isfinite(loss).all()
        grad, = torch.autograd.grad(loss.sum(), x, retain_graph=True)
        assert grad.abs().sum() > 0
    # vanishing: lowering every logit raises its loss
    down = raw.detach().clone()
    down[..., 6:] -= 1
    assert (Vanishing().loss(down) > Vanishing().loss(raw.detach())).all()


def test_map_and_recall_equal_hand_computations():
    # class 0: one hit at 0.9 (AP 1); class 1: a false positive at 0.8 ranked above the hit at 0.3, so the
    # precision is 1/2 at every recall level (AP 0.5); exact boxes, so mAP@[.5:.95] = mAP@0.5 = 0.75
    p = [Detections([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 40, 40]], [0.9, 0.8, 0.3], [0, 1, 1])]
    assert mean_average_precision(p, GT) == pytest.approx({"map_50": 0.75, "map": 0.75})
    assert recall_at(p, GT, 0.5) == 0.5 and recall_at(p, GT, 0.2) == 1.0
    # one box at IoU 0.6 counts at thresholds 0.5, 0.55, 0.6 of the ten: mAP 0.3
    t = [truth([[0, 0, 10, 10]], [0])]
    q = [Detections([[0, 0, 10, 6]], [0.9], [0])]
    assert mean_average_precision(q, t) == pytest.approx({"map_50": 1.0, "map": 0.3})
    assert mean_average_precision([Detections.empty()], t) == {"map_50": 0.0, "map": 0.0}


def test_scenes_have_boxes_around_their_shapes_and_occlusion_drops_hidden_ones():
    from robustlab.tasks.detection.data import synthetic_scenes

    a, b = synthetic_scenes(24, seed=5, size=48), synthetic_scenes(24, seed=5, size=48)
    assert torch.equal(a.x, b.x) and all(torch.equal(s.boxes, t.boxes) for s, t in zip(a.targets, b.targets))
    assert a.x.shape == (24, 3, 48, 48) and 0 <= float(a.x.min()) and float(a.x.max()) <= 1
    counts = [len(t) for t in a.targets]
    assert max(counts) <= 3 and sum(counts) > 24
    for t in a.targets:
        assert ((t.boxes[:, 2:] > t.boxes[:, :2]).all() and (t.boxes >= 0).all() and (t.boxes <= 48).all())
    strict = synthetic_scenes(24, seed=5, size=48, min_visible=1.0)  # only fully visible shapes are labelled
    assert sum(len(t) for t in strict.targets) < sum(counts)
    with pytest.raises(InputError):
        synthetic_scenes(2, classes=("unicorn",))


def test_coco_folder(tmp_path):
    from PIL import Image

    from robustlab.tasks.detection.data import coco_folder

    (tmp_path / "images").mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0)]):
        Image.new("RGB", (100, 50), colour).save(tmp_path / "images" / f"{i}.png")
    coco = {"images": [{"id": 7, "file_name": "0.png", "width": 100, "height": 50},
                       {"id": 9, "file_name": "1.png", "width": 100, "height": 50}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 50, 20], "area": 1000, "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
                            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [0, 0, 100, 50], "area": 5000, "iscrowd": 0}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    data = coco_folder(tmp_path, size=32)
    assert data.x.shape == (2, 3, 32, 32) and data.classes == ("dog", "cat")
    assert data.x[0, 0].mean().item() == pytest.approx(1.0) and data.x[1, 1].mean().item() == pytest.approx(1.0)
    assert data.targets[0].boxes.tolist() == [pytest.approx([3.2, 3.2, 19.2, 16.0])] and data.targets[0].labels.tolist() == [1]
    assert data.targets[1].boxes.tolist() == [[0, 0, 32, 32]] and data.targets[1].labels.tolist() == [0]
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InputError):
        coco_folder(tmp_path)  # two JSON files: which one?
    (tmp_path / "images" / "1.png").unlink()
    with pytest.raises(InputError, match="not a readable image"):
        coco_folder(tmp_path, annotations="instances.json")
    coco["annotations"][0]["category_id"] = 5
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(InputError, match=r"unlisted categories \[5\]"):
        coco_folder(tmp_path, annotations="instances.json")


def test_the_patch_is_applied_where_it_is_placed():
    from robustlab.tasks.detection.patch import PatchOnObject

    x = torch.zeros(2, 3, 64, 64)
    patch = torch.ones(3, 8, 8, requires_grad=True)
    target = [truth([[10, 20, 30, 40], [0, 0, 4, 4]], [0, 1]), Detections.empty()]  # the largest box gets it
    out, t = PatchOnObject.fixed(0.5)(x, target, patch, torch.Generator().manual_seed(0))
    assert t is target
    changed = out[0, 0] > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    # a 10 px square centred on (20, 30) covers pixels 15..24 x 25..34; bilinear edges reach one pixel further
    assert 14 <= int(xs.min()) <= 15 and 24 <= int(xs.max()) <= 25 and 24 <= int(ys.min()) <= 25 and 34 <= int(ys.max()) <= 35
    assert (out[0, :, 26:34, 16:24] == 1).all() and not out[1].any()  # inside: the patch; no box: no patch
    out.sum().backward()
    assert patch.grad.abs().sum() > 0
    turned, _ = PatchOnObject((0.5, 0.5), 45.0, (1, 1), (0, 0), 0)(x[:1], target[:1], patch, torch.Generator().manual_seed(1))
    assert (turned[0, 0] > 0).sum() > 0 and not torch.equal(turned, out[:1])


@pytest.fixture(scope="module")
def quick_detector():
    """A tiny one-class detector trained for 300 steps (a few seconds): recall above 0.5 at score 0.5."""
    from robustlab.tasks.detection.data import synthetic_scenes
    from robustlab.tasks.detection.train import train_detector

    train = synthetic_scenes(256, 3, size=48, classes=("square",), max_objects=1)
    val = synthetic_scenes(16, 4, size=48, classes=("square",), max_objects=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyDetector(1, width=12)
    train_detector(model, train, 300, 16, 5e-3, progress=False)
    return model, val


def test_a_vanishing_attack_lowers_recall_on_a_trained_detector(quick_detector):
    from robustlab.tasks.detection.attacks import attack_detector
    from robustlab.tasks.detection.train import predict

    model, val = quick_detector
    before = recall_at(model.decode(predict(model, val.x)), val.targets)
    res, objective, _ = attack_detector(model, val.x, val.targets, "vanishing", "pgd", 8 / 255, 10)
    after = recall_at(model.decode(predict(model, res.x_adv)), val.targets)
    assert before >= 0.5 and after <= before - 0.4
    assert (res.x_adv - val.x).abs().max() <= 8 / 255 + 1e-6
    assert res.success.tolist() == objective.success(predict(model, res.x_adv), val.targets).tolist()


def test_black_box_universal_and_patch_run_through_the_engine(quick_detector):
    from robustlab.tasks.detection.attacks import attack_detector, universal_perturbation
    from robustlab.tasks.detection.patch import fit_patch, patch_success

    model, val = quick_detector
    res, _, _ = attack_detector(model, val.x[:4], val.targets[:4], "vanishing", "square", 8 / 255, queries=20)
    assert int(res.queries.max()) <= 20 and (res.x_adv - val.x[:4]).abs().max() <= 8 / 255 + 1e-6
    uni = universal_perturbation(model, val.x, val.targets, eps=4 / 255, epochs=1, batch_size=8)
    assert uni.delta.shape == (1, 3, 48, 48) and uni.delta.abs().max() <= 4 / 255 + 1e-6 and len(uni.history) == 1
    tiled = universal_perturbation(model, val.x, val.targets, eps=4 / 255, epochs=1, batch_size=8, tile=8)
    d = tiled.apply(torch.full((1, 3, 48, 48), 0.5)) - 0.5                     # the pattern repeats every 8 pixels
    assert tiled.delta.shape == (1, 3, 8, 8) and torch.allclose(d[..., 8:, 16:], d[..., :-8, :-16], atol=1e-6)
    patch = fit_patch(model, val.x, val.targets, size=8, epochs=1, batch_size=8)
    assert patch.patch.shape == (3, 8, 8) and 0 <= patch_success(model, patch, val.x, val.targets, draws=2) <= 1


def test_transfer_through_the_engine(quick_detector):
    from robustlab.tasks.detection.attacks import transfer

    model, val = quick_detector
    x, t = val.x[:6], val.targets[:6]
    for source in (model, [model, model]):  # a model, and an ensemble of two copies (the same raw output)
        r = transfer(source, model, x, t, "vanishing", 8 / 255, 5, attack="mifgsm")
        assert r["transfer_success"] == r["source_success"] and 0 <= r["target_recall"] <= 1
    r = transfer(model, model, x, t, "vanishing", 8 / 255, 5, attack="mifgsm", diversity=0.5)
    assert set(r) == {"source_success", "transfer_success", "target_recall"}


def test_torchvision_source_where_torchvision_imports():
    from robustlab.tasks.detection.metrics import _torchvision_imports
    from robustlab.tasks.detection.pretrained import load_detector

    if not _torchvision_imports():
        with pytest.raises(InputError, match="does not import"):
            load_detector("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")
        pytest.skip("torchvision does not import against this torch (a CUDA wheel on a CPU build)")
    from robustlab.tasks.detection.zoo import torchvision_detector

    model = torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None)
    raw = model(torch.rand(1, 3, 64, 64))
    assert raw.dim() == 3 and raw.shape[-1] == 6 + model.num_classes
    from robustlab.tasks.detection.zoo import _categories

    assert _categories("fasterrcnn_mobilenet_v3_large_320_fpn", "DEFAULT")[:2] == ["__background__", "person"]


#: the shape of torchvision's COCO weights' meta["categories"]: the name of each label id, gaps as "N/A"
COCO_LIKE = ["__background__", "person", "bicycle", "car", "N/A", "dog"]


class _TorchvisionLike(torch.nn.Module):
    """A detector answering as torchvision's do: per image a dict of boxes, scores (differentiable) and label ids."""

    def forward(self, images):
        return [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 25, 25]]),
                 "scores": torch.stack([0.9 * im.mean() / im.mean().detach(), im.mean() * 0 + 0.8, im.mean() * 0 + 0.7]),
                 "labels": torch.tensor([5, 2, 1])} for im in images]   # dog, bicycle, person


def test_torchvision_labels_map_by_category_name_onto_the_data_classes():
    from robustlab.tasks.detection.zoo import ABSENT, TorchvisionDetector

    model = TorchvisionDetector(_TorchvisionLike(), 6, categories=COCO_LIKE)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert model(x).shape == (1, 3, 6 + 6)                                 # before mapping: a column per label id
    model.use_classes(("person", "dog"))                                    # the data's classes 0..1, by name
    raw = model(x)
    logit = torch.logit(torch.tensor([0.9, 0.7]))
    assert raw.shape == (1, 3, 6 + 2) and model.num_classes == 2
    assert torch.allclose(raw[0, 0, 6:], torch.tensor([ABSENT, logit[0]]))   # dog -> column 1
    assert torch.allclose(raw[0, 2, 6:], torch.tensor([logit[1], ABSENT]))   # person -> column 0
    assert (raw[0, 1, 6:] == ABSENT).all()                                   # bicycle: not in the data, dropped
    d = model.decode(raw)[0]
    assert d.labels.tolist() == [1, 0] and d.boxes.tolist() == [[0, 0, 10, 10], [5, 5, 25, 25]]
    grad, = torch.autograd.grad(raw[0, 0, 7], x)
    assert grad.abs().sum() > 0
    with pytest.raises(InputError, match=r"does not know the data's categories \['unicorn'\]"):
        model.use_classes(("person", "unicorn"))
    with pytest.raises(InputError, match="does not know"):
        model.use_classes(("N/A",))
    with pytest.raises(InputError, match="weights=None"):
        TorchvisionDetector(_TorchvisionLike(), 6).use_classes(("person",))


def test_plugin_and_cli_end_to_end(tmp_path, monkeypatch):
    import argparse

    from robustlab.taskspec import get_task

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    task = get_task("detection")
    assert set(task.objectives) == {"untargeted", "vanishing", "fabrication", "mislabel", "box-shift"}
    assert isinstance(task.objective(task.train_objective), Untargeted)
    parser = argparse.ArgumentParser()
    task.add_cli(parser.add_subparsers(dest="command"))
    runs = ["--runs", str(tmp_path / "runs")]
    for argv in (["train", "--name", "m", "--steps", "3", "--scenes", "16", "--width", "4", "--n", "4"],
                 ["attack", "--name", "a", "--model", str(tmp_path / "runs" / "m"), "--n", "3", "--steps", "2",
                  "--goal", "mislabel"],
                 ["evaluate", "--name", "e", "--model", str(tmp_path / "runs" / "m"), "--n", "3", "--steps", "2",
                  "--eps", "0.01"],
                 ["defend", "--name", "d", "--model", str(tmp_path / "runs" / "m"), "--n", "3", "--steps", "2",
                  "--attack-steps", "1"]):
        assert task.run_cli(parser.parse_args(["detection", *argv, *runs])) == 0
        assert (tmp_path / "runs" / argv[2] / "report.html").exists()
    assert list((tmp_path / "cache" / "detection").glob("detector-*.safetensors"))
    summary = json.loads((tmp_path / "runs" / "a" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"clean", "attacked"} and 0 <= summary["success_rate"] <= 1
    assert (tmp_path / "runs" / "a" / "figures" / "boxes.png").exists()
    assert (tmp_path / "runs" / "d" / "checkpoints" / "detector.safetensors").exists()
    with pytest.raises(InputError):
        task.run_cli(parser.parse_args(["detection", "attack", "--name", "x", "--data", "nope", *runs]))
    assert np.isfinite(json.loads((tmp_path / "runs" / "e" / "summary.json").read_text())["metrics"]["clean"]["map"])


def test_reproduce_quick(tmp_path, monkeypatch):
    from robustlab.tasks.detection.reproduce import reproduce

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    text = reproduce(tmp_path / "out", quick=True)
    for title in ("mAP against eps", "Square", "Printable patch under EOT", "Transfer", "Adversarial training"):
        assert title in text
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["quick"] and len(results["mAP against eps for each objective"]) == 1 + 5  # clean + 5 goals x 1 eps
    assert (tmp_path / "out" / "boxes.png").exists()
    universal = results["Black-box Square and a universal perturbation"]
    assert {u["tile"] for k, u in universal.items() if k.startswith("universal")} == {None, 8}
    with pytest.raises(InputError, match="already holds"):  # a second run never overwrites the first's results
        reproduce(tmp_path / "out", quick=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def test_detection_follows_the_device(device):
    from robustlab.attacks import AdversarialPatch
    from robustlab.tasks.detection.attacks import attack_detector
    from robustlab.tasks.detection.data import synthetic_scenes
    from robustlab.tasks.detection.patch import PatchOnObject

    data = synthetic_scenes(3, seed=9, size=32).to(device)
    model = TinyDetector(num_classes=4, width=4).to(device).eval()
    for goal in ("vanishing", "fabrication", "mislabel", "box-shift", "untargeted"):
        res, objective, targets = attack_detector(model, data.x, data.targets, goal, "pgd", 4 / 255, steps=2)
        assert res.x_adv.device.type == device and res.success.shape == (3,)
    out, _ = PatchOnObject()(data.x, data.targets, torch.rand(3, 4, 4), torch.Generator().manual_seed(0))
    assert out.device.type == device
    patch = AdversarialPatch.fit(model, data.x, data.targets, 4, Vanishing(), epochs=1, placement=PatchOnObject())
    assert patch.patch.shape == (3, 4, 4)
