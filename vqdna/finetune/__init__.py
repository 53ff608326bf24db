"""Stage 3: LoRA fine-tuning of a pretrained encoder on a benchmark dataset (workflow/rules/finetune.smk)."""
