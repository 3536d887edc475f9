"""The tokenizer trainer's images: which datasets make its training and held-out sets, and
the order its batches come in.

Out of `training/train_tokenizer.py` to keep that file to the recipe itself. The order is
a function of (seed, step) alone, which is what makes a resumed run see exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from training.image_folder import ImageFolderDataset
from worlds.image_sets import PhotoCrops, SyntheticRenders
from worlds.openmoji import OpenMojiDataset

if TYPE_CHECKING:
    from training.train_tokenizer import TokenizerTrainConfig


def build_dataset(args: TokenizerTrainConfig, image_size: int, split: str) -> Dataset:
    """The trainer's `split` ("train" or "heldout"): OpenMoji's or a folder's images, and for
    training also the --extra-data folders, --renders and --photos its flags ask for."""
    if args.data == "openmoji":
        dataset = OpenMojiDataset(split, image_size, args.heldout_percent)
    else:
        dataset = ImageFolderDataset(args.data, image_size)
    if split != "train":
        return dataset
    extra = [ImageFolderDataset(folder, image_size) for folder in args.extra_data]
    if args.renders:
        extra.append(SyntheticRenders(args.renders, image_size, seed=args.seed))
    if args.photos:
        extra.append(PhotoCrops("train", args.photos, image_size, seed=args.seed))
    return ConcatDataset([dataset, *extra]) if extra else dataset


class ResumableBatchSampler(Sampler):
    """Endless shuffled batches whose order is a function of (seed, step): resuming at step s
    yields exactly the batches an uninterrupted run would have seen from step s on."""

    def __init__(self, dataset_size: int, batch_size: int, seed: int, start_step: int,
                 process_index: int = 0, num_processes: int = 1):
        if dataset_size < batch_size * num_processes:
            raise ValueError(
                f"the dataset has {dataset_size} images, fewer than one global batch "
                f"({batch_size} x {num_processes} processes); lower --batch-size"
            )
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.process_index = process_index
        self.num_processes = num_processes

    def __iter__(self):
        global_batch = self.batch_size * self.num_processes
        batches_per_epoch = self.dataset_size // global_batch
        step = self.start_step
        while True:
            epoch, position = divmod(step, batches_per_epoch)
            order = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed + epoch))
            start = position * global_batch + self.process_index * self.batch_size
            yield order[start:start + self.batch_size].tolist()
            step += 1
