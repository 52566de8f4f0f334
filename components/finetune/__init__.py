"""Finetune: train a sequence-classification head (and the encoder) on the tokenized splits."""
