"""Efficient-scaling methods (growth, sparsity, supernets, proxies); torch only."""
