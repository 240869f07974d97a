"""What a running service holds: settings, storage, job pipeline, classifier.

Placeholder until the jobs/storage work lands; ``Runtime.start`` is called once per process
by the app lifespan and ``stop`` on shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.settings import Settings


@dataclass
class Runtime:
    settings: Settings

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        return cls(settings=settings)

    def stop(self) -> None:
        pass
