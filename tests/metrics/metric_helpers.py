"""A cheap stand-in feature extractor for the dataset-level metric tests."""
import torch


class Projection:
    """Stand-in extractor: 4x4 average pooling and a fixed random projection to 8 dims."""

    dim, kind = 8, "projection"

    def __init__(self, tag="a"):
        self.fingerprint, self.calls = f"projection:{tag}", 0
        self.w = torch.randn(48, self.dim, generator=torch.Generator().manual_seed(0))

    def __call__(self, x):
        self.calls += 1
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1) @ self.w
