"""Training stages: supervised warm-up (`sft`) and online RL (`rl`)."""
