"""Router placeholder: filled in by the audit work."""

from fastapi import APIRouter

router = APIRouter()
