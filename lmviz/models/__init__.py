"""The three models, their checkpoints and the device they run on."""
