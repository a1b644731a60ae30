"""The fused vision backbone: timm's second-to-last block per image and tower,
concatenated as the spec says."""

from __future__ import annotations

import torch

from craft_vla.models.vision import LayerScale, build_featurizer


def test_backbone_matches_per_image_timm_reference(tiny_policy, tiny_batch):
    backbone = tiny_policy.vla.vision_backbone
    pixels = tiny_batch["pixel_values"]
    per_image = []
    for image in torch.split(pixels, 6, dim=1):  # [DINOv2 (3), SigLIP (3)] per image
        towers = []
        for vit, channels in ((backbone.featurizer, image[:, :3]), (backbone.fused_featurizer, image[:, 3:])):
            (out,) = vit.get_intermediate_layers(
                channels, n={len(vit.blocks) - 2}
            )  # timm: prefix tokens dropped
            towers.append(out)
        per_image.append(torch.cat(towers, dim=-1))
    expected = torch.cat(per_image, dim=1)
    got = backbone(pixels)
    assert got.shape == (2, 2 * 16, 32 + 48)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_projected_patches_follow_the_first_token(tiny_policy, tiny_batch):
    vla = tiny_policy.vla
    embeds, _ = vla.multimodal_inputs(
        tiny_batch["pixel_values"], tiny_batch["input_ids"], tiny_batch["attention_mask"]
    )
    patches = vla.projector(vla.vision_backbone(tiny_batch["pixel_values"]))
    torch.testing.assert_close(embeds[:, 1 : 1 + patches.shape[1]], patches, rtol=0, atol=0)


def test_layer_scale_is_renamed_and_keeps_its_values(tiny_config):
    vit = build_featurizer(tiny_config.featurizer, tiny_config.image_size)
    keys = vit.state_dict()
    assert "blocks.0.ls1.scale_factor" in keys and not any(k.endswith("gamma") for k in keys)
    assert isinstance(vit.blocks[0].ls1, LayerScale)
    torch.testing.assert_close(vit.blocks[0].ls1.scale_factor, torch.full((32,), 1e-5))  # DINOv2's init value
