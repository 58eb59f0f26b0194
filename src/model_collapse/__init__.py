"""model-collapse: chains of generative models fitted on real and synthetic data, under any data regime."""

__version__ = "0.1.0"
