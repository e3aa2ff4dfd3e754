"""Parts both model families use: backbones with FPNs, GroupNorm."""
