"""Workload generator and benchmarks."""
