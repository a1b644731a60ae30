"""The fine-tuning methods the demo compares, as overrides of one `FinetuneConfig`.

Every method sees the same data, steps, batch size and learning-rate schedule; they differ only in
what is trained and what constrains it.
"""

from __future__ import annotations

from typing import Any

# craft's anchor inputs under --anchor_inputs reference: perception scenes with one question each, no
# answers; demo/run.py writes them beside the demonstrations
REFERENCE_DATASET = "perception_reference"

# the seed's CRaFT, whatever the demo's anchor flags: mean-pooled C_R^(L/2) and C_AQ^(L) of the
# demonstrations, ε = 0.2 S, λ·g_ret as CRAFT_METHOD.md §6 writes it
SEED_ANCHORS: dict[str, Any] = {
    "craft_anchor_dataset_name": "",  # the demonstrations
    "craft_raw_layer": -1,
    "craft_raw_layers": (),
    "craft_aq_layer": -1,
    "craft_parts": "both",
    "craft_pool": "mean",
    "craft_text": False,
    "craft_epsilon_mode": "relative",
    "craft_epsilon": 0.2,
    "craft_retention_scale": "raw",
}

METHODS: dict[str, dict[str, Any]] = {
    "sft_lora": {"use_lora": True},
    "sft_full": {"use_lora": False},
    "frozen_vlm": {"use_lora": False, "freeze_vlm": True},
    # the ablations of the seed's CRaFT, on its anchors (the fixed weight w = 1 was chosen for their scale)
    "fixed_penalty": {
        "use_lora": False,
        "use_craft": True,
        "craft_projection": False,
        "craft_dual_lr": 0.0,
        **SEED_ANCHORS,
    },
    "projection_only": {
        "use_lora": False,
        "use_craft": True,
        "craft_dual_lr": 0.0,
        "craft_lambda_init": 0.0,
        **SEED_ANCHORS,
    },
    "craft": {"use_lora": False, "use_craft": True},
    "craft_seed": {"use_lora": False, "use_craft": True, **SEED_ANCHORS},
    "craft_correction": {"use_lora": False, "use_craft": True, "craft_correction_rate": 1.0, **SEED_ANCHORS},
    # full SFT plus the pretraining questions in every step (demo/cotrain.py): how much can be kept
    "cotrain": {"use_lora": False},
    # no training of its own: the sft_full run of the same seed, its VLM interpolated toward the snapshot
    "wise_ft": {"use_lora": False},
}

# the methods that train nothing themselves -> the method whose runs they start from (demo/wise_ft.py)
POST_HOC = {"wise_ft": "sft_full"}

DESCRIPTIONS = {
    "sft_lora": "plain fine-tuning, LoRA on the VLM (VLA-Adapter's recipe)",
    "sft_full": "plain fine-tuning of every weight",
    "frozen_vlm": "VLM frozen, only the policy head and proprio projector trained",
    "fixed_penalty": "L_act + w·L_ret with a fixed weight w, no projection",
    "projection_only": "conflict-aware projection, λ held at 0",
    "craft": "CRaFT: projection + dual ascent on λ with budget ε, on the anchors and inputs the demo's flags "
    "name (default: per-token patches and the prompt's text, each in its own units, g_ret at g_act's scale)",
    "craft_seed": "CRaFT as first formulated: mean-pooled raw latent of layer L/2 and action-query latent of "
    "layer L, ε relative to their spread",
    "craft_correction": "CRaFT with the budget kept by a correction step after AdamW's, which sees only "
    "the projected action gradient (no λ·g_ret)",
    "cotrain": "co-training oracle: full SFT plus w·L_QA on the pretraining perception questions in every "
    "step (VLM data CRaFT does not use)",
    "wise_ft": "WiSE-FT: full SFT's VLM weights interpolated toward the snapshot's, with the smallest α "
    "whose action L1 is within 5 % of SFT's (α chosen on validation L1 only)",
}


def method_overrides(
    method: str, fixed_penalty_weight: float, correction_rate: float = 1.0
) -> dict[str, Any]:
    """The FinetuneConfig fields that define `method`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    overrides = dict(METHODS[method])
    if method == "fixed_penalty":
        overrides["craft_lambda_init"] = fixed_penalty_weight
    if method == "craft_correction":
        overrides["craft_correction_rate"] = correction_rate
    return overrides


def method_cost(method: str, anchor_fraction: float = 1.0) -> float:
    """Rough cost of a run of `method` in SFT steps: a retention method adds an anchor pass over an anchor
    batch of `anchor_fraction` × the batch; a frozen VLM skips the VLM's backward."""
    overrides = METHODS[method]
    if method in POST_HOC:
        return 0.2  # evaluations only: a sweep of action L1 and QA, then one full evaluation
    if overrides.get("use_craft"):
        return 1.0 + anchor_fraction
    if method == "cotrain":
        return 1.5  # a question pass of about half an action pass's cost
    return 0.5 if overrides.get("freeze_vlm") else 1.0
