from fastapi import APIRouter

router = APIRouter(prefix="/v0/features", tags=["features"])
