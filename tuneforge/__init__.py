"""TuneForge: self-hosted fine-tuning with OCI Generative AI custom-model semantics."""

__version__ = "0.1.0"
