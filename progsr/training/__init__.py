"""Training: config and presets (config.py), whole-image pyramids and crops (data.py), the loss steps (steps.py),
checkpoints and logs (checkpoints.py), and the loop in one function (loop.py). The CLI is progsr/train.py."""
