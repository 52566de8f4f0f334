"""Tokenize: text to token ids with the base model's tokenizer, unpadded."""
