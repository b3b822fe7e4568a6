"""asv benchmarks of hmnumba; see common.py for the standard problem and profiles."""
