"""Persistence: SQLAlchemy tables, sessions and repositories."""

from cds_service.storage.base import Base, make_engine, make_session_factory

__all__ = ["Base", "make_engine", "make_session_factory"]
