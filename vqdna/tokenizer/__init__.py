"""Stage 1: the learned DNA tokenizers (VQ-VAE, HRQ), the baselines beside them, and token files (rules in workflow/rules/tokenizer.smk)."""
