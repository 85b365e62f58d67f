"""Workers: the job runner (plain functions); Celery tasks will call it."""
