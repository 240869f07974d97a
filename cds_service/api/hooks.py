"""Router placeholder: filled in by the hooks work."""

from fastapi import APIRouter

router = APIRouter()
