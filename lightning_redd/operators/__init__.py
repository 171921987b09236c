"""Forward operators y = A(x) + noise.

Contracts in :mod:`~lightning_redd.operators.base`; one module per family: ``denoising``,
``inpainting`` (mask sources in ``masks``), ``super_resolution``, ``blur`` (kernels in
``kernels``, FFT maths in ``fft_conv``), ``colorization``, ``compressed_sensing``, ``composed``,
``phase_retrieval``, ``hdr``, ``jpeg``, ``quantization``, ``nonlinear_blur``. Every task by name:
:data:`lightning_redd.operators.registry.OPERATORS` / ``build_operator``.
"""
