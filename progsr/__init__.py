"""progsr: progressive-GAN super-resolution (x2/x4/x8 from one generator)."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import progsr` stays cheap for the CLI and tools.
    if name == "Upscaler":
        from progsr.inference import Upscaler

        return Upscaler
    raise AttributeError(name)
