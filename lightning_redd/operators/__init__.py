"""Forward operators y = A(x) + noise."""
