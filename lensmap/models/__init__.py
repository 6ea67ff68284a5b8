"""Model loading, the zoo and the per-architecture adapters."""
