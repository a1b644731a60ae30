"""Samples per second of `VLADataset` (decode, resize to 224, augmentation, 6-channel normalisation,
prompt) on a LIBERO-like dataset, in one process and through a DataLoader with 2 workers.

    .venv/bin/python benchmarks/data/bench_vla_samples.py --data /tmp/bench_tfds/libero_like_no_noops/1.0.0

(the dataset is the one bench_rlds_vs_tfds.py builds with TFDS).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import SampleConfig, VLADataset
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.sampler import EpochSampler
from craft_vla.data.tokenizers import TiktokenQwenTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = TiktokenQwenTokenizer()
    for augment in (False, True):
        dataset = VLADataset([RLDSReader(args.data)], tokenizer, SampleConfig(augment=augment))
        ids = np.random.default_rng(0).permutation(dataset.sample_ids)[: args.samples]
        start = time.perf_counter()
        for sample_id in ids:
            dataset[(int(sample_id), 0)]
        serial = args.samples / (time.perf_counter() - start)
        sampler = EpochSampler(ids, seed=0)
        loader = DataLoader(
            dataset,
            batch_size=16,
            sampler=sampler,
            num_workers=2,
            collate_fn=VLACollator(tokenizer.pad_token_id),
        )
        start = time.perf_counter()
        count = sum(len(batch["sample_id"]) for batch in loader)
        workers = count / (time.perf_counter() - start)
        print(
            json.dumps(
                {
                    "augment": augment,
                    "samples_per_s_1proc": round(serial, 1),
                    "samples_per_s_dataloader_2workers": round(workers, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
