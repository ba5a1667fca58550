"""Dataset analysis (the QUESTS paper's Fig. 3 and Methods): the overlap of datasets with each
other and the novelty of each generation of an active-learning campaign against the generations
before it, on any number of ranks. See ``docs/datasets.md``."""
