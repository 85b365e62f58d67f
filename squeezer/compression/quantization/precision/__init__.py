"""Mixed-precision initialization of weight quantizers: HAWQ (Hessian-trace sensitivity + bit assignment)."""
