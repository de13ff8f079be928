"""The core: data contracts, hook specs, the registry, plugin loading and parameter binding."""
