"""Prepared benchmark datasets (workflow/rules/datasets.smk): GUE CSVs, genome tiles and species samples -> {train,dev,test}.parquet."""
