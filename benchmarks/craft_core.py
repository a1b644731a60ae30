"""Cost of CRaFT's core maths relative to one backward pass, at 1M, 10M and 50M trainable parameters.

Core maths = the global inner products, the projection coefficient, the in-place combination and the
dual update (with the step's one host sync); the stash of g_act (one copy) is timed separately.
The model is a stack of width-1024 linear layers (about 1M parameters each) fed `--tokens` rows,
a stand-in for the transformer blocks whose gradients CRaFT combines.

    python benchmarks/craft_core.py --threads 2 --tokens 512
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from craft_vla.craft import DualVariable, combine_in_place, conflict_coefficient, gradient_inner_products


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(num_layers: int, width: int, tokens: int, repeats: int) -> dict[str, float]:
    model = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(num_layers)])
    params = list(model.parameters())
    x = torch.randn(tokens, width)

    def backward() -> None:
        loss = model(x).square().mean()
        model.zero_grad(set_to_none=False)
        loss.backward()

    def forward_only() -> None:
        with torch.no_grad():
            model(x)

    t_fwd_bwd = timed(backward, repeats)
    t_backward = t_fwd_bwd - timed(forward_only, repeats)
    g_act = [torch.randn_like(p) for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    dual = DualVariable(0.1, 0.1)

    def core() -> None:
        grads = [p.grad for p in params]
        dot, ret_sq, act_sq = gradient_inner_products(g_act, grads)
        coef = conflict_coefficient(dot, ret_sq)
        dot_v, ret_sq_v, act_sq_v, coef_v = torch.stack([dot, ret_sq, act_sq, coef]).tolist()  # the one sync
        combine_in_place(grads, g_act, dual.value - coef_v)
        dual.update(0.0)

    def stash() -> None:
        for p, buf in zip(params, g_act):
            buf.copy_(p.grad)
            p.grad.zero_()

    t_core, t_stash = timed(core, repeats), timed(stash, repeats)
    return {
        "params_M": sum(p.numel() for p in params) / 1e6,
        "backward_ms": 1e3 * t_backward,
        "core_ms": 1e3 * t_core,
        "stash_ms": 1e3 * t_stash,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, tokens {args.tokens}, width {args.width}, torch {torch.__version__}")
    print(
        f"{'params':>8s} {'backward ms':>12s} {'core ms':>9s} {'core/bwd':>9s} "
        f"{'stash ms':>9s} {'(core+stash)/bwd':>17s}"
    )
    for layers in args.layers:
        r = measure(layers, args.width, args.tokens, args.repeats)
        print(
            f"{r['params_M']:7.1f}M {r['backward_ms']:12.1f} {r['core_ms']:9.2f} "
            f"{r['core_ms'] / r['backward_ms']:9.2%} {r['stash_ms']:9.2f} "
            f"{(r['core_ms'] + r['stash_ms']) / r['backward_ms']:17.2%}"
        )


if __name__ == "__main__":
    main()
