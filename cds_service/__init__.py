"""The CDS Hooks service: FastAPI app, hooks, FHIR I/O, jobs, storage, audit, auth."""
