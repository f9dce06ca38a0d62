"""Protection: disclosure control, noise (OpenDP only) and ciphertexts (TenSEAL only)."""
