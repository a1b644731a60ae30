"""Datasets with stable sample ids and random access.

ids (sample ids), tfrecord + example_proto + tfds_features (the TFDS on-disk format without
TensorFlow), rlds (reader), rlds_writer, normalize + statistics + transforms (BOUNDS_Q99 and the
per-dataset standardisation), image, prompt + tokenizers, chunks, dataset + collate + sampler
(the torch side). Import the submodules directly; this package imports nothing, so the reader
and writer work without torch.
"""
