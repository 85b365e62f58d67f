"""Model capture: fx tracing, NNCF-style scope names, scope matching and .dot dumps."""
