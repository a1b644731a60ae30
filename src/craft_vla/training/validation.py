"""VLA-Adapter's `--use_val_set`: the L1 action loss on the datasets' "val" split every `--val_freq` steps,
within `--val_time_limit` seconds, changing nothing the training then sees."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.formats import Reader
from craft_vla.data.lerobot import LeRobotFormatError
from craft_vla.data.rlds import RLDSFormatError
from craft_vla.data.sampler import EpochSampler
from craft_vla.training import setup
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.distributed import mean_over_ranks
from craft_vla.training.step import ActionLoss

if TYPE_CHECKING:
    from craft_vla.training.finetune import Run


@dataclass
class Validation:
    """The held-out split as VLA-Adapter's `--use_val_set` reads it (the RLDS "val" split of the same
    datasets): un-augmented, normalised with the training statistics; this rank's batches of sample ids,
    the same every pass so that the losses of two passes compare."""

    dataset: VLADataset
    batches: list[list[int]]
    collate: VLACollator


def open_validation_readers(cfg: FinetuneConfig) -> list[Reader]:
    try:
        return setup.open_readers(cfg, split="val")
    except (RLDSFormatError, LeRobotFormatError) as error:
        raise ValueError(
            f"--use_val_set True evaluates on the 'val' split of the datasets, as VLA-Adapter does, but "
            f"{error}. Add a 'val' split (RLDS: its shards and an entry in dataset_info.json; LeRobot: an "
            "episode range in meta/info.json's splits) or pass "
            "--use_val_set False"
        ) from error


def validation_set(run: Run, readers: list[Reader]) -> Validation:
    train, cfg, env = run.dataset, run.cfg, run.env
    config = dataclasses.replace(train.config, augment=False)
    dataset = VLADataset(readers, train.tokenizer, config, statistics=train.statistics)
    # "pad": every rank gets as many batches, so FSDP's collective forwards stay in step
    sampler = EpochSampler(dataset.sample_ids, cfg.seed, env.rank, env.world_size, remainder="pad")
    ids = sampler.epoch_ids(0).tolist()
    batches = [ids[i : i + cfg.batch_size] for i in range(0, len(ids), cfg.batch_size)]
    return Validation(dataset, batches, VLACollator(pad_token_id=train.tokenizer.pad_token_id))


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no gradients, and the random number generators restored afterwards, so that a validation
    pass changes nothing the training then sees (dropout, the head's input noise)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def validation_metrics(run: Run, validation: Validation) -> dict[str, float]:
    """Mean L1 action loss (and its side metrics) over the validation batches, averaged over ranks; the pass
    stops after the batch that takes it past --val_time_limit seconds on any rank."""
    state, env, cfg = run.state, run.env, run.cfg
    loader = DataLoader(
        validation.dataset,
        batch_sampler=validation.batches,
        collate_fn=validation.collate,
        num_workers=cfg.num_workers,
    )
    action_loss = ActionLoss(state.autocast)
    total = torch.zeros((), device=env.device)
    start = time.perf_counter()
    with evaluation_mode(state.model, env.device):
        for batch in loader:
            total += action_loss(state.model, setup.to_device(batch, env.device)).float()
            late = torch.tensor(float(time.perf_counter() - start > cfg.val_time_limit), device=env.device)
            if mean_over_ranks(late) > 0:
                break
    side = action_loss.means()
    names = sorted(side)
    values = mean_over_ranks(torch.stack([total / action_loss.count, *[side[k] for k in names]])).tolist()
    metrics = {"val/loss": values[0], **{f"val/{k}": v for k, v in zip(names, values[1:])}}
    return {**metrics, "val/num_batches": action_loss.count, "val/seconds": time.perf_counter() - start}
