"""Projection, coefficient and combination against a float64 reference written here."""

import pytest
import torch

from craft_vla.craft import (
    combine_in_place,
    conflict_coefficient,
    gradient_inner_products,
    project_conflicting,
)


def random_grads(seed: int, shapes=((3, 4), (5,), (2, 2, 2))) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in shapes]


def reference(g_act, g_ret, delta):
    """Flatten to one float64 vector and apply CRAFT_METHOD.md section 5 literally."""
    a = torch.cat([g.double().flatten() for g in g_act])
    r = torch.cat([g.double().flatten() for g in g_ret])
    dot = float(a @ r)
    coef = dot / (float(r @ r) + delta) if dot < 0 else 0.0
    return a - coef * r, coef, dot


def make_conflicting(seed: int):
    g_ret = random_grads(seed)
    g_act = [-0.7 * r + 0.3 * n for r, n in zip(g_ret, random_grads(seed + 100))]
    return g_act, g_ret


@pytest.mark.parametrize("seed", range(5))
def test_projection_matches_float64_reference(seed):
    g_act, g_ret = make_conflicting(seed)
    expected, coef, dot = reference(g_act, g_ret, 1e-12)
    assert dot < 0
    projected = project_conflicting(g_act, g_ret)
    flat = torch.cat([g.flatten() for g in projected]).double()
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-6)
    # after projection the conflict is gone
    r = torch.cat([g.flatten() for g in g_ret]).double()
    scale = float(r.norm() * flat.norm())
    assert float(flat @ r) >= -1e-6 * scale


def test_inputs_untouched_and_unchanged_without_conflict():
    g_ret = random_grads(1)
    g_act = [r + 0.1 * n for r, n in zip(g_ret, random_grads(2))]  # aligned: no conflict
    before = [g.clone() for g in g_act], [g.clone() for g in g_ret]
    projected = project_conflicting(g_act, g_ret)
    for p, a in zip(projected, g_act):
        assert torch.equal(p, a)
    for x, y in zip(g_act + g_ret, before[0] + before[1]):
        assert torch.equal(x, y)


def test_zero_retention_gradient_gives_no_nan():
    g_act = random_grads(3)
    g_ret = [torch.zeros_like(g) for g in g_act]
    projected = project_conflicting(g_act, g_ret)
    for p, a in zip(projected, g_act):
        assert torch.equal(p, a)
    dot, ret_sq, _ = gradient_inner_products(g_act, g_ret)
    assert conflict_coefficient(dot, ret_sq).item() == 0.0


def test_delta_is_respected():
    g_act, g_ret = make_conflicting(4)
    delta = 10.0
    expected, coef, _ = reference(g_act, g_ret, delta)
    dot, ret_sq, _ = gradient_inner_products(g_act, g_ret)
    assert conflict_coefficient(dot, ret_sq, delta).item() == pytest.approx(coef, rel=1e-5)
    flat = torch.cat([g.flatten() for g in project_conflicting(g_act, g_ret, delta)]).double()
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-6)


def test_inner_products_accumulate_in_float32_for_bf16():
    g_act, g_ret = make_conflicting(5)
    dot, ret_sq, act_sq = gradient_inner_products(
        [g.bfloat16() for g in g_act], [g.bfloat16() for g in g_ret]
    )
    assert dot.dtype == torch.float32
    a = torch.cat([g.bfloat16().double().flatten() for g in g_act])
    r = torch.cat([g.bfloat16().double().flatten() for g in g_ret])
    assert dot.item() == pytest.approx(float(a @ r), rel=1e-5)
    assert ret_sq.item() == pytest.approx(float(r @ r), rel=1e-5)
    assert act_sq.item() == pytest.approx(float(a @ a), rel=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_combination_in_place(lam):
    g_act, g_ret = make_conflicting(6)
    projected_ref, coef, _ = reference(g_act, g_ret, 1e-12)
    r = torch.cat([g.double().flatten() for g in g_ret])
    expected = projected_ref + lam * r
    grads = [g.clone() for g in g_ret]
    storages = [g.data_ptr() for g in grads]
    dot, ret_sq, _ = gradient_inner_products(g_act, grads)
    combine_in_place(grads, g_act, lam - conflict_coefficient(dot, ret_sq).item())
    assert [g.data_ptr() for g in grads] == storages  # modified, never rebound
    flat = torch.cat([g.flatten() for g in grads]).double()
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-6)


def test_none_entries_are_zero_gradients():
    g_act, g_ret = make_conflicting(7)
    full = gradient_inner_products(g_act + [torch.ones(3)], g_ret + [None])
    a = torch.cat([g.double().flatten() for g in g_act] + [torch.ones(3, dtype=torch.float64)])
    r = torch.cat([g.double().flatten() for g in g_ret] + [torch.zeros(3, dtype=torch.float64)])
    torch.testing.assert_close(full.double(), torch.stack([a @ r, r @ r, a @ a]), rtol=1e-5, atol=1e-6)
