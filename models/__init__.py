"""One module per model family; each is plain PyTorch with the paper's equations beside the code."""
