"""Small real models and real data (scikit-learn's bundled digits) for demos, tests and benchmarks."""
