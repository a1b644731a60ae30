"""Anchor features: the pooled bridge conditions that CRaFT keeps close to the snapshot.

f(o, l) = [Pool(C_R^(m)) ; Pool(C_AQ^(M))], read from hidden states the forward already computes
(`hidden_states[0]` is the embedding output, `hidden_states[i]` the output of layer i). The raw part may
anchor several layers, [Pool(C_R^(m1)) ; ... ; Pool(C_R^(mk))]: holding one layer lets the layers around
it drift (docs/method.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

POOLINGS = ("mean", "tokens")
PARTS = ("both", "raw", "aq")


@dataclass(frozen=True)
class AnchorSpec:
    """Which bridge conditions are anchored: raw latent of `raw_layer` (one layer, or a tuple of layers in
    order), action-query latent of `aq_layer`."""

    raw_layer: int | tuple[int, ...]
    aq_layer: int
    pool: str = "mean"
    parts: str = "both"
    # also the mean of the prompt's text tokens at each raw layer (the part "text", after the raw part)
    text: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.raw_layer, list):  # e.g. from a config file: frozen and hashable as a tuple
            object.__setattr__(self, "raw_layer", tuple(self.raw_layer))
        if self.pool not in POOLINGS:
            raise ValueError(f"pool must be one of {POOLINGS}, got {self.pool!r}")
        if self.parts not in PARTS:
            raise ValueError(f"parts must be one of {PARTS}, got {self.parts!r}")
        if not self.raw_layers or min(self.raw_layers) < 0 or self.aq_layer < 0:
            raise ValueError(f"layers must be >= 0, got raw_layer={self.raw_layer}, aq_layer={self.aq_layer}")
        if len(set(self.raw_layers)) != len(self.raw_layers):
            raise ValueError(f"raw_layer lists a layer twice: {self.raw_layer}")
        if self.text and self.parts == "aq":
            raise ValueError("text anchors are read at the raw layers: they need parts 'raw' or 'both'")

    @property
    def raw_layers(self) -> tuple[int, ...]:
        """The raw-latent layers anchored, in order."""
        return self.raw_layer if isinstance(self.raw_layer, tuple) else (self.raw_layer,)

    @property
    def layers(self) -> tuple[int, ...]:
        """The hidden-state indices this spec reads."""
        return {
            "both": (*self.raw_layers, self.aq_layer),
            "raw": self.raw_layers,
            "aq": (self.aq_layer,),
        }[self.parts]

    @property
    def last_layer(self) -> int:
        """The deepest layer needed: a forward may stop after it."""
        return max(self.layers)


def pool_tokens(hidden: Tensor, mask: Tensor | None = None, mode: str = "mean") -> Tensor:
    """Pool token states (B, S, D) over the positions where `mask` (B, S) is true, in float32.

    "mean" gives (B, D); "tokens" keeps every selected token, flattened in order, (B, N·D), and
    needs the same number N of selected tokens in every row.
    """
    hidden = hidden.float()
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    if mode == "mean":
        weights = mask.to(hidden.dtype)
        counts = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.bmm(weights.unsqueeze(1), hidden).squeeze(1) / counts
    if mode == "tokens":
        counts = mask.sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"pool='tokens' needs the same number of tokens per row, got {counts.tolist()}")
        return hidden[mask].reshape(hidden.shape[0], -1)
    raise ValueError(f"pool must be one of {POOLINGS}, got {mode!r}")


def anchor_features(
    hidden_states: Sequence[Tensor] | Mapping[int, Tensor],
    raw_positions: Tensor,
    aq_positions: Tensor,
    raw_layer: int | tuple[int, ...],
    aq_layer: int,
    pool: str = "mean",
    parts: str = "both",
    text_positions: Tensor | None = None,
) -> Tensor:
    """[Pool(C_R^(raw_layer)) ; Pool(C_AQ^(aq_layer))] -> (B, F), F = 2·D for mean pooling of both parts
    (with several raw layers, their pooled raw latents in order, then the action-query part). With
    `text_positions` (B, S), the mean over those positions at each raw layer follows the raw part.

    `hidden_states` holds (B, S, D) tensors indexed by layer (a tuple from `output_hidden_states=True`
    or the dict captured by `HiddenStateHooks`); positions are bool masks (B, S).
    """
    spec = AnchorSpec(raw_layer, aq_layer, pool, parts, text=text_positions is not None)
    available = len(hidden_states) if not isinstance(hidden_states, Mapping) else None
    for layer in spec.layers:
        if (available is not None and layer >= available) or (
            available is None and layer not in hidden_states
        ):
            raise IndexError(
                f"anchor layer {layer} is not among the hidden states given "
                f"({available or list(hidden_states)})"
            )
    pooled = []
    if parts in ("both", "raw"):
        pooled.extend(pool_tokens(hidden_states[layer], raw_positions, pool) for layer in spec.raw_layers)
    if spec.text:
        pooled.extend(pool_tokens(hidden_states[layer], text_positions, "mean") for layer in spec.raw_layers)
    if parts in ("both", "aq"):
        pooled.append(pool_tokens(hidden_states[aq_layer], aq_positions, pool))
    return torch.cat(pooled, dim=-1)


class HiddenStateHooks:
    """Capture the outputs of given modules (e.g. decoder layers) with forward hooks.

    `with HiddenStateHooks({3: layers[2], 6: layers[5]}) as hooks: model(...)`, then
    `hooks.hidden_states[3]`; the hooks are removed on exit, so nothing stays registered.
    """

    def __init__(self, modules: Mapping[int, nn.Module]) -> None:
        self.modules = dict(modules)
        self.hidden_states: dict[int, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _capture(self, index: int):
        def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
            self.hidden_states[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def __enter__(self) -> HiddenStateHooks:
        self._handles = [m.register_forward_hook(self._capture(i)) for i, m in self.modules.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
