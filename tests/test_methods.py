"""Methods: registry, a few-step CPU run of each (loss decreases), supervised fallback, state round trips."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import Tensor, nn

from ssl_seg.config import MethodConfig
from ssl_seg.errors import UserError
from ssl_seg.methods.losses import build_loss
from ssl_seg.methods import METHODS, build_method, method_names
from ssl_seg.methods.mean_teacher import noisy, softmax_consistency
from ssl_seg.models import build_model

K, P = 2, 32
KEYS = {
    "supervised": {"sup"},
    "mean-teacher": {"sup", "cons", "stat/cons_weight"},
    "pseudo-label": {"sup", "unsup", "stat/mask_ratio", "stat/confident_c0", "stat/confident_c1", "stat/cons_weight"},
    "cps": {"sup", "cps", "stat/cons_weight"},
    "unimatch": {"sup", "strong", "fp", "stat/mask_ratio", "stat/confident_c0", "stat/confident_c1",
                 "stat/cons_weight"},
    "uncertainty-mt": {"sup", "cons", "stat/cons_weight", "stat/certain_ratio"},
    "bcp": {"in", "out", "stat/u_weight"},  # self-training stage (_build skips its pre-training; see test_bcp.py)
}


def _disks(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n phantom-like images (n, 1, P, P): a bright disk on noise, with its mask (n, P, P)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    centre = 8 + 16 * torch.rand(n, 2, generator=g)
    radius = 4 + 5 * torch.rand(n, generator=g)
    masks = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2) < radius[:, None, None] ** 2
    images = 0.2 + 0.5 * masks + 0.1 * torch.randn(n, P, P, generator=g)
    return images.clamp(0, 1)[:, None], masks.long()


def _batch(unlabeled: bool = True, seed: int = 0) -> dict:
    image, mask = _disks(4, seed)
    batch = {"labeled": {"image": image, "mask": mask, "roi": torch.ones_like(mask, dtype=torch.bool)}}
    batch["unlabeled"] = {"image": _disks(4, seed + 100)[0]} if unlabeled else None
    return batch


def _unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", 1, K, base_channels=4)


def _build(name: str, cfg: MethodConfig | None = None, model: nn.Module | None = None, total: int = 20):
    own = {"pretrain_fraction": 0.0} if name == "bcp" else {}
    cfg = cfg or MethodConfig(name=name, rampup_fraction=0.0, threshold=0.7, options=own)
    return build_method(name, model or _unet(), cfg, K, total, build_loss("dice_ce"))


def _run(method, steps: int, batch: dict) -> list[dict[str, Tensor]]:
    """The trainer's loop in miniature: sum non-stat losses, Adam step, after_step."""
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        for m in method.models.values():
            m.train()
        losses = method.training_step(batch, step)
        assert all(v.requires_grad != k.startswith("stat/") for k, v in losses.items())  # stats are detached
        total = sum(v for k, v in losses.items() if not k.startswith("stat/"))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        method.after_step(step)
        history.append({**{k: v.detach() for k, v in losses.items()}, "total": total.detach()})
    return history


def test_registry_names_and_unknown_name() -> None:
    assert method_names() == list(METHODS) == list(KEYS)
    with pytest.raises(UserError, match="valid: supervised, mean-teacher, pseudo-label, cps, unimatch, uncertainty-mt"):
        build_method("fixmatch", _unet(), MethodConfig(), K, 10, build_loss("ce"))


# BCP has no labeled-only term: by design every image it trains on mixes labeled and unlabeled pixels
@pytest.mark.parametrize("name", [n for n in KEYS if n not in ("supervised", "bcp")])
def test_labeled_loss_ignores_the_unlabeled_images(name: str) -> None:
    # labeled and unlabeled images never share a BatchNorm batch: the labeled term cannot reach the unlabeled ones
    method = _build(name)
    for m in method.models.values():
        m.train()
    batch, other = _batch(), _batch()
    other["unlabeled"] = {"image": _disks(4, 555)[0] * 3.0}
    sups = []
    for b in (batch, other):
        torch.manual_seed(1)
        sups.append(method.training_step(b, 5)["sup"])
    assert torch.equal(sups[0], sups[1])


@pytest.mark.parametrize("name,terms", [("pseudo-label", ("unsup",)), ("unimatch", ("strong", "fp"))])
def test_unlabeled_terms_ramp_up(name: str, terms: tuple[str, ...]) -> None:
    # rampup over 10 of 20 steps: at step 0 the unlabeled terms carry exp(-5) of their full weight
    model = _unet()
    ramped = _build(name, MethodConfig(name=name, rampup_fraction=0.5, threshold=0.7), model=model)
    full = _build(name, MethodConfig(name=name, rampup_fraction=0.0, threshold=0.7), model=model)
    batch = _batch()
    outs = []
    for method in (ramped, full):
        torch.manual_seed(3)
        outs.append(method.training_step(batch, 0))
    assert outs[0]["stat/cons_weight"].item() == pytest.approx(math.exp(-5))
    assert outs[1]["stat/cons_weight"].item() == 1.0
    for term in terms:
        assert outs[1][term].item() > 0
        assert outs[0][term].item() == pytest.approx(math.exp(-5) * outs[1][term].item(), rel=1e-4)


@pytest.mark.parametrize("name", list(KEYS))
def test_few_steps_decrease_the_loss(name: str) -> None:
    torch.manual_seed(0)
    method = _build(name)
    history = _run(method, 15, _batch())
    assert set(history[0]) - {"total"} == KEYS[name]
    assert all(torch.isfinite(v).all() for h in history for v in h.values())
    totals = [h["total"].item() for h in history]
    assert sum(totals[-3:]) / 3 < sum(totals[:3]) / 3, totals
    first = next(iter(method.eval_models().values()))
    assert first(_batch()["labeled"]["image"]).shape == (4, K, P, P)


@pytest.mark.parametrize("name", list(KEYS))
def test_without_unlabeled_part_only_the_supervised_loss(name: str) -> None:
    losses = _build(name).training_step(_batch(unlabeled=False), 0)
    assert set(losses) == {"sup"} and torch.isfinite(losses["sup"]) and losses["sup"].requires_grad


def test_eval_models_order() -> None:
    assert list(_build("supervised").eval_models()) == ["model"]
    assert list(_build("mean-teacher").eval_models()) == ["teacher", "student"]
    assert list(_build("pseudo-label").eval_models()) == ["model"]
    teacher_cfg = MethodConfig(name="pseudo-label", options={"teacher_labels": True})
    assert list(_build("pseudo-label", teacher_cfg).eval_models()) == ["teacher", "model"]
    assert list(_build("cps").eval_models()) == ["model_a", "model_b"]
    assert list(_build("unimatch").eval_models()) == ["model"]
    assert list(_build("uncertainty-mt").eval_models()) == ["teacher", "student"]


def test_softmax_consistency_hand_values() -> None:
    student = torch.zeros(1, 2, 1, 1)  # p = (0.5, 0.5)
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # q = (0.75, 0.25)
    assert softmax_consistency(student, teacher, "mse").item() == pytest.approx(0.0625)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert softmax_consistency(student, teacher, "kl").item() == pytest.approx(kl, rel=1e-5)
    assert softmax_consistency(teacher, teacher, "kl").item() == pytest.approx(0.0, abs=1e-7)


def test_noise_is_clamped_to_two_std() -> None:
    images = torch.zeros(4, 1, 32, 32)
    noise = noisy(images, 0.1)
    assert noise.abs().max() <= 0.2 + 1e-7 and noise.std() > 0.05


def test_mean_teacher_consistency_ramps_up_and_rejects_bad_kind() -> None:
    cfg = MethodConfig(name="mean-teacher", consistency_weight=2.0, rampup_fraction=0.5)
    method = _build("mean-teacher", cfg, total=100)
    assert method.training_step(_batch(), 0)["stat/cons_weight"].item() == pytest.approx(2.0 * math.exp(-5.0))
    assert method.training_step(_batch(), 50)["stat/cons_weight"].item() == pytest.approx(2.0)
    with pytest.raises(UserError, match="method.consistency"):
        _build("mean-teacher", MethodConfig(name="mean-teacher", consistency="l1"))


def test_mean_teacher_state_dict_round_trip_restores_the_teacher() -> None:
    trained = _build("mean-teacher", MethodConfig(name="mean-teacher", ema_decay=0.9))
    _run(trained, 3, _batch())
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = _build("mean-teacher", model=_unet(seed=1))
    teacher_before = {k: v.clone() for k, v in fresh.eval_models()["teacher"].state_dict().items()}
    fresh.load_state_dict(state)
    restored, original = fresh.eval_models()["teacher"].state_dict(), trained.eval_models()["teacher"].state_dict()
    assert all(torch.equal(restored[k], original[k]) for k in original)
    assert not all(torch.equal(teacher_before[k], original[k]) for k in original)
    with pytest.raises(UserError, match="resume with the method"):
        fresh.load_state_dict({})


def test_mean_teacher_resume_is_exact() -> None:
    """Straight 4 steps == 2 steps, state saved (models, method, optimizer, RNG), rebuilt, 2 more steps."""

    def run(method, optimizer, steps: range) -> None:
        for step in steps:
            total = sum(v for k, v in method.training_step(_batch(), step).items() if not k.startswith("stat/"))
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            method.after_step(step)

    straight = _build("mean-teacher")
    run(straight, torch.optim.SGD(straight.parameters(), lr=0.1), range(4))

    first = _build("mean-teacher")
    optimizer = torch.optim.SGD(first.parameters(), lr=0.1)
    run(first, optimizer, range(2))
    saved = ({k: m.state_dict() for k, m in first.models.items()}, first.state_dict(), torch.get_rng_state())
    resumed = _build("mean-teacher", model=_unet(seed=3))
    for k, m in resumed.models.items():
        m.load_state_dict(saved[0][k])
    resumed.load_state_dict(saved[1])
    torch.set_rng_state(saved[2])
    run(resumed, torch.optim.SGD(resumed.parameters(), lr=0.1), range(2, 4))
    for name in ("teacher", "student"):
        a, b = straight.eval_models()[name].state_dict(), resumed.eval_models()[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_teacher_tracks_student_after_steps() -> None:
    method = _build("mean-teacher")
    _run(method, 1, _batch())  # step 0: decay 0 -> the teacher is an exact copy
    teacher, student = method.eval_models()["teacher"], method.eval_models()["student"]
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))


def test_pseudo_label_teacher_state_round_trip() -> None:
    cfg = MethodConfig(name="pseudo-label", options={"teacher_labels": True}, threshold=0.6)
    method = _build("pseudo-label", cfg)
    history = _run(method, 3, _batch())
    assert set(history[0]) - {"total"} == KEYS["pseudo-label"]
    other = _build("pseudo-label", cfg, model=_unet(seed=2))
    other.load_state_dict(method.state_dict())
    a, b = method.eval_models()["teacher"].state_dict(), other.eval_models()["teacher"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pseudo_label_unlabeled_term_is_zero_when_nothing_is_confident() -> None:
    cfg = MethodConfig(name="pseudo-label", threshold=1.01)
    losses = _build("pseudo-label", cfg).training_step(_batch(), 0)
    assert losses["unsup"].item() == 0.0 and losses["stat/mask_ratio"].item() == 0.0


def test_cps_second_network_is_reinitialised_reproducibly() -> None:
    a, b = _build("cps"), _build("cps")
    pa, pb = a.models["model_a"].state_dict(), a.models["model_b"].state_dict()
    convs = [k for k in pa if k.endswith("weight") and pa[k].dim() == 4]
    assert convs and all(not torch.equal(pa[k], pb[k]) for k in convs)
    assert all(torch.equal(v, b.models["model_b"].state_dict()[k]) for k, v in pb.items())
    assert len(list(a.parameters())) == 2 * len(list(a.models["model_a"].parameters()))


def test_cps_build_leaves_the_global_rng_untouched() -> None:
    model = _unet()
    expected = torch.rand(3)
    model = _unet()
    _build("cps", model=model)
    assert torch.equal(torch.rand(3), expected)


def test_uncertainty_mt_mask_follows_the_threshold() -> None:
    def step0(start: float) -> dict[str, Tensor]:
        cfg = MethodConfig(name="uncertainty-mt", options={"uncertainty_threshold": start})
        return _build("uncertainty-mt", cfg, total=100).training_step(_batch(), 0)

    # Limit = (start + (1 - start) e^-5) ln K: about 0 for start 0, ln K (the maximum entropy) for start 1.
    strict, loose = step0(0.0), step0(1.0)
    assert strict["stat/certain_ratio"].item() < 0.05 < 0.95 < loose["stat/certain_ratio"].item()
    with pytest.raises(UserError, match=r"--uncertainty-threshold 1.5: must be in \[0, 1\]"):
        step0(1.5)


class _Spy(nn.Module):
    """Wraps a model and records the feature_dropout of every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[float] = []

    def forward(self, x: Tensor, feature_dropout: float = 0.0) -> Tensor:
        self.calls.append(feature_dropout)
        return self.model(x, feature_dropout=feature_dropout)


def test_unimatch_feature_branch_uses_feature_dropout() -> None:
    spy = _Spy(_unet())
    cfg = MethodConfig(name="unimatch", options={"feature_dropout": 0.5}, threshold=0.0)
    losses = _build("unimatch", cfg, model=spy).training_step(_batch(), 0)
    assert sorted(spy.calls) == [0.0, 0.0, 0.0, 0.5]  # labeled, weak, strong pair: no dropout; the fp view: 0.5
    assert losses["fp"].item() > 0
    images = _batch()["unlabeled"]["image"]
    model = spy.model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(images, feature_dropout=0.5), model(images))


# images each network sees in one step with 4 labeled + 4 unlabeled images, and with gradient (the rest under
# torch.inference_mode); the teacher only on the images its loss uses, no pass repeated where one serves
PASSES = {
    "supervised": {"model": (4, 4)},
    "mean-teacher": {"student": (8, 8), "teacher": (4, 0)},
    "uncertainty-mt": {"student": (8, 8), "teacher": (32, 0)},
    "pseudo-label": {"model": (12, 8)},
    "cps": {"model_a": (8, 8), "model_b": (8, 8)},
    "unimatch": {"model": (20, 16)},
    "bcp": {"student": (8, 8), "teacher": (4, 0)},
}


def test_every_method_has_its_passes_checked() -> None:
    assert set(PASSES) == set(METHODS)


@pytest.mark.parametrize("name", list(PASSES))
def test_forward_passes_are_not_wasted(name: str) -> None:
    method = _build(name)
    teacher = getattr(method, "teacher", None)
    nets = {**method.models, **({"teacher": teacher.module} if teacher is not None else {})}
    seen = {k: [0, 0] for k in nets}

    def counter(key):
        def hook(module, args, output):
            seen[key][0] += args[0].shape[0]
            seen[key][1] += args[0].shape[0] if output.requires_grad else 0
            assert torch.is_inference_mode_enabled() or torch.is_grad_enabled()  # gradient-free = inference mode
        return hook

    for key, net in nets.items():
        net.register_forward_hook(counter(key))
    losses = method.training_step(_batch(), 0)
    sum(v for k, v in losses.items() if not k.startswith("stat/")).backward()  # targets are usable by autograd
    assert {k: tuple(v) for k, v in seen.items()} == PASSES[name]


def test_capabilities_are_class_attributes_not_names() -> None:
    from ssl_seg.methods import method_class

    assert not method_class("supervised").uses_unlabeled
    assert all(method_class(n).uses_unlabeled for n in method_names() if n != "supervised")
    assert all(method_class(n).relative_cost >= 1.0 for n in method_names())  # supervised is the unit
    with pytest.raises(UserError, match="unknown method 'nope'"):
        method_class("nope")
