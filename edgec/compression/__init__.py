"""Compressing the PyTorch model: structural surgery (heads, neurons, layers, hidden size) and the one training
loop that fine-tunes and distils."""
