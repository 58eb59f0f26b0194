"""Causal language models trained from scratch (the paper's §2.1, TinyStories).

Modules: the real corpora (``corpus``), the 8,000-token byte-level BPE tokenizer (``tokenizer``),
the paper's model presets (``models``), token corpora and sequence packing (``packing``), the
pretraining loop (``training``), KV-cache sampling (``sampling``), diversity metrics (``diversity``),
the loss (``loss``) and the setting that plugs them into the chain (``setting``).
"""
