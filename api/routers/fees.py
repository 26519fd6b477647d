from fastapi import APIRouter

router = APIRouter(prefix="/v0/fees", tags=["fees"])
