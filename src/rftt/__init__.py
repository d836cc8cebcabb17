"""rftt: reinforced fine-tuning for reasoning (RFTT and ReFT) on any Hugging Face causal LM."""

__version__ = "0.1.0"
