"""A `VLAAdapterPolicy` in memory as the closed loop's `ChunkPolicy`, for the tabletop suite and LIBERO alike.

Observations go through `craft_vla.models.inference.predict_actions` (imported when used, so the
evaluation needs no torch until a model is evaluated): the training preprocessing without
augmentation (resize, optional centre crop, normalisation, prompt, proprio normalisation), one
forward per statistics entry, actions unnormalised with that entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from craft_vla.data.normalize import DatasetStatistics


class VLAChunkPolicy:
    """`predict_chunks` for a policy; each observation's "suite" picks its statistics through `unnorm_keys`.

    `unnorm_keys`: suite -> key of `statistics`; None when `statistics` has one entry, used for every suite.
    `sample_config`, `normalization`: as `predict_actions` takes them (None: the model's defaults, no crop).
    """

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        statistics: Mapping[str, DatasetStatistics],
        unnorm_keys: Mapping[str, str] | None = None,
        sample_config: Any = None,
        normalization: Any = None,
    ) -> None:
        if unnorm_keys is None and len(statistics) != 1:
            raise ValueError(
                f"statistics {sorted(statistics)}: pass unnorm_keys (suite -> statistics entry) to say which "
                "one each suite uses"
            )
        self.policy = policy
        self.tokenizer = tokenizer
        self.statistics = statistics
        self.unnorm_keys = None if unnorm_keys is None else dict(unnorm_keys)
        self.sample_config = sample_config
        self.normalization = normalization

    def unnorm_key(self, suite: str) -> str:
        return next(iter(self.statistics)) if self.unnorm_keys is None else self.unnorm_keys[suite]

    def predict_chunks(self, observations: list[dict[str, Any]]) -> np.ndarray:
        """(N,) observations -> (N, T, A) unnormalised chunks, one forward per statistics entry."""
        from craft_vla.models.inference import Observation, predict_actions

        num_images = self.policy.config.num_images_in_input
        inputs = [
            Observation(
                [o["full_image"], o["wrist_image"]][:num_images], o["instruction"], np.asarray(o["state"])
            )
            for o in observations
        ]
        groups: dict[str, list[int]] = {}
        for i, obs in enumerate(observations):
            groups.setdefault(self.unnorm_key(obs["suite"]), []).append(i)
        chunks: list[np.ndarray | None] = [None] * len(observations)
        for key, indices in groups.items():
            predicted = predict_actions(
                self.policy,
                [inputs[i] for i in indices],
                self.tokenizer,
                self.statistics[key],
                self.sample_config,
                self.normalization,
            )
            for i, chunk in zip(indices, predicted):
                chunks[i] = chunk
        return np.stack(chunks)
