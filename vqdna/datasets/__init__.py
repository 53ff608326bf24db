"""Prepare a benchmark dataset (the prepare_dataset rule): GUE CSVs, genome tiles, species."""
