"""Router placeholder: filled in by the ecgs work."""

from fastapi import APIRouter

router = APIRouter()
