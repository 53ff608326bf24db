"""Stage 2: the VQDNA encoder (a Hugging Face model) and its masked-code pretraining (workflow/rules/pretrain.smk)."""
