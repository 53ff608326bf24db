"""VQDNA: learned vector-quantized DNA tokenizers, MLM pretraining and LoRA fine-tuning."""

__version__ = "0.1.0"


class VqdnaError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""
