"""Audio: `io` reads recordings on the host (numpy, one clear error per bad file); `frontends` turns
waveforms into the encoders' spectrograms (jitted, batched JAX). SAMPLE_RATE is the rate both use."""

SAMPLE_RATE = 16000
