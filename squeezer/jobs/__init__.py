"""Jobs as a state machine (`transitions`), shared by the API and the workers; no torch here."""
