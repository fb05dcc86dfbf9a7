"""Examples (loaders, synthetic corpus, splits), features, and domain similarity."""
