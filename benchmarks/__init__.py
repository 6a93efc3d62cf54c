"""Benchmarks for jaxformer: a small timing/reporting harness plus one module per benchmark."""
