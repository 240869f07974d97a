"""Router placeholder: filled in by the viewer work."""

from fastapi import APIRouter

router = APIRouter()
