"""Training: config and presets (config.py), whole-image pyramids and crops (data.py), the loss steps (steps.py),
checkpoints and logs (checkpoints.py), what a run writes (writer.py) and the loop as named steps (loop.py).
The CLI is progsr/train.py."""
