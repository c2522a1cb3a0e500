"""Tools on top of the library: the command line (cli.py, `python -m apq_torch`), the demo,
perplexity evaluation, loaders of the real model and of a tiny random Llama, and benchmark
helpers. Nothing below apq_torch.tools imports from here."""
