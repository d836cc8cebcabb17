"""Training stages: supervised warm-up (`sft`) and online RL (`rl`)."""

CHECKPOINT_FOLDER = "checkpoints"
"""Where SFT and RL keep the checkpoints they resume from (weights and optimizer state), inside their run folder;
the model to use is in `final`."""
