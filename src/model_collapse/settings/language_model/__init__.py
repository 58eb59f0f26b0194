"""Causal language models trained from scratch (the paper's §2.1, TinyStories).

Built so far: the real corpora (``corpus``), the 8,000-token byte-level BPE tokenizer (``tokenizer``),
the paper's model presets (``models``), token corpora and sequence packing (``packing``), the
pretraining loop (``training``) and KV-cache sampling (``sampling``). The setting that plugs them into
the chain is still to come (issue "Language models").
"""
