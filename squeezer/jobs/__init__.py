"""Jobs, shared by the API, the workers and the SDK; no torch here. `status`, `exports` and `result`
(a job's states, the files it exports, what it reports) need neither SQLAlchemy nor the API, so the SDK
and the sandboxed job process import them; `transitions` and `searches` change the rows."""
