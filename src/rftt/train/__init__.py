"""Training stages: supervised warm-up (`sft`) and online RL (`rl`)."""

from pathlib import Path

from rftt.config import ConfigError

CHECKPOINT_FOLDER = "checkpoints"
"""Where SFT and RL keep the checkpoints they resume from (weights and optimizer state), inside their run folder."""
FINAL_FOLDER = "final"
"""Where they save the trained model, the one later stages use."""


def check_resumable(output: Path, has_checkpoint: bool) -> None:
    """Refuse to resume a finished run that kept no checkpoint (the demo deletes a finished stage's): it would
    train again from the start and overwrite its `final`."""
    if (output / FINAL_FOLDER).exists() and not has_checkpoint:
        raise ConfigError(f"{output}: a finished run with no checkpoint to resume from (its model is in "
                          f"{output / FINAL_FOLDER}); to train again, choose another output folder")
