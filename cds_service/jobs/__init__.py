"""Background jobs: one Celery app (:mod:`.celery_app`), task bodies (:mod:`.work`), dispatch.

The same task bodies run in both modes; ``jobs.mode`` in the settings only picks the
transport (an in-process thread pool, or a broker and ``ecg-cds worker`` processes).
"""
