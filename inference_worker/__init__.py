"""Inference workers: consume chat requests, stream from Ollama, publish token chunks."""
