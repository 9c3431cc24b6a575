"""How the shipped models are made: corpus, tokenizers, objectives, training, evaluation."""
