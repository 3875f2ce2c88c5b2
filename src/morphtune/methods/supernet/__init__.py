"""Weight-sharing supernets (METHODS §5): filled by the later supernet / subnet-search issue."""
