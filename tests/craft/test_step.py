"""CraftStep in one process against gradients computed independently with torch.autograd.grad."""

import copy

import pytest
import torch

from craft_vla.craft import CraftStep, DualVariable
from craft_vla.demo.toy import ToyVLA, make_toy_problem, toy_action_loss, toy_retention_loss, train_toy


def reference_update_gradient(model, action_batch, anchor_batch, lam, delta=1e-12, scaled=False):
    """g~_act + λ·g_ret from two separate autograd.grad calls, in float64; `scaled`: with
    λ·(‖g_act‖/‖g_ret‖)·g_ret instead."""
    params = [p for p in model.parameters()]
    g_act = torch.autograd.grad(toy_action_loss(model, action_batch), params)
    g_ret = torch.autograd.grad(toy_retention_loss(model, anchor_batch), params, allow_unused=True)
    g_ret = [torch.zeros_like(p) if g is None else g for g, p in zip(g_ret, params)]
    a = torch.cat([g.double().flatten() for g in g_act])
    r = torch.cat([g.double().flatten() for g in g_ret])
    dot = float(a @ r)
    coef = dot / (float(r @ r) + delta) if dot < 0 else 0.0
    scale = float(a.norm() / r.norm()) if scaled else 1.0
    return a - coef * r + lam * scale * r, dot


@pytest.mark.parametrize("retention_scale", ["raw", "action"])
def test_step_leaves_projected_and_combined_gradient(retention_scale):
    torch.manual_seed(0)
    model = ToyVLA()
    problem = make_toy_problem(model)
    # move the backbone away from the snapshot so that g_ret is not zero
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    action_batch = (problem.x[:16], problem.y[:16])
    anchor_batch = (problem.x_anchor[:16], problem.f_tilde[:16])
    dual = DualVariable(epsilon=0.0, lr=1.0, init=0.4)
    step = CraftStep(model.parameters(), dual, retention_scale=retention_scale)
    expected, dot = reference_update_gradient(
        copy.deepcopy(model), action_batch, anchor_batch, lam=0.4, scaled=retention_scale == "action"
    )
    stats = step.run(model, [action_batch], [anchor_batch], toy_action_loss, toy_retention_loss)
    got = torch.cat([p.grad.double().flatten() for p in model.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert stats.conflict == (dot < 0)
    assert stats.lambda_ == 0.4 and stats.lambda_next == 0.4 + stats.l_ret
    assert model.head.weight.grad is not None


def test_gradient_accumulation_equals_full_batch():
    torch.manual_seed(1)
    model = ToyVLA()
    problem = make_toy_problem(model)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other = copy.deepcopy(model)
    full = ((problem.x[:16], problem.y[:16]), (problem.x_anchor[:16], problem.f_tilde[:16]))
    halves = [[(t[0][i : i + 8], t[1][i : i + 8]) for i in (0, 8)] for t in full]
    step_full = CraftStep(model.parameters(), DualVariable(0.01, 1.0, init=0.2))
    step_acc = CraftStep(other.parameters(), DualVariable(0.01, 1.0, init=0.2))
    s1 = step_full.run(model, [full[0]], [full[1]], toy_action_loss, toy_retention_loss)
    s2 = step_acc.run(other, halves[0], halves[1], toy_action_loss, toy_retention_loss)
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    assert abs(s1.l_ret - s2.l_ret) <= 1e-6 * max(s1.l_ret, 1e-6)


def test_craft_off_is_plain_sft_bit_for_bit():
    torch.manual_seed(2)
    snapshot = ToyVLA()
    problem = make_toy_problem(snapshot, seed=2)
    ours = copy.deepcopy(snapshot)
    train_toy(ours, problem, steps=20, use_craft=False, seed=3)
    # the plain SFT loop, written out here
    plain = copy.deepcopy(snapshot)
    gen = torch.Generator().manual_seed(3)
    optimizer = torch.optim.AdamW(plain.parameters(), lr=3e-3)
    for _ in range(20):
        index = torch.randint(0, len(problem.x), (32,), generator=gen)
        loss = (plain(problem.x[index]) - problem.y[index]).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for p, q in zip(ours.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def test_craft_keeps_drift_near_epsilon_where_sft_drifts():
    torch.manual_seed(0)
    snapshot = ToyVLA()
    problem = make_toy_problem(snapshot)
    sft, craft = copy.deepcopy(snapshot), copy.deepcopy(snapshot)
    train_toy(sft, problem, steps=150, use_craft=False)
    history = train_toy(craft, problem, steps=150, use_craft=True, epsilon=0.05)
    drift = lambda m: toy_retention_loss(m, (problem.x_anchor, problem.f_tilde)).item()  # noqa: E731
    assert drift(sft) > 10 * 0.05
    assert drift(craft) < 3 * 0.05
    assert any(h["craft/conflict"] for h in history)


def displaced_toy(seed: int = 0, scale: float = 0.05):
    torch.manual_seed(seed)
    model = ToyVLA()
    problem = make_toy_problem(model)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(scale * torch.randn_like(p))
    return model, (problem.x[:16], problem.y[:16]), (problem.x_anchor[:16], problem.f_tilde[:16])


def test_correction_mode_gives_the_optimizer_g_act_only_then_projects_its_update():
    """θ ← θ + u − κ·max(L_ret + ⟨g_ret, u⟩ − ε, 0)/‖g_ret‖²·g_ret with u = −lr·g~_act, against float64."""
    model, action_batch, anchor_batch = displaced_toy()
    reference = copy.deepcopy(model).double()
    kappa, epsilon, lr = 0.8, 0.001, 0.1
    step = CraftStep(model.parameters(), DualVariable(epsilon, lr=1.0, init=0.7), correction_rate=kappa)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    stats = step.run(model, [action_batch], [anchor_batch], toy_action_loss, toy_retention_loss)
    g_tilde = torch.cat([p.grad.double().flatten() for p in model.parameters()])
    optimizer.step()
    size = step.apply_correction()

    double = tuple(t.double() for t in action_batch), tuple(t.double() for t in anchor_batch)
    expected_g, _ = reference_update_gradient(reference, *double, lam=0.0)  # λ is not used
    params = list(reference.parameters())
    l_ret = toy_retention_loss(reference, double[1])
    g_ret = torch.autograd.grad(l_ret, params, allow_unused=True)
    r = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(g_ret, params)])
    update = -lr * expected_g
    predicted = float(l_ret.detach()) + float(r @ update) - epsilon
    expected_size = kappa * max(predicted, 0.0) / (float(r @ r) + 1e-12)
    theta = torch.cat([p.detach().flatten() for p in params]) + update - expected_size * r
    torch.testing.assert_close(g_tilde, expected_g, rtol=1e-5, atol=1e-7)
    assert expected_size > 0 and abs(size - expected_size) <= 1e-4 * expected_size
    assert stats.lambda_ == 0.0 == stats.lambda_next and step.dual.value == 0.7  # λ is not used or updated
    torch.testing.assert_close(
        torch.cat([p.detach().double().flatten() for p in model.parameters()]), theta, rtol=1e-5, atol=1e-7
    )


def correct_once(model, anchor_batch, epsilon, kappa):
    """A correction-mode step with no action gradient and no optimizer step; returns its size."""
    step = CraftStep(model.parameters(), DualVariable(epsilon, lr=1.0), correction_rate=kappa)
    step.stash_action_gradient()
    l_ret = toy_retention_loss(model, anchor_batch)
    l_ret.backward()
    step.finish(0.0, l_ret.detach())
    for p in model.parameters():
        p.grad = None
    return step.apply_correction()


def test_a_correction_removes_about_kappa_of_the_violation_and_nothing_within_budget():
    model, _, anchor_batch = displaced_toy(seed=3, scale=0.01)
    before = float(toy_retention_loss(model, anchor_batch))
    epsilon = 0.5 * before
    for kappa in (0.5, 1.0):
        trial = copy.deepcopy(model)
        correct_once(trial, anchor_batch, epsilon, kappa)
        after = float(toy_retention_loss(trial, anchor_batch))
        # first order: L − ε shrinks by the factor 1 − κ; the quadratic term adds a little back
        assert (1 - kappa) * (before - epsilon) <= after - epsilon <= (1 - kappa / 2) * (before - epsilon)
    within = copy.deepcopy(model)
    weights = [p.detach().clone() for p in within.parameters()]
    assert correct_once(within, anchor_batch, 2 * before, 1.0) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(weights, within.parameters()))
