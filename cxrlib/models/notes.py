"""A paragraph on each network preset (``cxrlib.models.PRESET_NOTES``): prose for a notebook cell or a help text
to print, kept out of the networks' files. No notebook prints it today; ``tests/test_models.py`` checks that every
network preset has its paragraph."""

PRESET_NOTES: dict[str, str] = {
    "original": (
        "The original project's networks, rebuilt layer for layer from its Keras code. The generator maps a "
        "256-number latent vector through a dense layer to a 4×4×1024 block, then doubles the resolution seven "
        "times (UpSampling2D + a large 7×7/5×5/3×3 convolution + BatchNorm + LeakyReLU + Dropout 0.1) up to "
        "512×512. The discriminator is five stride-2 5×5 convolutions (32→512 filters, Dropout 0.3), a dense "
        "layer of 128 and one output. It is big (tens of millions of parameters at 512 px) and slow, its "
        "large kernels spend most of the compute at high resolution, and it has no skip connections even "
        "though the README mentions them: build it with skips=True to add them. Smaller sizes keep the last "
        "(finest) generator blocks and the first discriminator blocks."
    ),
    "dcgan": (
        "Radford, Metz & Chintala (2015), the architecture that first made GANs train reliably: the generator "
        "is a stack of 4×4 stride-2 transposed convolutions with BatchNorm and ReLU (tanh at the end), the "
        "discriminator a mirror image of stride-2 convolutions with BatchNorm and LeakyReLU 0.2, all weights "
        "drawn from N(0, 0.02). At 64 px: latent 100, 64 feature maps at the finest layer, doubling toward "
        "4×4. It is small, fast and a good baseline, but it has no tricks for stability: watch for mode "
        "collapse and checkerboard patterns from the transposed convolutions."
    ),
    "course": (
        "Our recipe, and the default. The generator keeps the original project's idea (upsample, then convolve: no "
        "checkerboard artefacts) with two 3×3 convolutions per resolution and He-initialised weights, so "
        "signals keep their scale without a normalisation layer. Channels grow toward coarse resolutions "
        "(16 at full size, doubling each halving, capped at 512), so it is cheap at high resolution. The "
        "discriminator mirrors it and has a minibatch-standard-deviation channel before its last block (D can "
        "see when a batch lacks variety, which fights mode collapse). EMA of G, R1 (which keeps D smooth "
        "near the real images) and DiffAugment are added by the trainer. BatchNorm in G, a skip output at "
        "every resolution and spectral norm in D are each one keyword away (norm='batch', skips=True, "
        "spectral_norm=True): on a 2-core CPU each of them cost more quality per minute than it gave, so "
        "the course leaves them out by default."
    ),
    "style": (
        "The style-based generator of StyleGAN/StyleGAN2 (Karras et al. 2019, 2020) with the course "
        "discriminator (spectral norm on, as the shipped style generator was trained). A mapping network "
        "(4 fully connected layers, learning 10× slower) turns z into a "
        "style vector w; synthesis starts from a learned 4×4 constant, and every convolution is modulated by "
        "its own copy of w (per-channel scales, then demodulated to unit variance), with per-pixel noise of a "
        "learned strength after it and a to-image output at every resolution. Separate styles per layer allow "
        "style mixing (coarse anatomy from one w, fine texture from another) and a running mean of w the "
        "truncation trick. Trained with the course recipe plus style-mixing regularisation."
    ),
    "modern": (
        "The course networks trained with the modern recipe (Huang et al. 2025, R3GAN, at our scale): the "
        "relativistic pairing loss with R1 and R2 penalties, no label tricks, EMA of G, Adam with beta1 = 0. The "
        "paper's claim is that a well-posed loss makes the bag of tricks unnecessary; notebook 10 tests it."
    ),
}
