"""Federated LoRA across institutions on Flower (kofin fedlora): adapters travel, client data never does."""
