"""The renderer contract (what a plugin must and may offer) and plugin discovery through entry points."""
