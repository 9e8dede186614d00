"""Teacher (text encoder) configs for acula_jax.text.precompute."""
