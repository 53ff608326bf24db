"""Scoring beside fine-tuning: the bag-of-k-mers floor (kmer_baseline.smk) and linear probes on frozen features (probe.smk)."""
