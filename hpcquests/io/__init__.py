"""Input and output: structure files, the descriptor store, atomic writes."""
